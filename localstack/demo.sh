#!/usr/bin/env bash
# The README's first command: the seed's topology in moto, discovered by
# fleetscrape, before and after an ASG scale-out. Everything stays on
# loopback, with fake credentials; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if ! command -v moto_server >/dev/null 2>&1; then
  say "moto (the local AWS emulator) is missing: installing it with pip"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  hash -r
fi

say "building fleetscrape (the first build compiles the AWS SDK: several minutes)"
cargo build --locked --quiet
bin=target/debug/fleetscrape
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/debug/fleetscrape"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
workdir=$(mktemp -d)
say "starting moto on 127.0.0.1:$port"
moto_server -H 127.0.0.1 -p "$port" >"$workdir/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; wait $moto_pid 2>/dev/null; rm -rf "$workdir"' EXIT INT TERM
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"

say "seeding the seed's topology: ALB listeners 9100, 9101 (Basic) and 9102 (ASG web, min 1 max 4, 50% CPU target)"
python3 localstack/seed.py >/dev/null

say "fleetscrape discover --config config/moto.example.yml"
"$bin" discover --config config/moto.example.yml

say "load test: moto never evaluates scaling policies, so the demo sets the ASG's desired capacity to 3 itself"
python3 localstack/seed.py --desired 3 >/dev/null
"$bin" discover --config config/moto.example.yml

say "scale-in back to 1: moto keeps terminated members registered and 'healthy'; fleetscrape reports their real state and will not scrape them"
python3 localstack/seed.py --desired 1 >/dev/null
"$bin" discover --config config/moto.example.yml

say "the same, as JSON for programs (first entry)"
"$bin" discover --config config/moto.example.yml --output json | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[0], indent=2))'
