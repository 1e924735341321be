#!/bin/sh
# Writes imgate's runtime root filesystem into OUT: the one layout both image
# builds ship (scripts/build-image.sh with buildah, and the Dockerfile's
# final stage, which copies what this script wrote in its build stage), so
# the two images cannot drift apart. tests/tests/scenarios/image.rs checks
# the image against this list.
#
#   scripts/image/rootfs.sh OUT BINARY [CA_BUNDLE]
#
#   /imgate                            the static binary (0755)
#   /etc/passwd, /etc/group            root and nonroot (65532), no login shell:
#                                      the user the image runs as has a name
#   /etc/ssl/certs/ca-certificates.crt the CA bundle of the build machine
#                                      (Debian's ca-certificates), for registries
#                                      and Vault with public certificates
#   /tmp                               1777, for what writes temp files (the
#                                      deployment mounts an emptyDir there)
#
# No shell, no package manager, nothing else. POSIX sh: it runs in the
# Dockerfile's build stage too.
set -eu

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 OUT BINARY [CA_BUNDLE]" >&2
  exit 2
fi
out=$1
binary=$2
ca=${3:-/etc/ssl/certs/ca-certificates.crt}
for f in "$binary" "$ca"; do
  if [ ! -s "$f" ]; then
    echo "$0: $f is missing or empty" >&2
    exit 2
  fi
done
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "$0: $out is not empty" >&2
  exit 2
fi

umask 022
mkdir -p "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"
cp "$binary" "$out/imgate"
chmod 0755 "$out/imgate"
cp "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"
# 65532: distroless's "nonroot", which deploy/ requires (runAsUser 65532).
# No home directory: imgate keeps nothing in $HOME.
cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
