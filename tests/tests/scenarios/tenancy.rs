//! Scenarios: what a hostile tenant tries against the gate, through the
//! real binary and the real registry.
//!
//! - Image volumes (`spec.volumes[].image.reference`) are images like any
//!   other: `imgate admit`, the webhook (deny, pin) and `imgate pin`.
//! - An answer the registry gave one namespace's pull secret never answers
//!   another namespace: the private tag's digest and signature state stay
//!   with the credential that may read them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use imgate_core::reference::ImageRef;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{sign, SignOptions};
use imgate_keys::SigningKey;
use imgate_tests::kubeapi::KubeApi;
use imgate_tests::webhook::{generate_certs, review, Webhook, WebhookOptions};
use imgate_tests::{block_on, run_imgate, ImageBuilder, PushWith, Registry, Variant};
use serde_json::{json, Value};

use crate::common::Run;

/// Pushes a distinct image as `repo:tag` and, with `key`, signs it; returns
/// `HOST/repo:tag` and its digest.
async fn push(
    registry: &Registry,
    repo: &str,
    tag: &str,
    key: Option<&SigningKey>,
) -> (String, String) {
    let pushed = ImageBuilder::new(&format!("{repo}:{tag}"))
        .image()
        .push(registry, repo, tag, PushWith::Http)
        .await
        .unwrap();
    let reference = format!("{}/{repo}:{tag}", registry.host());
    if let Some(key) = key {
        let client = RegistryClient::new(registry.client_config()).unwrap();
        let image = ImageRef::parse(&format!("{reference}@{}", pushed.digest)).unwrap();
        sign(&client, &image, key, &SignOptions::default())
            .await
            .unwrap();
    }
    (reference, pushed.digest)
}

fn policy(dir: &Path, registry: &Registry, extra: &str) -> std::path::PathBuf {
    let host = registry.host();
    let connection = match registry.ca_file() {
        Some(ca) => format!("{{caFile: {}}}", ca.display()),
        None => "{http: true}".to_string(),
    };
    let text = format!(
        "{extra}trustedRegistries: [\"{host}/team/**\"]\n\
         registries:\n  \"{host}\": {connection}\n\
         rules:\n  - name: team\n    images: [\"{host}/team/**\"]\n    keys: [{{file: {key}}}]\n",
        key = dir.join("cosign.pub").display()
    );
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The JSONPatch of a webhook answer, decoded.
fn patch_of(body: &Value) -> Value {
    use base64::Engine as _;
    let patch = body["response"]["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("no patch: {body}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn message(body: &Value) -> String {
    body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A Pod whose container is `container` and which mounts `volume` as an image volume.
fn pod_with_volume(namespace: &str, container: &str, volume: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "containers": [{"name": "app", "image": container,
                            "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
            "volumes": [
                {"name": "cache", "emptyDir": {}},
                {"name": "models", "image": {"reference": volume, "pullPolicy": "IfNotPresent"}}
            ]
        }
    })
}

#[test]
fn image_volumes_are_checked_pinned_and_denied_like_containers() {
    block_on(async {
        let registry = Registry::start(Variant::Http).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        std::fs::write(dir.path().join("cosign.pub"), key.public_key().to_pem()).unwrap();
        let (app, app_digest) = push(&registry, "team/app", "v1", Some(&key)).await;
        let (models, models_digest) = push(&registry, "team/models", "v2", Some(&key)).await;
        let (unsigned, _) = push(&registry, "team/unsigned", "v1", None).await;
        let policy = policy(dir.path(), &registry, "pinDigests: all\n");
        let pinned_app = format!("{app}@{app_digest}");

        // imgate admit: a signed, pinned container with an untrusted image
        // volume is denied, naming the volume.
        let manifest = dir.path().join("pod.yaml");
        let evil = pod_with_volume("apps", &pinned_app, "evil.example/malware:latest");
        std::fs::write(&manifest, serde_yaml::to_string(&evil).unwrap()).unwrap();
        let policy_arg = policy.display().to_string();
        let manifest_arg = manifest.display().to_string();
        let mut args = vec!["admit", "--policy", &policy_arg, "-f", &manifest_arg];
        let registry_args = registry.cli_args();
        args.extend(registry_args.iter().map(String::as_str));
        let run = Run::from_output(&run_imgate(&args, &[], None).unwrap());
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stdout.contains("DENIED"), "{run:?}");
        assert!(
            run.stdout.contains("image volume \"models\"")
                && run.stdout.contains("evil.example/malware"),
            "{run:?}"
        );

        // The webhook: a signed image volume by tag is admitted and pinned at
        // its own field; an unsigned one is denied.
        let certs = dir.path().join("certs");
        generate_certs(&certs, false).unwrap();
        let webhook = Webhook::start(&WebhookOptions::new(&policy, &certs)).unwrap();
        let client = webhook.client(false).unwrap();
        let object = pod_with_volume("apps", &pinned_app, &models);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("v1", "apps", &object))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["response"]["allowed"], true, "{body}");
        let patch = patch_of(&body);
        assert_eq!(
            patch,
            json!([{"op": "replace", "path": "/spec/volumes/1/image/reference",
                    "value": format!("{models}@{models_digest}")}])
        );
        let object = pod_with_volume("apps", &pinned_app, &unsigned);
        let (_, body) = webhook
            .post(&client, "/mutate", &review("v2", "apps", &object))
            .await
            .unwrap();
        assert_eq!(body["response"]["allowed"], false, "{body}");
        let text = message(&body);
        assert!(
            text.contains("image volume \"models\"") && text.contains("team/unsigned"),
            "{text}"
        );
        // The decision line names the volume.
        assert!(
            webhook.wait_for_log(
                "image volume \\\"models\\\"",
                std::time::Duration::from_secs(5)
            ),
            "{}",
            webhook.logs()
        );

        // imgate pin rewrites the image volume's reference in a manifest.
        let deployment = dir.path().join("deploy.yaml");
        std::fs::write(
            &deployment,
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {app}\n      volumes:\n        - name: models\n          image:\n            reference: {models}  # the weights\n"
            ),
        )
        .unwrap();
        let deployment_arg = deployment.display().to_string();
        let mut args = vec!["pin", "-w", &deployment_arg];
        args.extend(registry_args.iter().map(String::as_str));
        let run = Run::from_output(&run_imgate(&args, &[], None).unwrap());
        assert_eq!(run.code, 0, "{run:?}");
        let written = std::fs::read_to_string(&deployment).unwrap();
        assert!(
            written.contains(&format!(
                "reference: {models}@{models_digest}  # the weights"
            )),
            "{written}"
        );
        assert!(
            written.contains(&format!("image: {app}@{app_digest}")),
            "{written}"
        );
    });
}

