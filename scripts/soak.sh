#!/usr/bin/env bash
# `make soak`: runs the webhook at a steady rate for DURATION (default 60s;
# 90s, 5m, 1h) with a mix of cached, new, unsigned, untrusted and malformed
# reviews while a fault proxy in front of the registry injects latency,
# dropped connections and 503s, the serving certificate and the policy are
# rewritten; then SIGTERM. Loopback only, bounded by DURATION plus setup.
#   scripts/soak.sh [DURATION] [--rate 40] [--deadline-ms 3000] [--json]
# Exit 0 when there was no unexpected answer, RSS stayed under 256 MiB and
# the webhook exited cleanly on SIGTERM; 1 otherwise; 2 when it could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=60s
if [[ $# -gt 0 && $1 != --* ]]; then
  duration=$1
  shift
fi
. ./scripts/perf-setup.sh
exec "$perf" soak --duration "$duration" "$@"
