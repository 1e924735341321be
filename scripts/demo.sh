#!/usr/bin/env bash
# The end-to-end demo: a local registry, an image pushed to it, then what
# imgate does at build time (resolve, pin, keys, sign, verify) and in the
# cluster (the admission webhook answering real AdmissionReviews).
# Everything runs on loopback in ./.demo and is cleaned up on exit. Needs
# what scripts/install-deps.sh installs without --with-python: no Python, no
# kubectl.
set -euo pipefail

IMGATE=$(realpath "${1:-target/release/imgate}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/.demo"
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# A loopback port nothing listens on: bash's /dev/tcp gets a refused connection.
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
  done
  echo "no free loopback port found" >&2; return 1
}
wait_http() { for _ in $(seq 100); do curl -ksf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

step "Start a local registry (Debian's docker-registry, the CNCF Distribution registry)"
REG_PORT=$(free_port); REG="127.0.0.1:$REG_PORT"
cat > registry.yml <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry-data}, delete: {enabled: true}}
http: {addr: $REG}
YML
docker-registry serve registry.yml > registry.log 2>&1 & pids+=($!)
wait_http "http://$REG/v2/"
echo "registry at http://$REG"

# A tiny OCI image made from bytes, pushed with skopeo (no container engine needed).
make_image() { # DIR MESSAGE
  local dir=$1 msg=$2 blobs=$1/blobs/sha256
  mkdir -p "$blobs" "$dir/rootfs"
  echo "$msg" > "$dir/rootfs/hello.txt"
  tar -C "$dir/rootfs" --sort=name --mtime=@0 --owner=0 --group=0 -cf - hello.txt | gzip -n > "$dir/layer"
  local diff_id; diff_id=$(gzip -dc "$dir/layer" | sha256sum | cut -d' ' -f1)
  local layer; layer=$(sha256sum "$dir/layer" | cut -d' ' -f1); mv "$dir/layer" "$blobs/$layer"
  printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/hello"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff_id" > "$dir/config"
  local config; config=$(sha256sum "$dir/config" | cut -d' ' -f1); mv "$dir/config" "$blobs/$config"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
    "$config" "$(stat -c %s "$blobs/$config")" "$layer" "$(stat -c %s "$blobs/$layer")" > "$dir/manifest"
  local manifest; manifest=$(sha256sum "$dir/manifest" | cut -d' ' -f1)
  local size; size=$(stat -c %s "$dir/manifest"); mv "$dir/manifest" "$blobs/$manifest"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$manifest" "$size" > "$dir/index.json"
}

step "Push two images: demo/app:v1 (we will sign it) and demo/other:v1 (we will not)"
make_image img-app "hello from app"
make_image img-other "hello from other"
skopeo copy -q --dest-tls-verify=false oci:img-app:latest "docker://$REG/demo/app:v1"
skopeo copy -q --dest-tls-verify=false oci:img-other:latest "docker://$REG/demo/other:v1"
HTTP=(--allow-http-registry "$REG")

step "imgate resolve: tag -> digest (the digest skopeo computes is the same)"
"$IMGATE" resolve "${HTTP[@]}" "$REG/demo/app:v1"
echo "skopeo:  sha256:$(skopeo inspect --raw --tls-verify=false "docker://$REG/demo/app:v1" | sha256sum | cut -d' ' -f1)"

step "imgate pin: rewrite a manifest from tags to digests (only image values change)"
cat > deployment.yaml <<YML
# The web tier. Comments, quoting and order survive pinning.
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: "$REG/demo/app:v1"   # pinned by imgate
YML
"$IMGATE" pin "${HTTP[@]}" deployment.yaml > pinned.yaml || true
diff deployment.yaml pinned.yaml || true
"$IMGATE" pin --check "${HTTP[@]}" pinned.yaml && echo "pinned.yaml: every image pinned"

step "imgate keys generate (cosign-compatible key pair)"
export IMGATE_PASSWORD=demo-password
"$IMGATE" keys generate --output-prefix ci
ls -l ci.key ci.pub

step "imgate sign: sign the pushed digest; prints the pinned reference for CI"
SIGNED=$("$IMGATE" sign "${HTTP[@]}" --key ci.key --annotation env=demo "$REG/demo/app:v1")
echo "$SIGNED"

