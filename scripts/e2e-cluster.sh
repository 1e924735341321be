#!/usr/bin/env bash
# End-to-end test of imgate on a real, throwaway Kubernetes cluster (kind by
# default, k3d with E2E_CLUSTER=k3d). It cannot run on machines without a
# container engine; docs/operations.md "End-to-end test on a real cluster".
#
#   scripts/e2e-cluster.sh                 # kind
#   E2E_CLUSTER=k3d scripts/e2e-cluster.sh
#   KEEP_CLUSTER=1 scripts/e2e-cluster.sh  # leave cluster and registry running
#
# Needs: docker, kind or k3d, kubectl, and cargo (or IMGATE_BIN pointing at a
# built imgate). Steps: start a registry, create the cluster, build and load
# imgate's image, generate keys and webhook certificates with imgate, apply
# the enforce overlay with an e2e policy, push two tiny images and sign one,
# then assert: the signed image's Pod is admitted and pinned to its digest,
# the unsigned one's and an untrusted registry's are refused.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster_kind=${E2E_CLUSTER:-kind}
name=${E2E_NAME:-imgate-e2e}
host_port=${E2E_REGISTRY_PORT:-5001}
work="$repo/target/e2e-cluster"
export IMGATE_PASSWORD=""   # the e2e signing key has an empty password

say() { printf '\n== %s\n' "$*" >&2; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

for tool in docker kubectl "$cluster_kind"; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

imgate=${IMGATE_BIN:-}
if [[ -z $imgate ]]; then
  say "building imgate"
  (cd "$repo" && cargo build --quiet -p imgate)
  imgate="$repo/target/debug/imgate"
fi

case "$cluster_kind" in
  kind)
    registry_container="$name-registry"
    in_cluster="$registry_container:5000"
    ;;
  k3d)
    registry_container="k3d-$name-registry"
    in_cluster="$registry_container:5000"
    ;;
  *) fail "E2E_CLUSTER must be kind or k3d, not $cluster_kind" ;;
esac
from_host="localhost:$host_port"
context=""

cleanup() {
  if [[ -n ${KEEP_CLUSTER:-} ]]; then
    say "kept: cluster $name, registry $registry_container (delete them yourself)"
    return
  fi
  say "cleaning up"
  case "$cluster_kind" in
    kind) kind delete cluster --name "$name" >/dev/null 2>&1 || true
          docker rm -f "$registry_container" >/dev/null 2>&1 || true ;;
    k3d)  k3d cluster delete "$name" >/dev/null 2>&1 || true
          k3d registry delete "$registry_container" >/dev/null 2>&1 || true ;;
  esac
}
trap cleanup EXIT

rm -rf "$work"
mkdir -p "$work"

say "registry and cluster ($cluster_kind)"
if [[ $cluster_kind == kind ]]; then
  docker run -d --restart=always -p "127.0.0.1:$host_port:5000" --name "$registry_container" registry:2 >/dev/null
  # containerd pulls plain HTTP from the registry by its in-cluster name.
  cat > "$work/kind.yaml" <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
KIND
  kind create cluster --name "$name" --config "$work/kind.yaml" --wait 120s
  docker network connect kind "$registry_container" 2>/dev/null || true
  for node in $(kind get nodes --name "$name"); do
    docker exec "$node" mkdir -p "/etc/containerd/certs.d/$in_cluster"
    printf '[host."http://%s"]\n' "$in_cluster" | docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/$in_cluster/hosts.toml"
  done
  context="kind-$name"
else
  k3d registry create "$name-registry" --port "127.0.0.1:$host_port"
  cat > "$work/registries.yaml" <<K3D
mirrors:
  "$in_cluster":
    endpoint:
      - http://$in_cluster
K3D
  k3d cluster create "$name" --registry-use "$registry_container:$host_port" \
    --registry-config "$work/registries.yaml" --wait
  context="k3d-$name"
fi
kc() { kubectl --context "$context" "$@"; }

say "imgate image"
docker build --tag imgate:e2e "$repo"
case "$cluster_kind" in
  kind) kind load docker-image imgate:e2e --name "$name" ;;
  k3d)  k3d image import imgate:e2e --cluster "$name" ;;
esac

say "test images: one to sign, one left unsigned"
for variant in signed unsigned; do
  mkdir -p "$work/img-$variant"
  echo "imgate e2e $variant $(date +%s%N)" > "$work/img-$variant/hello.txt"
  printf 'FROM scratch\nCOPY hello.txt /hello.txt\n' > "$work/img-$variant/Dockerfile"
  docker build --quiet --tag "$from_host/e2e/app:$variant" "$work/img-$variant" >/dev/null
  docker push --quiet "$from_host/e2e/app:$variant" >/dev/null
