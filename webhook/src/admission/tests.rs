//! Engine tests over the AdmissionReview fixtures, with a fake registry
//! backend that counts calls (the real registry is exercised by the
//! scenario tests in `tests/`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use imgate_core::digest::Digest;
use imgate_core::policy::Policy;
use imgate_core::reference::ImageRef;
use imgate_core::registry::{ClientConfig, RegistryClient, RegistryError};
use imgate_core::signature::{Format, Requirements, Unmet, Verdict, Verified, VerifyError};
use serde_json::Value;

use super::*;
use crate::review::{parse_review, AdmissionResponse, AdmissionReview};

const REGISTRY: &str = "registry.test";

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn digest_of(name: &str) -> Digest {
    Digest::sha256(name.as_bytes())
}

/// How the fake registry behaves.
#[derive(Clone, Copy, PartialEq)]
enum Health {
    Up,
    Down,
    Hanging,
    /// The tag does not exist (404).
    Missing,
    /// Credentials refused (403).
    Refused,
    /// The registry's bytes do not match the digest it announced.
    Lying,
    /// 503: overloaded, a real outage.
    Overloaded,
}

/// Tags resolve to `sha256(tag reference)`; `signed` lists signed (name, digest).
struct FakeBackend {
    health: Health,
    /// How tag resolution behaves (usually as `health`).
    resolve_health: Health,
    signed: BTreeSet<(String, Digest)>,
    resolves: AtomicUsize,
    verifies: AtomicUsize,
    delay: Duration,
}

impl FakeBackend {
    fn new(health: Health) -> Arc<FakeBackend> {
        let signed = ImageRef::parse(&format!("{REGISTRY}/imgate/signed")).unwrap();
        Arc::new(FakeBackend {
            health,
            resolve_health: health,
            signed: [(
                signed.name(),
                digest_of(&format!("{REGISTRY}/imgate/signed:v1")),
            )]
            .into(),
            resolves: AtomicUsize::new(0),
            verifies: AtomicUsize::new(0),
            delay: Duration::from_millis(20),
        })
    }

    /// Tags resolve; fetching signatures behaves as `health`.
    fn verify_fails(health: Health) -> Arc<FakeBackend> {
        let mut backend = Arc::into_inner(FakeBackend::new(health)).unwrap();
        backend.resolve_health = Health::Up;
        Arc::new(backend)
    }

    fn calls(&self) -> usize {
        self.resolves.load(Ordering::SeqCst) + self.verifies.load(Ordering::SeqCst)
    }

    async fn behave(health: Health, delay: Duration) -> Result<(), RegistryError> {
        let registry = REGISTRY.to_string();
        match health {
            Health::Up => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Health::Down => Err(RegistryError::Connect {
                registry,
                detail: "connection refused".into(),
            }),
            Health::Hanging => futures::future::pending().await,
            Health::Missing => Err(RegistryError::NotFound {
                what: "tag v1".into(),
                image: format!("{REGISTRY}/imgate/signed"),
            }),
            Health::Refused => Err(RegistryError::Unauthorized {
                registry,
                status: 403,
                detail: "denied".into(),
            }),
            Health::Lying => Err(RegistryError::DigestMismatch {
                image: format!("{REGISTRY}/imgate/signed"),
                expected: digest_of("expected"),
                actual: digest_of("actual"),
            }),
            Health::Overloaded => Err(RegistryError::Status {
                registry,
                status: 503,
                url: format!("https://{REGISTRY}/v2/"),
            }),
        }
    }
}

impl Backend for FakeBackend {
    fn resolve(
        &self,
        _client: RegistryClient,
        image: ImageRef,
    ) -> BoxFuture<'static, Result<Digest, RegistryError>> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        let (health, delay) = (self.resolve_health, self.delay);
        async move {
            FakeBackend::behave(health, delay).await?;
            Ok(digest_of(&image.to_string()))
        }
        .boxed()
    }

    fn verify(
        &self,
        _client: RegistryClient,
        image: ImageRef,
        requirements: Requirements,
    ) -> BoxFuture<'static, Result<Verdict, VerifyError>> {
        self.verifies.fetch_add(1, Ordering::SeqCst);
        let (health, delay) = (self.health, self.delay);
        let digest = image.digest.clone().unwrap();
        let signed = self.signed.contains(&(image.name(), digest.clone()));
        let key = requirements.key_names().join(",");
        async move {
            FakeBackend::behave(health, delay).await?;
            Ok(if signed {
                Verdict::Verified(Verified {
                    digest,
                    format: Format::Legacy,
                    key,
                    annotations: BTreeMap::new(),
                })
            } else {
                Verdict::Denied {
                    digest: digest.clone(),
                    unmet: vec![Unmet::NoSignatures { digest }],
                }
            })
        }
        .boxed()
    }
}

