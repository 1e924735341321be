//! The real admission and side routers, driven in-process with
//! `tower::ServiceExt::oneshot` around the real engine. Nothing here needs a
//! registry: the reviews are excluded, untrusted (denied before any network
//! call) or malformed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use imgate_core::policy::Policy;
use imgate_core::registry::{ClientConfig, RegistryClient};
use imgate_webhook::admission::Engine;
use imgate_webhook::metrics::Metrics;
use imgate_webhook::server::{admission_router, metrics_router, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

const POLICY: &str = r#"
mode: enforce
namespaces:
  exclude: [kube-system]
trustedRegistries: ["registry.example.com/**"]
rules:
  - name: upstream
    images: ["registry.example.com/**"]
    verify: none
"#;

fn state() -> AppState {
    let policy = Policy::from_yaml(POLICY, "test-policy.yaml").unwrap();
    let client = RegistryClient::new(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    })
    .unwrap();
    let metrics = Metrics::new();
    let engine = Engine::builder(policy, client)
        .deadline(std::time::Duration::from_secs(2))
        .metrics(metrics.clone())
        .build();
    AppState::new(engine, metrics)
}

fn pod_review(uid: &str, namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": namespace},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

async fn post(state: &AppState, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let response = admission_router(state.clone())
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn get(state: &AppState, path: &str) -> (StatusCode, String) {
    let response = metrics_router(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A valid review still gets a sensible answer (the server keeps serving).
async fn still_serving(state: &AppState) {
    let body = serde_json::to_vec(&pod_review("after", "kube-system", "anything:1")).unwrap();
    let (status, bytes) = post(state, "/mutate", body).await;
    assert_eq!(status, StatusCode::OK);
    let review: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(review["response"]["uid"], "after");
    assert_eq!(review["response"]["allowed"], true);
}

#[tokio::test]
async fn excluded_and_untrusted_reviews_are_answered_with_the_uid() {
    let state = state();
    let body = serde_json::to_vec(&pod_review("u-1", "kube-system", "evil.example/x:1")).unwrap();
    let (status, bytes) = post(&state, "/mutate", body).await;
    assert_eq!(status, StatusCode::OK);
    let review: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], "u-1");
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none());

    for path in ["/mutate", "/validate"] {
        let body = serde_json::to_vec(&pod_review("u-2", "apps", "evil.example/x:1")).unwrap();
        let (status, bytes) = post(&state, path, body).await;
        assert_eq!(status, StatusCode::OK);
        let review: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(review["response"]["uid"], "u-2");
        assert_eq!(review["response"]["allowed"], false);
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("evil.example/x"), "{message}");
    }
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors_and_the_server_keeps_serving() {
    let state = state();

    let (status, bytes) = post(&state, "/mutate", b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains("not valid JSON") && text.contains("line 1"),
        "{text}"
    );
    still_serving(&state).await;

    // Wrong apiVersion, uid readable: an `invalid` review echoing it.
    let mut review = pod_review("u-old", "apps", "registry.example.com/a:1");
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, bytes) = post(&state, "/validate", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["response"]["uid"], "u-old");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("admission.k8s.io/v1beta1"), "{message}");
    still_serving(&state).await;

    // Missing uid: nothing to echo, so a plain 400.
    let mut review = pod_review("x", "apps", "registry.example.com/a:1");
    review["request"].as_object_mut().unwrap().remove("uid");
    let (status, bytes) = post(&state, "/mutate", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8(bytes).unwrap().contains("no uid"));

    // Empty body.
    let (status, _) = post(&state, "/mutate", Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // 10 MB: refused with 413 and a message naming the limit.
    let mut big =
        serde_json::to_vec(&pod_review("big", "apps", "registry.example.com/a:1")).unwrap();
    big.truncate(big.len() - 1);
    big.extend_from_slice(b", \"padding\": \"");
    big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    big.extend_from_slice(b"\"}");
    let (status, bytes) = post(&state, "/mutate", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8(bytes)
        .unwrap()
        .contains("exceeds the limit"));
    still_serving(&state).await;

    // Every refusal was counted.
    let (_, metrics) = get(&state, "/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("imgate_invalid_reviews_total"))
        .unwrap_or_else(|| panic!("no invalid_reviews metric in:\n{metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(count, 5.0, "{line}");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let state = state();
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    // Not ready until TLS is bound and the policy loaded.
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    state.readiness().set_policy_loaded(true);
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    state.readiness().set_tls_bound(true);
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
    state.readiness().set_shutting_down();
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let body = serde_json::to_vec(&pod_review("m", "apps", "evil.example/x:1")).unwrap();
    post(&state, "/mutate", body).await;
    let (status, text) = get(&state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("imgate_admission_decisions_total"), "{text}");
    assert!(text.contains("imgate_review_duration_seconds"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let _ = Arc::clone(state.metrics());
}

#[tokio::test]
async fn policy_swap_takes_effect_for_the_next_review() {
    let state = state();
    let body = || serde_json::to_vec(&pod_review("s", "apps", "evil.example/x:1")).unwrap();
    let (_, bytes) = post(&state, "/mutate", body()).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["response"]["allowed"],
        false
    );
    let audit = Policy::from_yaml(
        &POLICY.replace("mode: enforce", "mode: audit"),
        "audit.yaml",
    )
    .unwrap();
    state.engine().replace_policy(audit);
    let (_, bytes) = post(&state, "/mutate", body()).await;
    let review: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(review["response"]["allowed"], true);
    assert!(!review["response"]["warnings"]
        .as_array()
        .unwrap()
        .is_empty());
}
