//! What one object, and all of them together, may cost: the cap on
//! distinct images, the process-wide bound on registry work, and recovery
//! after a registry that hung.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use imgate_core::digest::Digest;
use imgate_core::reference::ImageRef;
use imgate_core::registry::{ClientConfig, RegistryClient, RegistryError};
use imgate_core::signature::{Format, Requirements, Unmet, Verdict, Verified, VerifyError};
use serde_json::Value;

use super::*;

/// A pod with `count` distinct images in the trusted registry.
fn pod_with_images(count: usize) -> Value {
    pod_with_images_named(count, "app")
}

/// Same, the repositories named `<prefix><i>`.
fn pod_with_images_named(count: usize, prefix: &str) -> Value {
    let containers: Vec<Value> = (0..count)
        .map(|i| serde_json::json!({"name": format!("c{i}"), "image": format!("{REGISTRY}/imgate/{prefix}{i}:v1")}))
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": containers}})
}

#[tokio::test]
async fn too_many_distinct_images_are_denied_before_any_registry_call() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    let decision = admit(&engine, &pod_with_images(200), Endpoint::Mutate).await;
    assert!(!decision.allowed, "{decision:?}");
    let reasons = decision.reasons.join("; ");
    assert!(reasons.contains("200 distinct images"), "{reasons}");
    assert!(
        reasons.contains("limits.maxImagesPerObject (64)"),
        "{reasons}"
    );
    assert_eq!(backend.calls(), 0);
    assert!(decision.patch.is_empty());

    // The same image many times is one image.
    let mut same = pod_with_images(1);
    let one = same["spec"]["containers"][0].clone();
    same["spec"]["containers"] = Value::Array(vec![one; 200]);
    let decision = admit(&engine, &same, Endpoint::Mutate).await;
    assert!(
        decision.reasons.iter().all(|r| !r.contains("distinct")),
        "{decision:?}"
    );

    // The cap is the policy's.
    let engine = make("limits: {maxImagesPerObject: 250}\n", backend.clone());
    let decision = admit(&engine, &pod_with_images(200), Endpoint::Mutate).await;
    assert!(
        decision.reasons.iter().all(|r| !r.contains("distinct")),
        "{decision:?}"
    );
    assert!(backend.calls() >= 200);
}

/// Counts how many verifications run at once.
#[derive(Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Backend for Gauge {
    fn resolve(
        &self,
        _client: RegistryClient,
        image: ImageRef,
    ) -> BoxFuture<'static, Result<Digest, RegistryError>> {
        let digest = digest_of(&image.to_string());
        futures::future::ready(Ok(digest)).boxed()
    }

    fn verify(
        &self,
        _client: RegistryClient,
        image: ImageRef,
        _requirements: Requirements,
    ) -> BoxFuture<'static, Result<Verdict, VerifyError>> {
        let running = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(running, Ordering::SeqCst);
        let now = Arc::clone(&self.now);
        let digest = image.digest.clone().unwrap();
        async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(Verdict::Denied {
                digest: digest.clone(),
                unmet: vec![Unmet::NoSignatures { digest }],
            })
        }
        .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_work_is_bounded_process_wide() {
    let gauge = Arc::new(Gauge::default());
    let client = RegistryClient::new(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    })
    .unwrap();
    let engine = Arc::new(
        Engine::builder(policy("limits: {maxImagesPerObject: 40}\n"), client)
            .backend(gauge.clone())
            .registry_concurrency(5)
            .build(),
    );
    // Two objects at once, 40 distinct images each: the bound is shared.
    let mut tasks = Vec::new();
    for prefix in ["a", "b"] {
        let engine = Arc::clone(&engine);
        tasks.push(tokio::spawn(async move {
            admit(
                &engine,
                &pod_with_images_named(40, prefix),
                Endpoint::Mutate,
            )
            .await
        }));
    }
    for task in tasks {
        let decision = task.await.unwrap();
        assert_eq!(decision.images.len(), 40);
        assert!(
            decision.images.iter().all(|i| !i.registry_error),
            "{decision:?}"
        );
    }
    let peak = gauge.peak.load(Ordering::SeqCst);
    assert!((2..=5).contains(&peak), "peak concurrency {peak}");
}

/// A registry that hangs until switched back on; then everything is signed.
#[derive(Default)]
struct Recovering {
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Recovering {
    fn answer<T: Send + 'static>(&self, value: T) -> BoxFuture<'static, T> {
        let down = self.down.load(Ordering::SeqCst);
        async move {
            if down {
                futures::future::pending::<()>().await;
            }
            value
        }
        .boxed()
    }
}

impl Backend for Recovering {
    fn resolve(
        &self,
        _client: RegistryClient,
        image: ImageRef,
    ) -> BoxFuture<'static, Result<Digest, RegistryError>> {
        self.answer(Ok(digest_of(&image.to_string())))
    }

    fn verify(
        &self,
        _client: RegistryClient,
        image: ImageRef,
        requirements: Requirements,
    ) -> BoxFuture<'static, Result<Verdict, VerifyError>> {
        let digest = image.digest.clone().unwrap();
        self.answer(Ok(Verdict::Verified(Verified {
            digest,
            format: Format::Legacy,
            key: requirements.key_names().join(","),
            annotations: BTreeMap::new(),
        })))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_registry_is_seen_without_waiting_for_a_hung_attempt() {
    let backend = Arc::new(Recovering::default());
    backend.down.store(true, Ordering::SeqCst);
    let client = RegistryClient::new(ClientConfig {
        use_docker_config: false,
        ..ClientConfig::default()
    })
    .unwrap();
    let engine = Arc::new(
        Engine::builder(policy(""), client)
            .deadline(Duration::from_secs(2))
            .backend(backend.clone())
            .build(),
    );
    // A review while the registry hangs: its attempt hangs with it.
    let first = {
        let engine = Arc::clone(&engine);
        tokio::spawn(async move { run(&engine, "pod-signed.json", Endpoint::Mutate).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The registry is back; the hung attempt is older than a quarter of the budget.
    backend.down.store(false, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let (_, response) = run(&engine, "pod-signed.json", Endpoint::Mutate).await;
    let took = started.elapsed();
    assert!(response.allowed, "{response:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let (_, response) = first.await.unwrap();
    assert!(!response.allowed, "the first review met the outage");
}
