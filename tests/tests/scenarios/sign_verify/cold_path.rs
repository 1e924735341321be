//! What one verification costs against the real registry (Distribution,
//! which has no referrers API), counted by the proxy in front of it: the
//! requests of a cold verification of a tag, and of the same client asked
//! again by digest once it knows the registry lacks the referrers API; and
//! of `imgate verify` given a digest, which fetches no manifest unless no
//! signature turns up. Counts only: they are deterministic; timings are not.

use std::collections::BTreeMap;

use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Format, Requirements, SignOptions};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::{run_imgate, CountingProxy, ImageBuilder, PushWith, Registry, Variant};

use crate::common::Run;

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

/// `imgate verify REPO@DIGEST --key PUB` through `proxy`, with what it asked for.
fn cli_verify(proxy: &CountingProxy, public: &std::path::Path, image: &str) -> (Run, Vec<String>) {
    proxy.reset();
    let mut args = vec![
        "verify".to_string(),
        "--key".to_string(),
        public.display().to_string(),
        image.to_string(),
    ];
    args.extend(proxy.cli_args());
    let out = run_imgate(&args, &[], None).unwrap();
    (Run::from_output(&out), proxy.requests())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_verifies_a_digest_without_fetching_its_manifest() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let builder = ImageBuilder::new("cli-digest");
    let signed = builder
        .image()
        .push(&registry, "team/digest", "signed", PushWith::Http)
        .await
        .unwrap();
    let unsigned = ImageBuilder::new("cli-digest-unsigned")
        .image()
        .push(&registry, "team/digest", "unsigned", PushWith::Http)
        .await
        .unwrap();
    let key = SigningKey::generate();
    let direct = RegistryClient::new(registry.client_config()).unwrap();
    let opts = SignOptions {
        format: Format::Legacy,
        annotations: BTreeMap::new(),
    };
    let image = ImageRef::parse(&signed.pinned()).unwrap();
    signature::sign(&direct, &image, &key, &opts).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("key.pub");
    std::fs::write(&public, key.public_key().to_pem()).unwrap();

    let proxy = CountingProxy::start(&registry).await.unwrap();
    let at = |digest: &str| format!("{}/team/digest@{digest}", proxy.host());

    // Signed: the signature listings and the signature blob, nothing else.
    let (run, seen) = cli_verify(&proxy, &public, &at(&signed.digest));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&signed.digest), "{run:?}");
    assert_eq!(
        sorted(kinds(&seen)),
        ["blob", "referrers", "sig", "tag-schema"],
        "{seen:?}"
    );

    // Unsigned: a denial, after one look at the manifest to be sure the
    // image exists.
    let (run, seen) = cli_verify(&proxy, &public, &at(&unsigned.digest));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("no signatures found"), "{run:?}");
    assert_eq!(
        sorted(kinds(&seen)),
        ["manifest", "referrers", "sig", "tag-schema"],
        "{seen:?}"
    );

    // Missing: said so, not "no signatures".
    let absent = format!("sha256:{}", "0".repeat(64));
    let (run, _) = cli_verify(&proxy, &public, &at(&absent));
    run.assert_one_line_error(&format!("manifest {absent} not found"));
    assert!(run.stdout.is_empty(), "{run:?}");
}
