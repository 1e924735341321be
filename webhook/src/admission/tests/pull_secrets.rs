//! Pull secrets as the engine uses them: read under the review's deadline,
//! asked for lazily, invalid names skipped with a warning.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use imgate_core::policy::Policy;
use imgate_core::registry::{ClientConfig, RegistryClient};

use super::*;

#[tokio::test]
async fn pull_secret_lookups_run_under_the_deadline_from_arrival() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    // A registry that accepts connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = hanging.local_addr().unwrap().to_string();
    // An API server that takes 1.5 s for every answer.
    let (api, api_hits) = crate::kube::fake_api::slow_api(
        std::collections::HashMap::new(),
        Duration::from_millis(1500),
    )
    .await;
    let kube = crate::kube::KubeClient::new(
        &api,
        crate::kube::fake_api::TOKEN.into(),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let key = fixtures().join("policy/ci.pub");
    let text = format!(
        "trustedRegistries: [\"{registry}/**\"]\nregistries: {{\"{registry}\": {{http: true}}}}\nrules:\n  - {{name: ours, images: [\"{registry}/**\"], keys: [{{file: {}}}]}}\n",
        key.display()
    );
    let policy = Policy::from_yaml(&text, "test-policy.yaml").unwrap();
    let client = RegistryClient::new(policy.client_config(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    }))
    .unwrap();
    let deadline = Duration::from_millis(600);
    let engine = Engine::builder(policy, client)
        .deadline(deadline)
        .pull_secrets(Arc::new(kube))
        .build();
    let metrics = Arc::clone(engine.metrics());
    let state = crate::server::AppState::new(engine, metrics);

    let mut review = fixture_at("pod-signed.json", &registry);
    review.request.as_mut().unwrap().object.as_mut().unwrap()["spec"]["imagePullSecrets"] =
        serde_json::json!([{"name": "regcred"}]);
    let body = serde_json::to_vec(&review).unwrap();
    let started = std::time::Instant::now();
    let answer = crate::server::admission_router(state)
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let took = started.elapsed();
    let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .unwrap();
    let out: AdmissionReview = serde_json::from_slice(&bytes).unwrap();
    let response = out.response.unwrap();
    assert!(!response.allowed, "{response:?}");
    assert!(
        took < deadline + Duration::from_millis(400),
        "answered after {took:?} with a {deadline:?} deadline"
    );
    assert!(api_hits.load(Ordering::SeqCst) >= 1, "the API was asked");
    drop(hanging);
}

/// Records what the engine asks for; holds credentials for the namespaces
/// it is given.
#[derive(Default)]
struct RecordingSecrets {
    asked: std::sync::Mutex<Vec<crate::pullsecrets::PodPullSecrets>>,
    holders: BTreeMap<String, imgate_core::registry::Credentials>,
}

impl PullSecrets for RecordingSecrets {
    fn credentials<'a>(
        &'a self,
        pod: &'a crate::pullsecrets::PodPullSecrets,
    ) -> BoxFuture<'a, BTreeMap<String, imgate_core::registry::Credentials>> {
        self.asked.lock().unwrap().push(pod.clone());
        let held = self
            .holders
            .get(&pod.namespace)
            .map(|c| BTreeMap::from([(REGISTRY.to_string(), c.clone())]))
            .unwrap_or_default();
        futures::future::ready(held).boxed()
    }
}

fn engine_with_secrets(backend: Arc<FakeBackend>, secrets: Arc<RecordingSecrets>) -> Engine {
    let client = RegistryClient::new(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    })
    .unwrap();
    Engine::builder(policy(""), client)
        .backend(backend)
        .pull_secrets(secrets)
        .build()
}

fn review_in(namespace: &str, secret: &str) -> AdmissionReview {
    let mut review = fixture("pod-signed.json");
    let request = review.request.as_mut().unwrap();
    request.namespace = Some(namespace.to_string());
    request.object.as_mut().unwrap()["spec"]["imagePullSecrets"] =
        serde_json::json!([{"name": "../../victim/secrets/regcred"}, {"name": secret}]);
    review
}

#[tokio::test]
async fn pull_secrets_are_read_once_per_object_and_invalid_names_skipped() {
    let backend = FakeBackend::new(Health::Up);
    let secrets = Arc::new(RecordingSecrets::default());
    let engine = engine_with_secrets(backend.clone(), secrets.clone());
    let review = review_in("default", "regcred");
    let response = answer(&engine, review.clone(), Endpoint::Mutate)
        .await
        .response
        .unwrap();
    assert!(response.allowed, "{response:?}");
    let warnings = response.warnings.join("\n");
    assert!(
        warnings.contains("secret \"../../victim/secrets/regcred\" is not a valid name"),
        "{warnings}"
    );
    {
        let asked = secrets.asked.lock().unwrap();
        // Once for the object (resolve and verify share it), never the invalid name.
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(asked[0].namespace, "default");
        assert_eq!(asked[0].secrets, vec!["regcred".to_string()]);
    }
    assert_eq!(backend.calls(), 2);
    // Again: the secrets are read (the answer depends on who asks), the
    // registry is not (the same credential's answer is cached).
    answer(&engine, review, Endpoint::Mutate).await;
    assert_eq!(secrets.asked.lock().unwrap().len(), 2);
    assert_eq!(backend.calls(), 2);
}

#[tokio::test]
async fn answers_learnt_with_one_namespaces_secret_do_not_answer_another() {
    let backend = FakeBackend::new(Health::Up);
    let secrets = Arc::new(RecordingSecrets {
        holders: BTreeMap::from([(
            "victim".to_string(),
            imgate_core::registry::Credentials {
                username: "victim".into(),
                password: "s3cret".into(),
            },
        )]),
        ..Default::default()
    });
    let engine = engine_with_secrets(backend.clone(), secrets);
    // The victim's review is answered with its credential: two registry calls.
    let response = answer(&engine, review_in("victim", "regcred"), Endpoint::Mutate)
        .await
        .response
        .unwrap();
    assert!(response.allowed, "{response:?}");
    assert_eq!(backend.calls(), 2);
    // The attacker names the same image without a usable secret: its
    // answer comes from the registry as its own credential sees it, not
    // from the victim's cached answer.
    answer(&engine, review_in("attacker", "regcred"), Endpoint::Mutate).await;
    assert_eq!(
        backend.calls(),
        4,
        "answered from another credential's cache"
    );
    // The victim again: cached for its credential.
    answer(&engine, review_in("victim", "regcred"), Endpoint::Mutate).await;
    assert_eq!(backend.calls(), 4);
    assert_eq!(engine.metrics().verification_count(), 2);
}