/// Issue: the tag and verdict caches answered a namespace without access
/// from what another namespace's pull secret had learnt. Three steps on a
/// registry that demands credentials: the attacker (no usable secret) is
/// denied; the victim (its pull secret) is admitted; the attacker again
/// must still be denied, with the registry's own answer.
#[test]
fn a_private_answer_never_reaches_a_namespace_without_access() {
    block_on(async {
        let registry = Registry::start(Variant::BasicAuth).await.unwrap();
        let (user, password) = registry.credentials().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        std::fs::write(dir.path().join("cosign.pub"), key.public_key().to_pem()).unwrap();
        let (private, digest) = push(&registry, "team/private", "v1", Some(&key)).await;
        let policy = policy(dir.path(), &registry, "");

        let api = KubeApi::start().await.unwrap();
        for namespace in ["victim", "attacker"] {
            api.put(
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/default"),
                json!({"metadata": {"name": "default"}}),
            );
        }
        api.put_pull_secret("victim", "regcred", registry.host(), user, password);

        let certs = dir.path().join("certs");
        generate_certs(&certs, false).unwrap();
        // The test's client plays the API server without a client
        // certificate (attacks::impersonation covers client authentication).
        let mut options = WebhookOptions::new(&policy, &certs).args([
            "--kube-pull-secrets",
            "--allow-unauthenticated-pull-secrets",
        ]);
        options.env = api.env();
        let webhook = Webhook::start(&options).unwrap();
        let client = webhook.client(false).unwrap();
        let review_in = |uid: &str, namespace: &str| {
            let mut object = imgate_tests::webhook::pod(namespace, &[&private]);
            object["spec"]["imagePullSecrets"] = json!([{"name": "regcred"}]);
            review(uid, namespace, &object)
        };

        let (_, first) = webhook
            .post(&client, "/mutate", &review_in("a1", "attacker"))
            .await
            .unwrap();
        assert_eq!(first["response"]["allowed"], false, "{first}");
        assert!(message(&first).contains("401"), "{first}");

        let (_, victim) = webhook
            .post(&client, "/mutate", &review_in("v1", "victim"))
            .await
            .unwrap();
        assert_eq!(victim["response"]["allowed"], true, "{victim}");
        assert_eq!(patch_of(&victim)[0]["value"], format!("{private}@{digest}"));

        let (_, again) = webhook
            .post(&client, "/mutate", &review_in("a2", "attacker"))
            .await
            .unwrap();
        assert_eq!(again["response"]["allowed"], false, "{again}");
        let text = message(&again);
        assert!(text.contains("401"), "{text}");
        assert!(!text.contains(&digest), "the private digest leaked: {text}");
        assert!(again["response"].get("patch").is_none(), "{again}");
        // Each namespace's secret was looked for under its own name.
        let hits = api.hits();
        assert!(
            hits.contains(&"/api/v1/namespaces/attacker/secrets/regcred".to_string()),
            "{hits:?}"
        );
        assert!(
            hits.contains(&"/api/v1/namespaces/victim/secrets/regcred".to_string()),
            "{hits:?}"
        );
    });
}
