//! Registry failures: `onRegistryError` applies only to unavailability,
//! causes are named, deadlines hold, and single flight shares one
//! verification among concurrent reviews.

use super::*;

#[tokio::test]
async fn registry_down_follows_on_registry_error() {
    let engine = make("", FakeBackend::new(Health::Down));
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert!(!response.allowed);
    assert!(
        message(&response).contains("connection refused"),
        "{}",
        message(&response)
    );

    let engine = make("onRegistryError: allow\n", FakeBackend::new(Health::Down));
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert!(response.allowed);
    assert!(response.patch.is_none());
    assert!(response
        .warnings
        .join(" ")
        .contains("onRegistryError: allow"));
    // Validate agrees: the unpinned image is let through, as mutate did.
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Validate).await;
    assert!(response.allowed, "{response:?}");
}

#[tokio::test]
async fn only_unavailability_fails_open() {
    for (health, cause) in [
        (Health::Missing, "tag v1 not found"),
        (Health::Refused, "refused access (403)"),
        (Health::Lying, "digest mismatch"),
    ] {
        let backend = FakeBackend::new(health);
        let engine = make("onRegistryError: allow\n", backend.clone());
        let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
        assert!(!response.allowed, "{cause}: must deny, got {response:?}");
        let message = message(&response);
        assert!(message.contains(cause), "{message}");
        assert!(message.contains("onRegistryError: allow"), "{message}");
        assert!(backend.calls() > 0);
    }
    let engine = make(
        "onRegistryError: allow\n",
        FakeBackend::new(Health::Overloaded),
    );
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert!(response.allowed, "{response:?}");
    assert!(
        response.warnings.join(" ").contains("answered 503"),
        "{response:?}"
    );
}

#[tokio::test]
async fn a_failed_signature_fetch_names_its_cause() {
    // An outage while fetching signatures fails open, saying why.
    let engine = make(
        "onRegistryError: allow\n",
        FakeBackend::verify_fails(Health::Overloaded),
    );
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert!(response.allowed, "{response:?}");
    let warnings = response.warnings.join(" ");
    assert!(
        warnings.contains("cannot check (fetching signatures: registry registry.test answered 503"),
        "{warnings}"
    );
    // A lying registry while fetching signatures denies, with the cause.
    let engine = make(
        "onRegistryError: allow\n",
        FakeBackend::verify_fails(Health::Lying),
    );
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert!(!response.allowed, "{response:?}");
    assert!(
        message(&response).contains("cannot check: fetching signatures: digest mismatch"),
        "{}",
        message(&response)
    );
}

#[tokio::test]
async fn a_hanging_registry_is_answered_within_the_deadline() {
    for (extra, allowed) in [("", false), ("onRegistryError: allow\n", true)] {
        let engine = engine_with(
            extra,
            FakeBackend::new(Health::Hanging),
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "took {took:?}");
        assert!(took >= Duration::from_millis(300), "took {took:?}");
        assert_eq!(response.allowed, allowed);
        let text = format!("{} {}", message(&response), response.warnings.join(" "));
        assert!(
            text.contains("registry did not answer within 300ms"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_reviews_cost_one_verification() {
    let backend = FakeBackend::new(Health::Up);
    let engine = Arc::new(make("", backend.clone()));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let engine = Arc::clone(&engine);
        let mut review = fixture("pod-signed.json");
        review.request.as_mut().unwrap().uid = format!("uid-{i}");
        tasks.push(tokio::spawn(async move {
            answer(&engine, review, Endpoint::Mutate).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task.await.unwrap().response.unwrap();
        assert_eq!(response.uid, format!("uid-{i}"));
        assert!(response.allowed);
        assert!(response.patch.is_some());
    }
    assert_eq!(backend.resolves.load(Ordering::SeqCst), 1);
    assert_eq!(backend.verifies.load(Ordering::SeqCst), 1);
    assert_eq!(engine.metrics().verification_count(), 1);
}

#[tokio::test]
async fn a_changed_rule_does_not_reuse_old_verdicts() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert_eq!(backend.verifies.load(Ordering::SeqCst), 1);
    // Same rules reloaded: verdicts still apply.
    engine.replace_policy(policy(""));
    run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert_eq!(backend.verifies.load(Ordering::SeqCst), 1);
    // A different key: verify again.
    let text = policy_text("").replace("policy/ci.pub", "policy/other.pub");
    engine.replace_policy(Policy::from_yaml(&text, "t").unwrap());
    run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    assert_eq!(backend.verifies.load(Ordering::SeqCst), 2);
}
