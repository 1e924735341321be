//! The requests one verification costs, counted by the fake registry: the
//! `.sig` tag and the referrers are asked for at once (the fake holds the
//! `.sig` request until the referrers lookup arrives and counts whether it
//! did), the tag-schema index is asked beside the referrers API until the
//! registry's answer to the API is known, either answer is remembered, 404s do not
//! cost a connection, and a second verification reuses the connections of
//! the first. Counts only: they are deterministic; timings are not.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use imgate_core::registry::RegistryClient;
use imgate_core::signature::{sign, verify, Format, SignOptions};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;

use crate::fake::bounded;
use crate::signatures::{req, Fake};

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Resolves `tag` and verifies the result with a client of its own (cold),
/// as `imgate verify` and the webhook's first look at an image do; returns
/// the client and the pinned reference.
async fn cold_verify(f: &Fake, image: &ImageRef, key: &SigningKey) -> (RegistryClient, ImageRef) {
    let client = RegistryClient::new(f.server.config()).unwrap();
    let tag = ImageRef {
        digest: None,
        ..image.clone()
    };
    f.server.registry.reset_counts();
    f.server.registry.set_pairing(true);
    let pinned = bounded(client.resolve(&tag)).await.unwrap().pinned;
    assert!(bounded(verify(&client, &pinned, &req(key)))
        .await
        .unwrap()
        .is_verified());
    (client, pinned)
}

#[tokio::test]
async fn a_legacy_signed_tag_costs_tag_then_sig_and_referrers_then_payload() {
    let f = Fake::start().await;
    let (image, key) = f.signed_image("team/app", "legacy").await;

    let (client, pinned) = cold_verify(&f, &image, &key).await;
    let reg = &f.server.registry;
    assert_eq!(
        reg.all_hits(),
        counts(&[
            ("GET manifest", 3), // the tag, the .sig, the tag schema (first contact)
            ("GET referrers", 1),
            ("GET blob", 1), // the payload
            ("sig paired", 1),
        ])
    );
    // HTTP/1.1 without pipelining: the three requests in flight at once on
    // first contact need three connections; everything else reuses them
    // (over HTTP/2, as registries speak it over TLS, they share one).
    assert!(reg.connections.load(Ordering::SeqCst) <= 3);

    // Again by digest on the same client: no tag, and the API is known to
    // answer, so no tag schema either; no new connection.
    reg.reset_counts();
    assert!(bounded(verify(&client, &pinned, &req(&key)))
        .await
        .unwrap()
        .is_verified());
    assert_eq!(
        reg.all_hits(),
        counts(&[
            ("GET manifest", 1),
            ("GET referrers", 1),
            ("GET blob", 1),
            ("sig paired", 1),
        ])
    );
    assert_eq!(reg.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_bundle_signed_tag_adds_the_bundle_manifest_and_404s_keep_connections() {
    let f = Fake::start().await;
    let image = f.image("team/app", "bundle").await;
    let key = SigningKey::generate();
    let opts = SignOptions {
        format: Format::Bundle,
        ..SignOptions::default()
    };
    sign(&f.client, &image, &key, &opts).await.unwrap();

    let (client, pinned) = cold_verify(&f, &image, &key).await;
    let reg = &f.server.registry;
    assert_eq!(
        reg.all_hits(),
        counts(&[
            ("GET manifest", 4), // the tag, the .sig (404), the tag schema (first contact), the bundle manifest
            ("GET referrers", 1),
            ("GET blob", 1), // the bundle
            ("sig paired", 1),
        ])
    );
    assert!(reg.connections.load(Ordering::SeqCst) <= 3);
    // The .sig 404's connection went back to the pool.
    reg.reset_counts();
    assert!(bounded(verify(&client, &pinned, &req(&key)))
        .await
        .unwrap()
        .is_verified());
    assert_eq!(reg.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn without_the_referrers_api_the_tag_schema_is_asked_and_the_api_is_not_asked_again() {
    let f = Fake::start().await;
    f.server.registry.set_referrers_api(false);
    let (image, key) = f.signed_image("team/app", "schema").await;

    let (client, pinned) = cold_verify(&f, &image, &key).await;
    let reg = &f.server.registry;
    assert_eq!(
        reg.all_hits(),
        counts(&[
            ("GET manifest", 3), // the tag, the .sig, the tag schema (404)
            ("GET referrers", 1),
            ("GET blob", 1),
            ("sig paired", 1),
        ])
    );
    // Remembered: the tag schema is asked at once, the API not at all.
    reg.reset_counts();
    reg.set_pairing(true);
    assert!(bounded(verify(&client, &pinned, &req(&key)))
        .await
        .unwrap()
        .is_verified());
    assert_eq!(
        reg.all_hits(),
        counts(&[("GET manifest", 2), ("GET blob", 1), ("sig paired", 1)])
    );
    assert_eq!(reg.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unsigned_tag_costs_the_tag_then_sig_and_referrers() {
    let f = Fake::start().await;
    let image = f.image("team/app", "unsigned").await;
    let client = RegistryClient::new(f.server.config()).unwrap();
    f.server.registry.reset_counts();
    f.server.registry.set_pairing(true);
    let tag = ImageRef {
        digest: None,
        ..image.clone()
    };
    let pinned = bounded(client.resolve(&tag)).await.unwrap().pinned;
    let verdict = bounded(verify(&client, &pinned, &req(&SigningKey::generate())))
        .await
        .unwrap();
    assert!(!verdict.is_verified());
    assert_eq!(
        f.server.registry.all_hits(),
        counts(&[
            ("GET manifest", 3), // the tag, the .sig (404), the tag schema (404, first contact)
            ("GET referrers", 1),
            ("sig paired", 1),
        ])
    );
}
