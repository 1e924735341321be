//! What one verification costs against the real registry (Distribution,
//! which has no referrers API), counted by the proxy in front of it: the
//! requests of a cold verification of a tag, and of the same client asked
//! again by digest once it knows the registry lacks the referrers API.
//! Counts only: they are deterministic; timings are not.

use std::collections::BTreeMap;

use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Format, Requirements, SignOptions};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::{CountingProxy, ImageBuilder, PushWith, Registry, Variant};

/// The requests seen, by kind: `tag`, `sig`, `tag-schema`, `referrers`,
/// `manifest` (by digest), `blob`; in the order they were answered.
fn kinds(requests: &[String]) -> Vec<&'static str> {
    requests
        .iter()
        .map(|r| {
            let path = r.split_once(' ').map(|(_, p)| p).unwrap_or(r);
            if path.contains("/referrers/") {
                "referrers"
            } else if path.contains("/blobs/") {
                "blob"
            } else if path.ends_with(".sig") {
                "sig"
            } else if path.contains("/manifests/sha256-") {
                "tag-schema"
            } else if path.contains("/manifests/sha256:") {
                "manifest"
            } else if path.contains("/manifests/") {
                "tag"
            } else {
                "other"
            }
        })
        .collect()
}

fn sorted(mut kinds: Vec<&'static str>) -> Vec<&'static str> {
    kinds.sort_unstable();
    kinds
}

#[rstest::rstest]
#[case::legacy(Format::Legacy, vec!["blob", "referrers", "sig", "tag", "tag-schema"])]
#[case::bundle(Format::Bundle, vec!["blob", "manifest", "referrers", "sig", "tag", "tag-schema"])]
#[tokio::test(flavor = "multi_thread")]
async fn a_verification_costs_the_floor_of_requests(
    #[case] format: Format,
    #[case] cold: Vec<&'static str>,
) {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let pushed = ImageBuilder::new("cold-path")
        .image()
        .push(&registry, "team/cold", "v1", PushWith::Http)
        .await
        .unwrap();
    let key = SigningKey::generate();
    let direct = RegistryClient::new(registry.client_config()).unwrap();
    let image = ImageRef::parse(&pushed.pinned()).unwrap();
    let opts = SignOptions {
        format,
        annotations: BTreeMap::new(),
    };
    signature::sign(&direct, &image, &key, &opts).await.unwrap();

    let proxy = CountingProxy::start(&registry).await.unwrap();
    let client = RegistryClient::new(proxy.client_config()).unwrap();
    let tag = ImageRef::parse(&format!("{}/team/cold:v1", proxy.host())).unwrap();
    let req = Requirements {
        keys: vec![key.public_key()],
        annotations: BTreeMap::new(),
        match_repository: false,
        ..Default::default()
    };
    let pinned = client.resolve(&tag).await.unwrap().pinned;
    let verdict = signature::verify(&client, &pinned, &req).await.unwrap();
    assert!(verdict.is_verified(), "{verdict:?}");
    let seen = proxy.requests();
    assert_eq!(sorted(kinds(&seen)), cold, "{seen:?}");

    // Again by digest: no tag, and the referrers API is not asked again.
    proxy.reset();
    let verdict = signature::verify(&client, &pinned, &req).await.unwrap();
    assert!(verdict.is_verified(), "{verdict:?}");
    let seen = proxy.requests();
    let warm: Vec<&str> = cold
        .iter()
        .copied()
        .filter(|k| !matches!(*k, "tag" | "referrers"))
        .collect();
    assert_eq!(sorted(kinds(&seen)), warm, "{seen:?}");
}
