#!/usr/bin/env bash
# Installs what the demo and the tests need, only when it is missing, so the
# README's two commands work on a fresh Debian machine with Rust.
#   docker-registry  the real CNCF Distribution registry the tests start on loopback
#   skopeo           an independent OCI client: pushes test images, checks digests
#   apache2-utils    htpasswd, for the basic-auth registry variant
#   openssl, curl    the demo's certificate checks and AdmissionReview posts
#   softhsm2         a real PKCS#11 token for the signing-key-in-an-HSM tests
#   opensc           pkcs11-tool, which creates and reads the keys on that token
#   kubernetes-validate (PyPI)  offline schema validation of deploy/
#   pynacl, cryptography (PyPI) an independent reader of imgate's encrypted key files
set -euo pipefail

need_apt=()
for pair in docker-registry:docker-registry skopeo:skopeo htpasswd:apache2-utils \
            openssl:openssl curl:curl softhsm2-util:softhsm2 pkcs11-tool:opensc; do
  cmd=${pair%%:*} pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "installing with apt: ${need_apt[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [[ ${1:-} == --with-python ]]; then
  need_pip=()
  command -v kubernetes-validate >/dev/null 2>&1 || need_pip+=(kubernetes-validate)
  python3 -c 'import nacl' 2>/dev/null || need_pip+=(pynacl)
  python3 -c 'import cryptography' 2>/dev/null || need_pip+=(cryptography)
  if ((${#need_pip[@]})); then
    echo "installing with pip: ${need_pip[*]}" >&2
    python3 -m pip install --quiet --disable-pip-version-check "${need_pip[@]}"
  fi
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is missing: the deploy tests render deploy/ with 'kubectl kustomize'." >&2
  echo "Install kubectl (any 1.27+) and run again." >&2
  exit 2
fi
