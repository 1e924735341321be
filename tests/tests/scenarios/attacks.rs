//! Scenarios: the real `imgate webhook` binary, over real TLS, against a
//! real registry, under objects and signatures made to cost it: a Pod naming
//! thousands of distinct images, and a `.sig` manifest whose layers all
//! point at one 64 MiB blob. Each must be denied in time, keep the process
//! under the Deployment's memory limit, and leave legitimate reviews
//! answered within the deadline while it runs. `impersonation`: a review
//! written by a tenant in another namespace's name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod impersonation;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imgate_core::reference::ImageRef;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{sign, signature_tag, SignOptions, SIMPLE_SIGNING_MEDIA_TYPE};
use imgate_keys::SigningKey;
use imgate_tests::image::{Blob, ImageBuilder};
use imgate_tests::push::RawClient;
use imgate_tests::webhook::{generate_certs, pod, review, Webhook, WebhookOptions};
use imgate_tests::{block_on, PushWith, Registry, Variant};
use serde_json::{json, Value};

/// The webhook Deployment's memory limit (deploy/base).
const POD_MEMORY_LIMIT_KIB: u64 = 256 * 1024;
/// The webhook's review deadline in these scenarios.
const DEADLINE: Duration = Duration::from_secs(4);
/// Answers may come this much after the deadline (scheduling, TLS, JSON).
const MARGIN: Duration = Duration::from_millis(750);

struct Env {
    registry: Registry,
    key: SigningKey,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let registry = Registry::start(Variant::Http).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        std::fs::write(dir.path().join("cosign.pub"), key.public_key().to_pem()).unwrap();
        generate_certs(&dir.path().join("certs"), false).unwrap();
        let host = registry.host();
        std::fs::write(
            dir.path().join("policy.yaml"),
            format!(
                "mode: enforce\n\
                 onRegistryError: allow\n\
                 trustedRegistries: [\"{host}/**\"]\n\
                 registries:\n  \"{host}\": {{http: true}}\n\
                 rules:\n  - name: team\n    images: [\"{host}/team/**\"]\n    keys: [{{file: cosign.pub}}]\n"
            ),
        )
        .unwrap();
        Env { registry, key, dir }
    }

    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn start(&self) -> Webhook {
        let deadline = format!("{}s", DEADLINE.as_secs());
        Webhook::start(
            &WebhookOptions::new(&self.policy(), &self.dir.path().join("certs"))
                .args(["--deadline", deadline.as_str()]),
        )
        .unwrap()
    }

    /// Pushes `team/<repo>:v1`; returns the tag reference and the digest.
    async fn push(&self, repo: &str) -> (String, String) {
        let pushed = ImageBuilder::new(repo)
            .image()
            .push(
                &self.registry,
                &format!("team/{repo}"),
                "v1",
                PushWith::Http,
            )
            .await
            .unwrap();
        (
            format!("{}/team/{repo}:v1", self.registry.host()),
            pushed.digest,
        )
    }

    async fn push_signed(&self, repo: &str) -> String {
        let (reference, digest) = self.push(repo).await;
        let client = RegistryClient::new(self.registry.client_config()).unwrap();
        let image = ImageRef::parse(&format!("{reference}@{digest}")).unwrap();
        sign(&client, &image, &self.key, &SignOptions::default())
            .await
            .unwrap();
        reference
    }
}

/// A review of a Pod in `team` running `images`.
fn pod_review(uid: &str, images: &[String]) -> Value {
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    review(uid, "team", &pod("team", &images))
}

/// Posts a review; returns its `response` and how long the answer took.
async fn post(webhook: &Webhook, uid: &str, images: &[String]) -> (Value, Duration) {
    let client = webhook.client(true).unwrap();
    let started = Instant::now();
    let (status, body) = webhook
        .post(&client, "/mutate", &pod_review(uid, images))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["uid"], uid, "{body}");
    (body["response"].clone(), took)
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A Pod naming 12,000 distinct images (the size that cost 380 MiB and
/// 12,000 sockets) is denied before any registry call, quickly, while a
/// signed Pod posted at the same time is admitted; memory stays bounded.
#[test]
fn a_flood_of_images_is_denied_without_registry_work() {
    block_on(async {
        let env = Env::new().await;
        let signed = env.push_signed("app").await;
        let webhook = env.start();
        let host = env.registry.host();
        let flood: Vec<String> = (0..12_000)
            .map(|i| format!("{host}/team/flood{i}:v1"))
            .collect();

        let (attack, (legit, legit_took)) = tokio::join!(post(&webhook, "flood", &flood), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            post(&webhook, "legit", std::slice::from_ref(&signed)).await
        });
        let (answer, took) = attack;
        assert_eq!(answer["allowed"], false, "{answer}");
        let text = message(&answer);
        assert!(
            text.contains("12000") && text.contains("64"),
            "the denial names the count and the cap: {text}"
        );
        assert!(took < DEADLINE + MARGIN, "flood answered after {took:?}");
        assert_eq!(legit["allowed"], true, "{legit}");
        assert!(legit_took < DEADLINE + MARGIN, "{legit_took:?}");
        let peak = webhook.memory_kib("VmHWM").unwrap();
        assert!(
            peak < POD_MEMORY_LIMIT_KIB,
            "peak RSS {peak} KiB over the pod limit"
        );
    });
}

/// A `.sig` manifest whose 12 layers all name one 64 MiB blob (the bomb
/// that drove the webhook to 782 MiB): the image is denied, not failed open
/// under `onRegistryError: allow`, within the deadline; memory stays far
/// under the limit and a signed image keeps being admitted meanwhile.
#[test]
fn a_signature_layer_bomb_is_denied_in_bounded_memory() {
    block_on(async {
        let env = Env::new().await;
        let signed = env.push_signed("app").await;
        let (bombed, digest) = env.push("bombed").await;

        let raw = RawClient::new(&env.registry).unwrap();
        let big = Blob::new(SIMPLE_SIGNING_MEDIA_TYPE, vec![b'x'; 64 << 20]);
        raw.put_blob("team/bombed", &big).await.unwrap();
        let config = Blob::new("application/vnd.oci.image.config.v1+json", b"{}".to_vec());
        raw.put_blob("team/bombed", &config).await.unwrap();
        let layer = json!({
            "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
            "digest": big.digest,
            "size": big.bytes.len(),
            "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}
        });
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(),
            "layers": vec![layer; 12],
        });
        let tag = signature_tag(&digest.parse().unwrap());
        raw.put_manifest(
            "team/bombed",
            &tag,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap();

        let webhook = env.start();
        let before = webhook.memory_kib("VmHWM").unwrap();
        let (attack, (legit, legit_took)) = tokio::join!(
            post(&webhook, "bomb", std::slice::from_ref(&bombed)),
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                post(&webhook, "legit", std::slice::from_ref(&signed)).await
            }
        );
        let (answer, took) = attack;
        assert_eq!(answer["allowed"], false, "{answer}");
        let text = message(&answer);
        assert!(
            text.contains("more than the 65536"),
            "names the cause: {text}"
        );
        assert!(took < DEADLINE + MARGIN, "bomb answered after {took:?}");
        assert_eq!(legit["allowed"], true, "{legit}");
        assert!(legit_took < DEADLINE + MARGIN, "{legit_took:?}");
        let peak = webhook.memory_kib("VmHWM").unwrap();
        // One 64 MiB read would show; bounded reads stay within a few MiB.
        assert!(
            peak < before + 32 * 1024 && peak < POD_MEMORY_LIMIT_KIB,
            "peak RSS {peak} KiB (was {before} KiB before the review)"
        );
    });
}