fn policy_text(extra: &str) -> String {
    let key = fixtures().join("policy/ci.pub");
    format!(
        "{extra}namespaces: {{exclude: [kube-system]}}\ntrustedRegistries: [\"{REGISTRY}/**\", trusted.io/**, docker.io/library/*]\nrules:\n  - {{name: ours, images: [\"{REGISTRY}/**\", trusted.io/**], keys: [{{file: {}}}]}}\n  - {{name: upstream, images: [docker.io/library/*], verify: none}}\n",
        key.display()
    )
}

fn policy(extra: &str) -> Policy {
    Policy::from_yaml(&policy_text(extra), "test-policy.yaml").unwrap()
}

fn engine_with(extra: &str, backend: Arc<FakeBackend>, deadline: Duration) -> Engine {
    let client = RegistryClient::new(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    })
    .unwrap();
    Engine::builder(policy(extra), client)
        .deadline(deadline)
        .backend(backend)
        .build()
}

/// The engine's answer to an API server's review arriving now.
async fn answer(engine: &Engine, review: AdmissionReview, endpoint: Endpoint) -> AdmissionReview {
    answer_review(engine, review, endpoint, std::time::Instant::now()).await
}

/// The engine's decision on a manifest, as `imgate admit` asks for it.
async fn admit(engine: &Engine, object: &Value, endpoint: Endpoint) -> ObjectDecision {
    engine
        .decide(&Admission::manifest(object, "default", endpoint))
        .await
        .unwrap_or_else(ObjectDecision::invalid)
}

fn make(extra: &str, backend: Arc<FakeBackend>) -> Engine {
    engine_with(extra, backend, Duration::from_secs(8))
}

fn fixture(name: &str) -> AdmissionReview {
    fixture_at(name, REGISTRY)
}

/// A fixture with its images in `registry`.
fn fixture_at(name: &str, registry: &str) -> AdmissionReview {
    let text = std::fs::read_to_string(fixtures().join("admission").join(name)).unwrap();
    let unsigned = digest_of(&format!("{REGISTRY}/imgate/unsigned:v1"));
    let text = text
        .replace("{{REGISTRY}}", registry)
        .replace("{{UNSIGNED_DIGEST}}", &unsigned.to_string());
    parse_review(text.as_bytes()).unwrap()
}

async fn run(
    engine: &Engine,
    name: &str,
    endpoint: Endpoint,
) -> (AdmissionReview, AdmissionResponse) {
    let request = fixture(name);
    let uid = request.request.as_ref().unwrap().uid.clone();
    let out = answer(engine, request.clone(), endpoint).await;
    assert_eq!(out.api_version, "admission.k8s.io/v1");
    assert_eq!(out.kind, "AdmissionReview");
    let response = out.response.clone().unwrap();
    assert_eq!(response.uid, uid, "uid must be echoed");
    (request, response)
}

/// Applies the response's patch to the request object, as the API server would.
fn patched(request: &AdmissionReview, response: &AdmissionResponse) -> Value {
    let mut object = request.request.as_ref().unwrap().object.clone().unwrap();
    if let Some(patch) = response.decoded_patch() {
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        json_patch::patch(&mut object, &patch).unwrap();
    }
    object
}

fn signed_pinned() -> String {
    let digest = digest_of(&format!("{REGISTRY}/imgate/signed:v1"));
    format!("{REGISTRY}/imgate/signed:v1@{digest}")
}

