//! What keyless verification costs on the webhook's hot path, with no
//! network: one cosign v3 keyless bundle (certificate chain, SCT, Rekor
//! inclusion proof and checkpoint, DSSE signature) verified against the
//! embedded public-good root, and the one-off cost of loading that root.
//!
//! `cargo bench -p imgate-core --bench keyless`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use imgate_core::sigstore::{
    verify_bundle_bytes, ArtifactInput, BundlePolicy, IdentityPolicy, TrustRoot,
};

const IDENTITY: &str =
    "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";

fn keyless(c: &mut Criterion) {
    let bundle = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/cosign/bundle-v03-keyless.json"
    ))
    .unwrap();
    let mut digest = [0u8; 32];
    hex::decode_to_slice(SUBJECT, &mut digest).unwrap();
    let policy = BundlePolicy::Keyless(IdentityPolicy::exact(IDENTITY, ISSUER));
    let root = TrustRoot::embedded().unwrap();

    c.bench_function("keyless/verify_v03_bundle", |b| {
        b.iter(|| {
            verify_bundle_bytes(&bundle, ArtifactInput::Sha256(digest), &policy, &root).unwrap()
        })
    });
    c.bench_function("keyless/load_embedded_root", |b| {
        b.iter(|| TrustRoot::embedded().unwrap())
    });
}

criterion_group!(benches, keyless);
criterion_main!(benches);
