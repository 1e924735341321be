//! The webhook's warm path, measured: the real binary over real TLS, a Pod
//! with three signed images from the real registry, reviewed again and
//! again once the caches are warm. Reports the webhook's CPU time per
//! review (from `/proc`), which is what the decision log, the review
//! parsing and the response cost, free of the client's share.
//!
//! Ignored by default (a measurement, not a check): run it against the
//! release binary,
//! `IMGATE_BIN=target/release/imgate cargo test -p imgate-tests --test scenarios warm_path -- --ignored --nocapture`
//! (`WARM_PATH_LOG=info,imgate::decision=off` leaves the decision lines out).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use imgate_core::reference::ImageRef;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{sign, SignOptions};
use imgate_keys::SigningKey;
use imgate_tests::webhook::{generate_certs, Webhook, WebhookOptions};
use imgate_tests::{block_on, ImageBuilder, PushWith, Registry, Variant};
use serde_json::{json, Value};

const REVIEWS: usize = 20000;
const CONCURRENCY: usize = 4;

#[test]
#[ignore = "measurement: run by hand against the release binary"]
fn warm_path_cpu_per_review() {
    block_on(async {
        let registry = Registry::start(Variant::Http).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        std::fs::write(dir.path().join("cosign.pub"), key.public_key().to_pem()).unwrap();
        let certs = dir.path().join("certs");
        generate_certs(&certs, false).unwrap();
        let client = RegistryClient::new(registry.client_config()).unwrap();
        let host = registry.host();
        let mut containers = Vec::new();
        for name in ["web", "sidecar", "metrics"] {
            let pushed = ImageBuilder::new(&format!("warm-{name}"))
                .image()
                .push(&registry, &format!("team/{name}"), "v1", PushWith::Http)
                .await
                .unwrap();
            let image = ImageRef::parse(&pushed.pinned()).unwrap();
            sign(&client, &image, &key, &SignOptions::default())
                .await
                .unwrap();
            containers.push(json!({"name": name, "image": format!("{host}/team/{name}:v1")}));
        }
        let policy = dir.path().join("policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "mode: enforce\ntrustedRegistries: [\"{host}/team/**\"]\n\
                 registries:\n  \"{host}\": {{http: true}}\n\
                 cache: {{tagTtl: 1h, verifiedTtl: 1h}}\n\
                 rules:\n  - name: team\n    images: [\"{host}/team/**\"]\n    keys: [{{file: cosign.pub}}]\n"
            ),
        )
        .unwrap();
        // WARM_PATH_LOG=info,imgate::decision=off: without decision lines.
        let log = std::env::var("WARM_PATH_LOG").unwrap_or_else(|_| "info".to_string());
        let mut options = WebhookOptions::new(&policy, &certs);
        options.env.push(("IMGATE_LOG".to_string(), log.clone()));
        let webhook = Webhook::start(&options).unwrap();
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "00000000-0000-4000-8000-000000000001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "team",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                             "groups": ["system:serviceaccounts", "system:authenticated"]},
                "object": {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "web-5d8f7c-", "namespace": "team",
                                 "labels": {"app": "web", "pod-template-hash": "5d8f7c"}},
                    "spec": {"containers": containers, "restartPolicy": "Always",
                             "serviceAccountName": "default"}
                },
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        }))
        .unwrap();
        let http = webhook.client(false).unwrap();
        let post = |http: reqwest::Client, body: Vec<u8>, url: String| async move {
            let response = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["response"]["allowed"], true, "{answer}");
            assert!(answer["response"]["patch"].is_string(), "{answer}");
        };
        // Cold: resolve and verify once; then warm up the connections.
        for _ in 0..(CONCURRENCY * 10) {
            post(http.clone(), body.clone(), webhook.url("/mutate")).await;
        }
        let cpu_before = webhook.cpu_time().unwrap();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let (http, body, url) = (http.clone(), body.clone(), webhook.url("/mutate"));
            tasks.push(tokio::spawn(async move {
                for _ in 0..REVIEWS / CONCURRENCY {
                    post(http.clone(), body.clone(), url.clone()).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let wall = started.elapsed();
        let cpu = webhook.cpu_time().unwrap().saturating_sub(cpu_before);
        let per_review = cpu.as_secs_f64() * 1e6 / REVIEWS as f64;
        eprintln!(
            "warm path: {REVIEWS} reviews, {CONCURRENCY} connections, wall {wall:?} ({:.0}/s), webhook CPU {cpu:?} = {per_review:.1} µs per review",
            REVIEWS as f64 / wall.as_secs_f64()
        );
        assert!(cpu > Duration::ZERO);
        if log == "info" {
            assert!(webhook.logs().matches("admission decision").count() >= REVIEWS);
        }
    });
}