fn message(response: &AdmissionResponse) -> String {
    response
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn signed_pod_is_allowed_and_pinned() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    let (request, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert!(response.allowed, "{response:?}");
    let object = patched(&request, &response);
    assert_eq!(object["spec"]["containers"][0]["image"], signed_pinned());
    // The patched object passes validation without a second verification.
    let mut second = request.clone();
    second.request.as_mut().unwrap().object = Some(object);
    let out = answer(&engine, second, Endpoint::Validate).await;
    let response = out.response.unwrap();
    assert!(response.allowed, "{response:?}");
    assert!(response.patch.is_none());
    assert_eq!(backend.verifies.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unsigned_pod_is_denied_naming_container_image_rule_and_requirement() {
    let engine = make("", FakeBackend::new(Health::Up));
    let (_, response) = run(&engine, "pod-unsigned.json", Endpoint::Mutate).await;
    assert!(!response.allowed);
    assert!(response.patch.is_none());
    let status = response.status.clone().unwrap();
    assert_eq!(status.code, Some(403));
    let message = message(&response);
    for part in [
        "container \"app\"",
        "registry.test/imgate/unsigned:v1",
        "rule \"ours\"",
        "no signatures found for sha256:",
    ] {
        assert!(message.contains(part), "{part} missing from {message}");
    }
}

#[tokio::test]
async fn untrusted_registry_is_denied_without_a_registry_call() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    let (_, response) = run(&engine, "pod-untrusted.json", Endpoint::Mutate).await;
    assert!(!response.allowed);
    assert!(
        message(&response)
            .contains("trusted.io.evil.com/imgate/signed is not in trustedRegistries"),
        "{}",
        message(&response)
    );
    assert_eq!(backend.calls(), 0);
}

#[tokio::test]
async fn bypass_attempts_are_denied() {
    for (fixture, needle) in [
        ("pod-init-unsigned.json", "init container \"setup\""),
        (
            "pod-second-container-unsigned.json",
            "container \"sidecar\"",
        ),
        (
            "pod-ephemeralcontainers.json",
            "ephemeral container \"debugger\"",
        ),
        ("cronjob-unsigned.json", "init container \"fetch\""),
        ("deployment-unsigned.json", "container \"app\""),
        ("pod-digest-mismatch.json", "signed:v1@sha256:"),
    ] {
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let engine = make("", FakeBackend::new(Health::Up));
            let (_, response) = run(&engine, fixture, endpoint).await;
            assert!(!response.allowed, "{fixture} {endpoint:?} must be denied");
            assert!(
                message(&response).contains(needle),
                "{fixture}: {}",
                message(&response)
            );
            assert!(
                response.patch.is_none(),
                "{fixture}: a denial carries no patch"
            );
        }
    }
}

#[tokio::test]
async fn digest_wins_over_the_tag() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    let (_, response) = run(&engine, "pod-digest-mismatch.json", Endpoint::Mutate).await;
    assert!(!response.allowed);
    let unsigned = digest_of(&format!("{REGISTRY}/imgate/unsigned:v1"));
    assert!(message(&response).contains(&unsigned.to_string()));
    // Nothing to resolve: the reference names its digest.
    assert_eq!(backend.resolves.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn untouched_objects() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    for fixture in [
        "pod-excluded-namespace.json",
        "delete.json",
        "configmap.json",
    ] {
        for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
            let (_, response) = run(&engine, fixture, endpoint).await;
            assert!(response.allowed, "{fixture}");
            assert!(response.patch.is_none(), "{fixture}");
            assert!(response.warnings.is_empty(), "{fixture}");
        }
    }
    assert_eq!(backend.calls(), 0);
}

#[tokio::test]
async fn templates_are_pinned_only_under_pin_all() {
    let engine_pods = make("", FakeBackend::new(Health::Up));
    let (_, response) = run(&engine_pods, "deployment-signed.json", Endpoint::Mutate).await;
    assert!(response.allowed);
    assert!(
        response.patch.is_none(),
        "pinDigests: pods leaves templates as written"
    );
    let (_, response) = run(&engine_pods, "deployment-signed.json", Endpoint::Validate).await;
    assert!(
        response.allowed,
        "an unpinned template is fine under pods: {response:?}"
    );

    let engine_all = make("pinDigests: all\n", FakeBackend::new(Health::Up));
    let (request, response) = run(&engine_all, "deployment-signed.json", Endpoint::Mutate).await;
    assert!(response.allowed);
    let object = patched(&request, &response);
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["image"],
        signed_pinned()
    );
    let (_, response) = run(&engine_all, "deployment-signed.json", Endpoint::Validate).await;
    assert!(
        !response.allowed,
        "an unpinned template is not fine under all"
    );

    let engine_none = make("pinDigests: none\n", FakeBackend::new(Health::Up));
    let (_, response) = run(&engine_none, "pod-signed.json", Endpoint::Mutate).await;
    assert!(response.allowed);
    assert!(response.patch.is_none());
    let (_, response) = run(&engine_none, "pod-signed.json", Endpoint::Validate).await;
    assert!(response.allowed);
}

#[tokio::test]
async fn validate_catches_images_added_after_mutation() {
    let engine = make("", FakeBackend::new(Health::Up));
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Validate).await;
    assert!(!response.allowed);
    assert!(
        message(&response).contains("not pinned to a digest"),
        "{}",
        message(&response)
    );
}

#[tokio::test]
async fn audit_mode_allows_with_warnings_and_changes_nothing() {
    let engine = make("mode: audit\n", FakeBackend::new(Health::Up));
    let (_, response) = run(
        &engine,
        "pod-second-container-unsigned.json",
        Endpoint::Mutate,
    )
    .await;
    assert!(response.allowed);
    assert!(response.patch.is_none(), "audit mode never patches");
    let warnings = response.warnings.join("\n");
    assert!(
        warnings.contains("would deny: container \"sidecar\""),
        "{warnings}"
    );
    assert!(
        warnings.contains(&format!(
            "would pin container \"app\" to {}",
            signed_pinned()
        )),
        "{warnings}"
    );
    let annotation = &response.audit_annotations[WOULD_DENY_ANNOTATION];
    assert!(annotation.contains("imgate/unsigned:v1"), "{annotation}");
    assert_eq!(engine.metrics().decision_count("audit_denied", "ours"), 1);
    assert_eq!(engine.metrics().decision_count("allowed", "ours"), 1);
}

