#!/usr/bin/env bash
# Builds imgate's container image FROM scratch with buildah (no container
# engine, no daemon) and pushes it; prints the pushed reference pinned by
# its digest (REGISTRY/REPO:TAG@sha256:...) on stdout, for `imgate sign`.
#
#   scripts/build-image.sh [OPTIONS] REGISTRY/REPO:TAG      (or: make image IMAGE=...)
#
#   --binary FILE        ship this static binary (default: build it with
#                        scripts/build-static.sh)
#   --tls-verify=false   push over plain HTTP, or to an unverified TLS registry
#   --cert-dir DIR       trust the CA certificates (*.crt) in DIR for the push
#   --authfile FILE      registry credentials (docker config.json format;
#                        default: buildah's, e.g. after `buildah login`)
#   --digest-file FILE   also write the pushed digest to FILE
#
# The image: the root filesystem of scripts/image/rootfs.sh (the one the
# Dockerfile's final stage ships too), user 65532:65532, ENTRYPOINT
# ["/imgate"], CMD ["webhook"], ports 8443 and 9090, the OCI labels below.
# Label values come from Cargo.toml and git, or from IMGATE_VERSION,
# IMGATE_REVISION and IMGATE_SOURCE. The image's timestamps are the
# revision's commit time (SOURCE_DATE_EPOCH overrides it), so the same
# binary gives the same digest.
#
# buildah runs with rootless-style settings: vfs storage (no overlay mounts)
# and chroot isolation, in a temporary storage directory removed at the end;
# nothing is left in the machine's container storage.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

binary='' digest_file=''
push_flags=()
while (($#)); do
  case $1 in
    --binary) binary=${2:?--binary needs a file}; shift 2 ;;
    --tls-verify=*) push_flags+=("$1"); shift ;;
    --cert-dir) push_flags+=(--cert-dir "${2:?--cert-dir needs a directory}"); shift 2 ;;
    --authfile) push_flags+=(--authfile "${2:?--authfile needs a file}"); shift 2 ;;
    --digest-file) digest_file=${2:?--digest-file needs a file}; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
(($# == 1)) || usage
image=$1
case $image in
  */*@*) echo "$0: $image: push by tag (REGISTRY/REPO:TAG), the digest is the result" >&2; exit 2 ;;
  */*:*) ;;
  *) echo "$0: $image: name the registry, repository and tag (REGISTRY/REPO:TAG)" >&2; exit 2 ;;
esac
command -v buildah >/dev/null || { echo "$0: buildah is missing: scripts/install-deps.sh installs it" >&2; exit 2; }

if [[ -z $binary ]]; then
  binary=$("$ROOT/scripts/build-static.sh")
fi
if ! ldd "$binary" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; then
  echo "$0: $binary is not statically linked (see scripts/build-static.sh)" >&2
  exit 2
fi
case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "$0: unsupported machine $(uname -m) (amd64, arm64)" >&2; exit 2 ;;
esac

# The labels: what the image is, where its source is, which commit.
workspace_field() {
  sed -n '/^\[workspace\.package\]/,/^\[/{s/^'"$1"' *= *"\(.*\)"$/\1/p}' "$ROOT/Cargo.toml"
}
version=${IMGATE_VERSION:-$(workspace_field version)}
source_url=${IMGATE_SOURCE:-$(workspace_field repository)}
revision=${IMGATE_REVISION:-$(git -C "$ROOT" rev-parse HEAD)}
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct "$revision")}
for v in version source_url revision epoch; do
  [[ -n ${!v} ]] || { echo "$0: cannot tell the image's $v" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/imgate-image.XXXXXX")
buildah=(buildah --storage-driver vfs --root "$tmp/storage" --runroot "$tmp/run")
export BUILDAH_ISOLATION=chroot
cleanup() {
  "${buildah[@]}" rm --all >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

"$ROOT/scripts/image/rootfs.sh" "$tmp/rootfs" "$binary"
ctr=$("${buildah[@]}" from --quiet scratch)
"${buildah[@]}" copy --quiet "$ctr" "$tmp/rootfs/" / >/dev/null
# Keep in step with the Dockerfile's final stage (the image scenario
# compares them).
"${buildah[@]}" config \
  --os linux --arch "$arch" \
  --user 65532:65532 \
  --port 8443/tcp --port 9090/tcp \
  --entrypoint '["/imgate"]' --cmd '["webhook"]' \
  --created-by "scripts/build-image.sh" \
  --label org.opencontainers.image.title=imgate \
  --label "org.opencontainers.image.description=Supply-chain gate for container images: cosign-compatible signing, verification, digest pinning and a Kubernetes admission webhook" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.source=$source_url" \
  "$ctr"
"${buildah[@]}" commit --quiet --format oci --identity-label=false \
  --timestamp "$epoch" --rm "$ctr" "$image" >/dev/null
"${buildah[@]}" push --quiet --format oci --digestfile "$tmp/digest" \
  "${push_flags[@]}" "$image" "docker://$image" >&2
digest=$(cat "$tmp/digest")
[[ -n $digest_file ]] && printf '%s\n' "$digest" > "$digest_file"
echo "$image@$digest"
