//! `imgate trust-root update` (the real binary) against a TUF repository made
//! in the test and served on loopback: the private Sigstore's trusted root
//! arrives intact and verifies signatures; a changed target, metadata from a
//! stranger's root, and a root rotation are handled as TUF says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use imgate_core::sigstore::{verify_legacy_keyless, IdentityPolicy, LegacyKeyless, TrustRoot};
use imgate_tests::bin::run_imgate;
use imgate_tests::sigstore::{simple_signing_payload, LeafSpec, TestSigstore};
use imgate_tests::tuf::TufRepo;

const IDENTITY: &str = "release@imgate.test";
const ISSUER: &str = "https://token.imgate.test";
const DIGEST: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

struct Run {
    code: Option<i32>,
    stderr: String,
    written: Option<Vec<u8>>,
}

fn update(repo: &TufRepo, anchor: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let anchor_path = dir.path().join("root.json");
    std::fs::write(&anchor_path, anchor).unwrap();
    let out = dir.path().join("trusted_root.json");
    let output = run_imgate(
        [
            "trust-root",
            "update",
            "--tuf-url",
            &repo.url(),
            "--tuf-root",
            anchor_path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
        None,
    )
    .unwrap();
    Run {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
        written: std::fs::read(&out).ok(),
    }
}

#[test]
fn update_fetches_the_private_root_and_it_verifies_signatures() {
    let sigstore = TestSigstore::new().unwrap();
    let published = sigstore.trusted_root_json();
    let repo = TufRepo::serve(published.as_bytes()).unwrap();
    let run = update(&repo, repo.first_root());
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let written = run.written.expect("the trusted root was written");
    assert_eq!(written, published.as_bytes());

    let root = TrustRoot::from_json("fetched", &written).unwrap();
    let leaf = sigstore.leaf(&LeafSpec::new(IDENTITY, ISSUER)).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let layer = sigstore.legacy_layer(
        &leaf,
        &simple_signing_payload("registry.imgate.test/app", DIGEST),
        now - 30,
    );
    let verified = verify_legacy_keyless(
        &LegacyKeyless {
            payload: &layer.payload,
            signature_b64: &layer.signature_b64,
            certificate_pem: &layer.cert_pem,
            chain_pem: Some(&layer.chain_pem),
            rekor_bundle: Some(&layer.rekor_bundle),
        },
        DIGEST,
        &IdentityPolicy::exact(IDENTITY, ISSUER),
        &root,
    )
    .unwrap();
    assert_eq!(verified.identity.as_deref(), Some(IDENTITY));
}

#[test]
fn changed_target_is_refused_and_nothing_is_written() {
    let sigstore = TestSigstore::new().unwrap();
    let published = sigstore.trusted_root_json();
    let repo = TufRepo::serve(published.as_bytes()).unwrap();
    // Same length, one URL changed: only the pinned hash can tell.
    let changed = published.replace("rekor.imgate.test", "rekor.imgate.evil");
    assert_eq!(changed.len(), published.len());
    repo.tamper("targets/trusted_root.json", changed.into_bytes())
        .unwrap();
    let run = update(&repo, repo.first_root());
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("integrity check failed"),
        "{}",
        run.stderr
    );
    assert!(run.written.is_none());
}

#[test]
fn metadata_not_signed_by_the_anchor_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let repo = TufRepo::serve(sigstore.trusted_root_json().as_bytes()).unwrap();
    let stranger = TufRepo::serve(sigstore.trusted_root_json().as_bytes()).unwrap();
    // Start from another repository's root: this one's metadata is signed by
    // keys that root does not delegate to.
    let run = update(&repo, stranger.first_root());
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(run.written.is_none());
    // And the embedded public-good TUF root does not vouch for it either.
    let output = run_imgate(
        ["trust-root", "update", "--tuf-url", &repo.url()],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn root_rotation_is_followed_and_new_targets_arrive() {
    let first = TestSigstore::new().unwrap();
    let mut repo = TufRepo::serve(first.trusted_root_json().as_bytes()).unwrap();
    let anchor = repo.first_root().to_vec();
    repo.rotate_root().unwrap();
    let second = TestSigstore::new().unwrap().trusted_root_json();
    repo.publish(second.as_bytes()).unwrap();
    let run = update(&repo, &anchor);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.written.unwrap(), second.as_bytes());
}
