//! `core::sigstore` against data made by real cosign: a v3 keyless bundle
//! (Fulcio certificate, Rekor entry with inclusion proof) and the Rekor SET
//! of a real key-signed `.sig` layer, both checked with the embedded
//! public-good trusted root.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use imgate_core::sigstore::{
    verify_bundle_bytes, ArtifactInput, BundlePolicy, IdentityPolicy, Matcher, RekorBundle,
    SigstoreError, TrustRoot,
};

const IDENTITY: &str =
    "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/cosign")
        .join(name)
}

fn bundle() -> Vec<u8> {
    std::fs::read(fixture("bundle-v03-keyless.json")).unwrap()
}

fn digest(hex_str: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).unwrap();
    out
}

fn verify(policy: IdentityPolicy, subject: &str) -> Result<String, SigstoreError> {
    let root = TrustRoot::embedded().unwrap();
    verify_bundle_bytes(
        &bundle(),
        ArtifactInput::Sha256(digest(subject)),
        &BundlePolicy::Keyless(policy),
        &root,
    )
    .map(|v| v.identity.unwrap_or_default())
}

#[test]
fn cosign_v3_keyless_bundle_verifies_by_its_identity() {
    let root = TrustRoot::embedded().unwrap();
    let verified = verify_bundle_bytes(
        &bundle(),
        ArtifactInput::Sha256(digest(SUBJECT)),
        &BundlePolicy::Keyless(IdentityPolicy::exact(IDENTITY, ISSUER)),
        &root,
    )
    .unwrap();
    assert_eq!(verified.identity.as_deref(), Some(IDENTITY));
    assert_eq!(verified.issuer.as_deref(), Some(ISSUER));
    assert!(verified.tlog_verified);
    // Integrated 2026-04-09 (1775719409): the log time, not the clock.
    assert_eq!(verified.signed_at, Some(1_775_719_409));
    assert_eq!(verified.trust_root, root.fingerprint());
}

#[test]
fn anchored_regexes_select_the_same_signer() {
    let policy = IdentityPolicy {
        subject: Matcher::regex(
            "subjectRegExp",
            r"https://github\.com/kubewarden/.*/\.github/workflows/release\.yml@refs/tags/v.*",
        )
        .unwrap(),
        issuer: Matcher::regex(
            "issuerRegExp",
            r"https://token\.actions\.githubusercontent\.com",
        )
        .unwrap(),
        extensions: Default::default(),
    }
    .with_extension(
        "github-workflow-repository",
        Matcher::exact("kubewarden/kubewarden-controller"),
    )
    .unwrap();
    assert_eq!(verify(policy, SUBJECT).unwrap(), IDENTITY);

    // A prefix of the identity is not a match: the regex is anchored.
    let prefix = IdentityPolicy {
        subject: Matcher::regex("subjectRegExp", r"https://github\.com/kubewarden").unwrap(),
        issuer: Matcher::exact(ISSUER),
        extensions: Default::default(),
    };
    assert!(matches!(
        verify(prefix, SUBJECT),
        Err(SigstoreError::IdentityMismatch { .. })
    ));
}

#[test]
fn another_identity_is_refused_and_named() {
    let other = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/ci.yml@refs/heads/main";
    let err = verify(IdentityPolicy::exact(other, ISSUER), SUBJECT).unwrap_err();
    match &err {
        SigstoreError::IdentityMismatch { found, wanted } => {
            assert_eq!(found, IDENTITY);
            assert!(wanted.contains("ci.yml"), "{wanted}");
        }
        other => panic!("wanted an identity mismatch, got {other}"),
    }
    assert!(err.is_rejection());
}

#[test]
fn another_issuer_is_refused_and_named() {
    let err = verify(
        IdentityPolicy::exact(IDENTITY, "https://accounts.google.com"),
        SUBJECT,
    )
    .unwrap_err();
    match err {
        SigstoreError::IssuerMismatch { found, wanted } => {
            assert_eq!(found, ISSUER);
            assert!(wanted.contains("accounts.google.com"), "{wanted}");
        }
        other => panic!("wanted an issuer mismatch, got {other}"),
    }
}

#[test]
fn another_digest_is_refused() {
    let other = "c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50173";
    let err = verify(IdentityPolicy::exact(IDENTITY, ISSUER), other).unwrap_err();
    assert!(err.is_rejection(), "{err}");
    assert!(err.to_string().contains("mismatch"), "{err}");
}

fn rekor_vector() -> RekorBundle {
    let text = std::fs::read_to_string(fixture("rekor-set-vector-1.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let annotation = doc["annotations"]["dev.sigstore.cosign/bundle"]
        .as_str()
        .unwrap();
    RekorBundle::parse(annotation.as_bytes()).unwrap()
}

#[test]
fn real_rekor_set_verifies_with_the_public_good_key() {
    let root = TrustRoot::embedded().unwrap();
    let set = rekor_vector();
    set.verify_set(&root).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&set.body().unwrap()).unwrap();
    assert_eq!(body["kind"], "hashedrekord");
}

#[test]
fn real_rekor_set_fails_with_any_byte_changed() {
    let root = TrustRoot::embedded().unwrap();
    let good = rekor_vector();
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig = b64.decode(&good.signed_entry_timestamp).unwrap();
    let mut accepted = Vec::new();
    for i in 0..sig.len() {
        let mut bad = good.clone();
        let mut s = sig.clone();
        s[i] ^= 0x01;
        bad.signed_entry_timestamp = b64.encode(&s);
        if bad.verify_set(&root).is_ok() {
            accepted.push(format!("SET byte {i}"));
        }
    }
    let body = good.body().unwrap();
    for i in 0..body.len() {
        let mut bad = good.clone();
        let mut b = body.clone();
        b[i] ^= 0x01;
        bad.payload.body = b64.encode(&b);
        if bad.verify_set(&root).is_ok() {
            accepted.push(format!("body byte {i}"));
        }
    }
    for (what, delta) in [("integratedTime", 1i64), ("logIndex", 1)] {
        let mut bad = good.clone();
        if what == "integratedTime" {
            bad.payload.integrated_time += delta;
        } else {
            bad.payload.log_index += delta;
        }
        if bad.verify_set(&root).is_ok() {
            accepted.push(what.to_string());
        }
    }
    let mut bad = good.clone();
    bad.payload.log_id = bad.payload.log_id.replace('c', "d");
    assert!(bad.verify_set(&root).is_err(), "another log id");
    assert!(accepted.is_empty(), "accepted after a change: {accepted:?}");
}
