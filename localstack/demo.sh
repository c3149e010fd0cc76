#!/usr/bin/env bash
# The README's first command: fleetscrape solving the seed's problem against a
# local AWS emulator (moto), writing data/demo.db. Installs what is missing,
# builds, then runs localstack/demo.py. Loopback only, fake credentials.
set -euo pipefail
cd "$(dirname "$0")/.."

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

if ! command -v moto_server >/dev/null 2>&1; then
  say "moto (the local AWS emulator) is missing: installing it with pip"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  hash -r
fi
if ! command -v prometheus-node-exporter >/dev/null 2>&1; then
  say "node_exporter is missing: installing Debian's prometheus-node-exporter"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter
  else
    echo "run: sudo apt-get install -y prometheus-node-exporter" >&2; exit 1
  fi
fi

say "building fleetscrape and alb-emulator (the first build compiles the AWS SDK: several minutes)"
cargo build --locked --quiet --bins
exec python3 localstack/demo.py
