#!/usr/bin/env bash
# Installs what the demo and the tests need, only when it is missing, so the
# README's two commands work on a fresh Debian 12 machine with Rust.
#   docker-registry  the real CNCF Distribution registry the tests start on loopback
#   skopeo           an independent OCI client: pushes test images, checks digests
#   apache2-utils    htpasswd, for the basic-auth registry variant
#   openssl, curl    the demo's certificate checks and AdmissionReview posts
#   jq               the demo reads the webhook's AdmissionReview answers
#   softhsm2         a real PKCS#11 token for the signing-key-in-an-HSM tests
#   opensc           pkcs11-tool, which creates and reads the keys on that token
#   buildah          builds imgate's own image FROM scratch without a container
#                    engine (scripts/build-image.sh; the image scenario)
#   ShellCheck       (package shellcheck) checks the release workflows' run: scripts
#   time             GNU time (/usr/bin/time -v): the attestation scenarios
#                    measure the binary's peak memory with it
# With --with-python (make test), also:
#   .venv/           a project virtualenv (python3 -m venv; Debian's pip refuses
#                    to install into the system Python, PEP 668), holding
#     kubernetes-validate (PyPI)  offline schema validation of deploy/
#     cel-python (PyPI)           evaluates deploy/'s ValidatingAdmissionPolicy CEL
#     pynacl, cryptography (PyPI) an independent reader of imgate's encrypted key files
#     sigstore 4.x (PyPI)         sigstore-python, the independent verifier of the
#                                 bundles `imgate sign` makes keylessly
#     check-jsonschema (PyPI)     the release workflows against its vendored GitHub
#                                 workflow schema (offline)
#     cyclonedx-python-lib (PyPI) the release SBOM against the CycloneDX schema it ships
#     in-toto-attestation (PyPI)  the release provenance, parsed by in-toto's own
#                                 SLSA provenance v1 definitions
#   nodejs, npm      run sigstore-js (tests/interop/sigstore-js: @sigstore/verify,
#                    pinned in its package-lock.json, installed with npm ci), an
#                    independent verifier of imgate's attestation bundles
#   kubectl          renders deploy/ (kustomize); only the deploy tests need it,
#                    so a missing or too old one is reported, not fatal here.
# The tests find the virtualenv through IMGATE_PYTHON (the Makefile sets it to
# .venv/bin/python). Set IMGATE_VENV to put the virtualenv elsewhere.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${IMGATE_VENV:-$ROOT/.venv}
KUBECTL_MIN_MINOR=27

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
apt_updated=
apt_install() {
  echo "installing with apt: $*" >&2
  if [[ -z $apt_updated ]]; then
    "${sudo_cmd[@]}" apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_apt=()
for pair in docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils \
            openssl:openssl curl:curl jq:jq softhsm2-util:softhsm2 pkcs11-tool:opensc; do
  cmd=${pair%%:*} pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# `time` is also a shell keyword: look for GNU time's binary itself.
[[ -x /usr/bin/time ]] || need_apt+=(time)
if ((${#need_apt[@]})); then
  apt_install "${need_apt[@]}"
fi

# imgate's own image and release (scripts/build-image.sh; the image and
# release scenarios): buildah builds the image FROM scratch with vfs storage
# and chroot isolation, no daemon and no container engine; shellcheck reads
# the release workflows' scripts.
need_apt=()
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
if ((${#need_apt[@]})); then
  apt_install "${need_apt[@]}"
fi

[[ ${1:-} == --with-python ]] || exit 0

# The virtualenv. Debian ships venv's ensurepip in python3-venv.
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
  fi
  echo "creating the virtualenv $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
need_pip=()
"$VENV/bin/python" -c 'import kubernetes_validate' 2>/dev/null || need_pip+=(kubernetes-validate)
"$VENV/bin/python" -c 'import celpy' 2>/dev/null || need_pip+=(cel-python)
"$VENV/bin/python" -c 'import nacl' 2>/dev/null || need_pip+=(pynacl)
"$VENV/bin/python" -c 'import cryptography' 2>/dev/null || need_pip+=(cryptography)
# 4.x: client trust configurations (--trust-config) and Rekor v2 entries.
"$VENV/bin/python" -c 'import sigstore, sys; sys.exit(int(sigstore.__version__.split(".")[0]) < 4)' \
  2>/dev/null || need_pip+=('sigstore>=4,<5')
# The release workflows and predicates (tests/tests/scenarios/release.rs).
"$VENV/bin/python" -c 'import check_jsonschema' 2>/dev/null || need_pip+=(check-jsonschema)
"$VENV/bin/python" -c 'import cyclonedx.validation.json, jsonschema' 2>/dev/null ||
  need_pip+=('cyclonedx-python-lib[json-validation]')
"$VENV/bin/python" -c 'import in_toto_attestation' 2>/dev/null || need_pip+=(in-toto-attestation)
if ((${#need_pip[@]})); then
  echo "installing into $VENV with pip: ${need_pip[*]}" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
fi

# sigstore-js for the attestation interop tests: Debian 12's nodejs (18.19)
# is new enough for @sigstore/verify 2.x.
need_node=()
command -v node >/dev/null 2>&1 || need_node+=(nodejs)
command -v npm >/dev/null 2>&1 || need_node+=(npm)
if ((${#need_node[@]})); then
  apt_install "${need_node[@]}"
fi
SIGSTORE_JS=$ROOT/tests/interop/sigstore-js
if [[ ! -d $SIGSTORE_JS/node_modules/@sigstore/verify ]]; then
  echo "installing sigstore-js into $SIGSTORE_JS with npm ci" >&2
  (cd "$SIGSTORE_JS" && npm ci --no-audit --no-fund --silent)
fi

# kubectl: Debian's package if there is none. Debian 12's kubernetes-client
# is 1.20, too old for kustomize components; then the deploy tests fail and
# say so, and everything else still runs.
kubectl_minor() {
  kubectl version --client -o json 2>/dev/null |
    sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n 1
}
if ! command -v kubectl >/dev/null 2>&1; then
  for pkg in kubectl kubernetes-client; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      apt_install "$pkg" || true
      command -v kubectl >/dev/null 2>&1 && break
    fi
  done
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "warning: kubectl is missing: the deploy tests (render deploy/ with 'kubectl kustomize')" >&2
  echo "         will fail. Install kubectl 1.$KUBECTL_MIN_MINOR or newer." >&2
elif minor=$(kubectl_minor) && [[ -n $minor ]] && ((minor < KUBECTL_MIN_MINOR)); then
  echo "warning: kubectl 1.$minor is too old for deploy/ (kustomize components): the deploy" >&2
  echo "         tests will fail. Install kubectl 1.$KUBECTL_MIN_MINOR or newer." >&2
fi
