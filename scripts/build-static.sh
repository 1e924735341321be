#!/usr/bin/env bash
# Builds the static imgate binary that imgate's image ships, and prints its
# path on stdout (cargo's output goes to stderr):
#
#   scripts/build-static.sh
#
# The host target (x86_64- or aarch64-unknown-linux-gnu) with glibc linked
# statically (`-C target-feature=+crt-static`): no musl toolchain to fetch.
# Names still resolve in an empty root: glibc 2.34 and later has its `files`
# (/etc/hosts) and `dns` (/etc/resolv.conf) lookups built in, and those are
# the only ones a container has; nothing is loaded at run time. Profile
# `image` (Cargo.toml): the release profile, stripped. --locked: exactly the
# committed Cargo.lock, which the SBOM and provenance describe.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CARGO=${CARGO:-cargo}
host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
  *-linux-gnu) ;;
  *)
    echo "$0: the static build needs a *-linux-gnu host, this one is $host" >&2
    exit 2
    ;;
esac

# With an explicit --target, RUSTFLAGS apply to that target only: build
# scripts and proc macros stay ordinary host binaries.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  "$CARGO" build --manifest-path "$ROOT/Cargo.toml" --locked --profile image \
  -p imgate --target "$host" >&2

bin=${CARGO_TARGET_DIR:-$ROOT/target}/$host/image/imgate
if ! ldd "$bin" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
  echo "$0: $bin is not statically linked:" >&2
  ldd "$bin" >&2 || true
  exit 1
fi
echo "$bin"
