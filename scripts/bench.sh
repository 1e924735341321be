#!/usr/bin/env bash
# `make bench`: builds the release imgate binary (unless IMGATE_BIN names one)
# and the harness's imgate-perf, then measures on loopback: cold admission
# latency and registry round trips behind a delay proxy, warm throughput
# against a fixed-response TLS floor server, CPU per review, and RSS.
#   scripts/bench.sh [--delay-ms 25] [--connections 16] [--duration-s 8]
#                    [--repeats 3] [--distinct 1000] [--json]
# A table goes to stdout (or JSON with --json); progress to stderr.
# Measure another build: IMGATE_BIN=/path/to/imgate scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >&2
cargo=${CARGO:-cargo}
# The registry's storage, certificates and logs go to a temporary directory;
# on a disk that discards on delete, removing 1,000 images' files takes
# minutes, on tmpfs a moment (IMGATE_PERF_TMPDIR chooses another place).
if [[ -n ${IMGATE_PERF_TMPDIR:-} ]]; then
  export TMPDIR=$IMGATE_PERF_TMPDIR
elif [[ -d /dev/shm && -w /dev/shm ]]; then
  export TMPDIR=/dev/shm
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
if [[ -z ${IMGATE_BIN:-} ]]; then
  "$cargo" build --quiet --release -p imgate --bin imgate >&2
  export IMGATE_BIN=$target/release/imgate
fi
"$cargo" build --quiet --release -p imgate-tests --bin imgate-perf >&2
exec "$target/release/imgate-perf" bench "$@"
