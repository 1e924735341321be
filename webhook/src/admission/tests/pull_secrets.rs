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
    let mut opts = EngineOptions::new(client);
    opts.deadline = deadline;
    let metrics = Arc::clone(&opts.metrics);
    let engine = Engine::new(policy, opts);
    let state = crate::server::AppState::new(engine, metrics, Some(Arc::new(kube)));

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

/// Records what the engine asks for; knows no credentials.
#[derive(Default)]
struct RecordingSecrets {
    asked: std::sync::Mutex<Vec<(crate::pullsecrets::PodPullSecrets, String)>>,
}

impl PullSecrets for RecordingSecrets {
    fn credentials<'a>(
        &'a self,
        pod: &'a crate::pullsecrets::PodPullSecrets,
        registry: &'a str,
    ) -> BoxFuture<'a, Option<imgate_core::registry::Credentials>> {
        self.asked
            .lock()
            .unwrap()
            .push((pod.clone(), registry.to_string()));
        futures::future::ready(None).boxed()
    }
}

#[tokio::test]
async fn pull_secrets_are_asked_lazily_and_invalid_names_skipped() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    let secrets = Arc::new(RecordingSecrets::default());
    engine.set_pull_secrets(secrets.clone());
    let mut review = fixture("pod-signed.json");
    review.request.as_mut().unwrap().object.as_mut().unwrap()["spec"]["imagePullSecrets"] = serde_json::json!([
        {"name": "../../victim/secrets/regcred"},
        {"name": "regcred"}
    ]);
    let response = engine
        .review(review.clone(), Endpoint::Mutate, BTreeMap::new())
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
        // One ask per registry call (resolve, verify), never the invalid name.
        assert_eq!(asked.len(), 2, "{asked:?}");
        for (pod, registry) in asked.iter() {
            assert_eq!(pod.namespace, "default");
            assert_eq!(pod.secrets, vec!["regcred".to_string()]);
            assert_eq!(registry, REGISTRY);
        }
    }
    // Answered from the caches: no registry call, so no secret is read.
    engine
        .review(review, Endpoint::Mutate, BTreeMap::new())
        .await;
    assert_eq!(secrets.asked.lock().unwrap().len(), 2);
    assert_eq!(backend.calls(), 2);
}