done

say "keys, certificates, overlay"
overlay="$work/overlay"
mkdir -p "$overlay/policy" "$overlay/keys"
"$imgate" keys generate --output-prefix "$overlay/keys/ci"
"$imgate" webhook certs --format kustomize --out-dir "$overlay/imgate-certs"
rel=$(realpath --relative-to="$overlay" "$repo/deploy")
cat > "$overlay/policy/policy.yaml" <<POLICY
mode: enforce
pinDigests: pods
onRegistryError: deny
namespaces:
  exclude: [kube-system, imgate-system]
trustedRegistries:
  - "$in_cluster/**"
registries:
  "$in_cluster": {http: true}
rules:
  - name: e2e
    images: ["$in_cluster/e2e/**"]
    keys: [{file: ../keys/ci.pub}]
POLICY
"$imgate" policy check "$overlay/policy/policy.yaml"
cat > "$overlay/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel/base
components:
  - imgate-certs
  - $rel/components/enforce
images:
  - name: registry.example.com/imgate/imgate
    newName: imgate
    newTag: e2e
configMapGenerator:
  - name: imgate-policy
    namespace: imgate-system
    behavior: replace
    files: [policy/policy.yaml]
    options: {disableNameSuffixHash: true}
  - name: imgate-keys
    namespace: imgate-system
    behavior: merge
    files: [keys/ci.pub]
    options: {disableNameSuffixHash: true}
patches:
  - target:
      kind: NetworkPolicy
      name: imgate
    patch: |-
      - op: add
        path: /spec/egress/-
        value:
          ports:
            - protocol: TCP
              port: 5000
KUSTOMIZATION

say "install imgate (enforce)"
kc apply -k "$overlay"
kc -n imgate-system rollout status deployment/imgate --timeout=180s

say "sign the signed image"
pinned=$("$imgate" sign --key "$overlay/keys/ci.key" --allow-http-registry "$from_host" "$from_host/e2e/app:signed")
echo "signed: $pinned"
digest=${pinned##*@}
"$imgate" verify --key "$overlay/keys/ci.pub" --allow-http-registry "$from_host" "$from_host/e2e/app:signed"

kc create namespace e2e

say "signed image: admitted and pinned"
kc -n e2e run signed --image="$in_cluster/e2e/app:signed" --restart=Never --command -- /hello.txt \
  || fail "the signed image was refused"
image=$(kc -n e2e get pod signed -o jsonpath='{.spec.containers[0].image}')
[[ $image == "$in_cluster/e2e/app:signed@$digest" ]] || fail "pod image is $image, want $in_cluster/e2e/app:signed@$digest"

say "signed image in a Deployment: admitted, template left as written"
kc -n e2e create deployment signed-deploy --image="$in_cluster/e2e/app:signed" \
  || fail "the signed Deployment was refused"
template=$(kc -n e2e get deployment signed-deploy -o jsonpath='{.spec.template.spec.containers[0].image}')
[[ $template == "$in_cluster/e2e/app:signed" ]] || fail "Deployment template rewritten to $template (pinDigests: pods)"

say "unsigned image: refused"
if out=$(kc -n e2e run unsigned --image="$in_cluster/e2e/app:unsigned" --restart=Never 2>&1); then
  fail "the unsigned image was admitted: $out"
fi
echo "$out"
grep -q "validate.imgate.dev\|mutate.imgate.dev" <<<"$out" || fail "refused, but not by imgate: $out"

say "untrusted registry: refused"
if out=$(kc -n e2e run untrusted --image=docker.io/library/busybox:1.36 --restart=Never 2>&1); then
  fail "an image from an untrusted registry was admitted: $out"
fi
echo "$out"
grep -q "trustedRegistries" <<<"$out" || fail "refused, but not for the registry: $out"

say "no per-object opt-out: a labelled unsigned pod is still refused"
if out=$(kc -n e2e run glass --image="$in_cluster/e2e/app:unsigned" --restart=Never --labels=imgate.dev/ignore=true 2>&1); then
  fail "the label imgate.dev/ignore=true let an unsigned pod past the enforce overlay: $out"
fi
echo "$out"

say "decision log"
kc -n imgate-system logs -l app.kubernetes.io/name=imgate --tail=-1 | grep '"admission decision"' | tail -n 5

say "PASS"