step "imgate verify: the signed image passes"
"$IMGATE" verify "${HTTP[@]}" --key ci.pub --annotation env=demo "$REG/demo/app:v1"

step "imgate verify: tampered cases fail, each with its reason"
"$IMGATE" keys generate --output-prefix attacker >/dev/null
set +e
"$IMGATE" verify "${HTTP[@]}" --key attacker.pub "$REG/demo/app:v1"; echo "exit $? (wrong key)"
"$IMGATE" verify "${HTTP[@]}" --key ci.pub --annotation env=prod "$REG/demo/app:v1"; echo "exit $? (annotation differs)"
"$IMGATE" verify "${HTTP[@]}" --key ci.pub "$REG/demo/other:v1"; echo "exit $? (unsigned image)"
set -e

step "The admission webhook: certificates, policy, server"
"$IMGATE" webhook certs --out-dir certs --service imgate --namespace imgate-system
cat > policy.yaml <<YML
mode: enforce
pinDigests: pods
onRegistryError: deny
namespaces: {exclude: [kube-system, imgate-system]}
trustedRegistries: ["$REG/demo/**"]
registries: {"$REG": {http: true}}
rules:
  - name: ours
    images: ["$REG/demo/**"]
    keys: [{file: $WORK/ci.pub}]
    annotations: {env: demo}
YML
"$IMGATE" policy check policy.yaml
HOOK_PORT=$(free_port); METRICS_PORT=$(free_port)
"$IMGATE" --log-format json webhook --policy policy.yaml --tls-cert certs/tls.crt --tls-key certs/tls.key \
  --listen "127.0.0.1:$HOOK_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" > webhook.log 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$METRICS_PORT/readyz"
echo "webhook ready on https://127.0.0.1:$HOOK_PORT"

review() { # KIND NAME IMAGE: an AdmissionReview as the API server sends it
  jq -n --arg kind "$1" --arg name "$2" --arg image "$3" --arg uid "$(cat /proc/sys/kernel/random/uuid)" '
    {containers: [{name: $name, image: $image}]} as $pod
    | (if $kind == "Pod" then
         {group: "", resource: "pods",
          object: {apiVersion: "v1", kind: "Pod", metadata: {name: $name, namespace: "shop"}, spec: $pod}}
       else
         {group: "apps", resource: "deployments",
          object: {apiVersion: "apps/v1", kind: "Deployment", metadata: {name: $name, namespace: "shop"},
                   spec: {selector: {matchLabels: {app: $name}},
                          template: {metadata: {labels: {app: $name}}, spec: $pod}}}}
       end) as $r
    | {apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: {
        uid: $uid, kind: {group: $r.group, version: "v1", kind: $kind},
        resource: {group: $r.group, version: "v1", resource: $r.resource}, name: $name, namespace: "shop",
        operation: "CREATE", userInfo: {username: "demo"}, object: $r.object, dryRun: false}}'
}
show() { # summarise an AdmissionReview response
  jq -r '.response
    | "allowed: \(.allowed)",
      (.status.message // empty | "reason:  \(.)"),
      (.patch // empty | "patch:   \(@base64d)"),
      ((.warnings // [])[] | "warning: \(.)")'
}
post() { curl -sS --cacert certs/ca.crt --resolve "imgate.imgate-system.svc:$HOOK_PORT:127.0.0.1" \
  -H 'Content-Type: application/json' --data-binary @- "https://imgate.imgate-system.svc:$HOOK_PORT/$1"; }

step "Admission: signed Pod -> allowed, tag rewritten to the verified digest"
review Pod web "$REG/demo/app:v1" | post mutate | show
step "Admission: signed Deployment -> allowed; template verified, left as written (pinDigests: pods)"
review Deployment web "$REG/demo/app:v1" | post mutate | show
step "Admission: unsigned Pod -> denied"
review Pod other "$REG/demo/other:v1" | post mutate | show
step "Admission: unsigned Deployment -> denied"
review Deployment other "$REG/demo/other:v1" | post mutate | show
step "Admission: image from an untrusted registry -> denied before any registry call"
review Pod evil "docker.io/library/nginx:1.27" | post mutate | show

step "Decision log (one JSON line per review)"
grep -h "admission decision" webhook.log | tail -n 2 || true
printf '\ndemo finished: pinned and signed reference %s\n' "$SIGNED"
