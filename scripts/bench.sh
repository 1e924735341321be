#!/usr/bin/env bash
# `make bench`: builds the release imgate binary (unless IMGATE_BIN names one)
# and the harness's imgate-perf, then measures on loopback: cold admission
# latency, registry round trips and connections behind a delay proxy (over
# TLS with HTTP/2 and over plain HTTP/1.1; on a running webhook and on first
# contact; `imgate verify`), warm throughput against a fixed-response TLS
# floor server, CPU per review, and RSS.
#   scripts/bench.sh [--delay-ms 25] [--connections 16] [--duration-s 8]
#                    [--repeats 3] [--distinct 1000] [--json]
# A table goes to stdout (or JSON with --json); progress to stderr.
# Measure another build: IMGATE_BIN=/path/to/imgate scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. ./scripts/perf-setup.sh
exec "$perf" bench "$@"