#[tokio::test]
async fn dry_runs_are_answered_but_not_counted() {
    let engine = make("", FakeBackend::new(Health::Up));
    let (_, response) = run(&engine, "pod-dryrun.json", Endpoint::Mutate).await;
    assert!(response.allowed);
    assert!(response.patch.is_some());
    assert_eq!(engine.metrics().decision_count("allowed", "ours"), 0);
}

#[tokio::test]
async fn malformed_images_and_missing_objects() {
    let engine = make("", FakeBackend::new(Health::Up));
    let mut review = fixture("pod-signed.json");
    let request = review.request.as_mut().unwrap();
    request.object.as_mut().unwrap()["spec"]["containers"][0]["image"] = "Not A Reference".into();
    let out = answer(&engine, review.clone(), Endpoint::Mutate).await;
    let response = out.response.unwrap();
    assert!(!response.allowed);
    assert!(message(&response)
        .contains("container \"app\": image \"Not A Reference\" is not a valid reference"));

    review.request.as_mut().unwrap().object = None;
    let response = answer(&engine, review, Endpoint::Mutate)
        .await
        .response
        .unwrap();
    assert!(!response.allowed);
    assert_eq!(response.status.unwrap().code, Some(400));

    let response = answer(&engine, AdmissionReview::default(), Endpoint::Mutate)
        .await
        .response
        .unwrap();
    assert!(!response.allowed);
}

#[tokio::test]
async fn verify_none_rules_need_no_registry_unless_pinning() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("pinDigests: none\n", backend.clone());
    let object = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}});
    let decision = admit(&engine, &object, Endpoint::Mutate).await;
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(backend.calls(), 0);
    assert_eq!(decision.images[0].rule.as_deref(), Some("upstream"));

    let engine = make("", backend.clone());
    let decision = admit(&engine, &object, Endpoint::Mutate).await;
    assert!(decision.allowed);
    assert_eq!(backend.resolves.load(Ordering::SeqCst), 1);
    assert_eq!(backend.verifies.load(Ordering::SeqCst), 0);
    assert_eq!(decision.patch.len(), 1);
    assert_eq!(decision.patch[0].path, "/spec/containers/0/image");
    assert!(decision.patch[0]
        .value
        .as_str()
        .unwrap()
        .starts_with("docker.io/library/nginx:1.27@sha256:"));
}

#[tokio::test]
async fn admit_object_uses_the_objects_namespace_and_kind() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    let review = fixture("cronjob-unsigned.json");
    let object = review.request.unwrap().object.unwrap();
    let decision = admit(&engine, &object, Endpoint::Mutate).await;
    assert!(!decision.allowed);
    assert_eq!(decision.images.len(), 2);
    assert_eq!(
        decision.images[0].pointer,
        "/spec/jobTemplate/spec/template/spec/initContainers/0/image"
    );
    assert!(decision.patch.is_empty());
    let mut excluded = object.clone();
    excluded["metadata"]["namespace"] = "kube-system".into();
    let decision = admit(&engine, &excluded, Endpoint::Mutate).await;
    assert!(decision.allowed);
    assert!(decision.skipped.is_some());
    let other =
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
    assert!(admit(&engine, &other, Endpoint::Mutate).await.allowed);
}

#[tokio::test]
async fn updates_judge_only_new_or_changed_images() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    // An old unsigned Pod gets a label: allowed, nothing re-checked or patched.
    let mut review = fixture("pod-unsigned.json");
    let request = review.request.as_mut().unwrap();
    request.operation = "UPDATE".into();
    request.old_object = request.object.clone();
    request.object.as_mut().unwrap()["metadata"]["labels"]["new"] = "label".into();
    for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
        let response = answer(&engine, review.clone(), endpoint)
            .await
            .response
            .unwrap();
        assert!(response.allowed, "{response:?}");
        assert!(response.patch.is_none());
    }
    assert_eq!(backend.calls(), 0);
    // Changing the image to another unsigned one is judged.
    let request = review.request.as_mut().unwrap();
    request.object.as_mut().unwrap()["spec"]["containers"][0]["image"] =
        format!("{REGISTRY}/imgate/unsigned:v2").into();
    let response = answer(&engine, review, Endpoint::Mutate)
        .await
        .response
        .unwrap();
    assert!(!response.allowed);
    assert!(message(&response).contains("unsigned:v2"));
}

mod limits;
mod pull_secrets;
mod registry_errors;
mod workloads;
