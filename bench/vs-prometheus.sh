#!/usr/bin/env bash
# fleetscrape and Debian's Prometheus 2.42 side by side on the same node_exporters,
# in one run (see bench/vs_prometheus.py for what is measured and how).
# Installs what it needs, builds fleetscrape with the bench profile (optimised;
# the AWS SDK crates, which discovery runs once a minute, stay unoptimised), runs.
#   bench/vs-prometheus.sh [--targets 20] [--interval 1] [--warmup 20] [--window 120] [--quick] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=ap-northeast-2 AWS_EC2_METADATA_DISABLED=true
unset AWS_ENDPOINT_URL AWS_PROFILE AWS_SESSION_TOKEN

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
echo "building fleetscrape (bench profile; the first build takes several minutes)" >&2
cargo build --locked --profile bench --bin fleetscrape >&2
target="${CARGO_TARGET_DIR:-target}"
exec python3 bench/vs_prometheus.py --fleetscrape "$target/release/fleetscrape" "$@"
