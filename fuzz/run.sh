#!/usr/bin/env bash
# Fuzzes the exposition parser with libFuzzer (cargo-fuzz, nightly toolchain):
#   fuzz/run.sh [RUNS]      # default 10,000,000 executions
# The corpus is seeded from the fixtures (tests/testdata/*.prom) and the
# exposition corpus (tests/data/exposition/*.prom); it grows in
# fuzz/corpus/parse (not committed). A crash is written to fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-10000000}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
mkdir -p corpus/parse
cp ../tests/testdata/*.prom ../tests/data/exposition/*.prom corpus/parse/
exec cargo +nightly fuzz run parse corpus/parse -- -runs="$runs" -max_len=4096 -print_final_stats=1
