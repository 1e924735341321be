# Sourced by bench.sh and soak.sh: installs what they need, puts temporary
# files on tmpfs, and builds the release imgate (unless IMGATE_BIN names
# one) and the harness's imgate-perf. Sets $perf to the imgate-perf binary.
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
perf=$target/release/imgate-perf
