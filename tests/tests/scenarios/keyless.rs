//! Legacy keyless signatures (certificate, chain and Rekor SET annotations
//! on a simple-signing layer) verified by `core::sigstore` against a private
//! Sigstore built by the harness, and the tamper matrix: every change an
//! attacker could make is refused, and for the right reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use imgate_core::sigstore::{
    verify_legacy_key, verify_legacy_keyless, IdentityPolicy, LegacyKeyless, Matcher,
    SigstoreError, TlogMode, TrustRoot, VerifiedSignature,
};
use imgate_tests::sigstore::{simple_signing_payload, LeafSpec, LegacyLayer, TestSigstore};

const IDENTITY: &str =
    "https://ci.imgate.test/org/app/.github/workflows/release.yml@refs/heads/main";
const ISSUER: &str = "https://token.imgate.test";
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_DIGEST: &str =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn root(sigstore: &TestSigstore) -> TrustRoot {
    TrustRoot::from_json("test-root.json", sigstore.trusted_root_json().as_bytes()).unwrap()
}

fn verify_layer(
    layer: &LegacyLayer,
    digest: &str,
    policy: &IdentityPolicy,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    verify_legacy_keyless(
        &LegacyKeyless {
            payload: &layer.payload,
            signature_b64: &layer.signature_b64,
            certificate_pem: &layer.cert_pem,
            chain_pem: Some(&layer.chain_pem),
            rekor_bundle: Some(&layer.rekor_bundle),
        },
        digest,
        policy,
        root,
    )
}

fn good_layer(sigstore: &TestSigstore) -> LegacyLayer {
    let leaf = sigstore.leaf(&LeafSpec::new(IDENTITY, ISSUER)).unwrap();
    sigstore.legacy_layer(
        &leaf,
        &simple_signing_payload("registry.imgate.test/app", DIGEST),
        now() - 30,
    )
}

fn policy() -> IdentityPolicy {
    IdentityPolicy::exact(IDENTITY, ISSUER)
}

#[test]
fn legacy_keyless_signature_verifies_by_identity_at_log_time() {
    let sigstore = TestSigstore::new().unwrap();
    let root = root(&sigstore);
    let layer = good_layer(&sigstore);
    let verified = verify_layer(&layer, DIGEST, &policy(), &root).unwrap();
    assert_eq!(verified.identity.as_deref(), Some(IDENTITY));
    assert_eq!(verified.issuer.as_deref(), Some(ISSUER));
    assert!(verified.tlog_verified);
    let logged = serde_json::from_str::<serde_json::Value>(&layer.rekor_bundle).unwrap()["Payload"]
        ["integratedTime"]
        .as_i64();
    assert_eq!(verified.signed_at, logged);
    assert_eq!(verified.trust_root, root.fingerprint());
    // The public-good root does not know this CA.
    let public = TrustRoot::embedded().unwrap();
    assert!(verify_layer(&layer, DIGEST, &policy(), &public).is_err());
}

#[test]
fn wrong_identity_is_refused_and_both_are_named() {
    let sigstore = TestSigstore::new().unwrap();
    let layer = good_layer(&sigstore);
    let wanted = IdentityPolicy::exact(
        "https://ci.imgate.test/org/other/x.yml@refs/heads/main",
        ISSUER,
    );
    match verify_layer(&layer, DIGEST, &wanted, &root(&sigstore)) {
        Err(SigstoreError::IdentityMismatch { found, wanted }) => {
            assert_eq!(found, IDENTITY);
            assert!(wanted.contains("org/other"), "{wanted}");
        }
        other => panic!("wanted an identity mismatch, got {other:?}"),
    }
    // An anchored regex that only matches a prefix is not enough either.
    let prefix = IdentityPolicy {
        subject: Matcher::regex("subjectRegExp", r"https://ci\.imgate\.test/org").unwrap(),
        issuer: Matcher::exact(ISSUER),
        extensions: Default::default(),
    };
    assert!(matches!(
        verify_layer(&layer, DIGEST, &prefix, &root(&sigstore)),
        Err(SigstoreError::IdentityMismatch { .. })
    ));
}

#[test]
fn wrong_issuer_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let layer = good_layer(&sigstore);
    let wanted = IdentityPolicy::exact(IDENTITY, "https://accounts.google.com");
    match verify_layer(&layer, DIGEST, &wanted, &root(&sigstore)) {
        Err(SigstoreError::IssuerMismatch { found, .. }) => assert_eq!(found, ISSUER),
        other => panic!("wanted an issuer mismatch, got {other:?}"),
    }
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let stranger = TestSigstore::new().unwrap();
    let leaf = stranger.leaf(&LeafSpec::new(IDENTITY, ISSUER)).unwrap();
    // Logged (SET) by the trusted Rekor, but issued by an untrusted CA.
    let layer = sigstore.legacy_layer(
        &leaf,
        &simple_signing_payload("registry.imgate.test/app", DIGEST),
        now() - 30,
    );
    let err = verify_layer(&layer, DIGEST, &policy(), &root(&sigstore)).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn expired_certificate_needs_the_log_time() {
    let sigstore = TestSigstore::new().unwrap();
    let root = root(&sigstore);
    let mut spec = LeafSpec::new(IDENTITY, ISSUER);
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    spec.not_before = start;
    spec.not_after = start + time::Duration::minutes(10);
    let leaf = sigstore.leaf(&spec).unwrap();
    let payload = simple_signing_payload("registry.imgate.test/app", DIGEST);
    let inside = start.unix_timestamp() + 60;

    // Logged inside the ten minutes: valid, though the certificate has expired.
    let layer = sigstore.legacy_layer(&leaf, &payload, inside);
    verify_layer(&layer, DIGEST, &policy(), &root).unwrap();

    // No log entry: the clock alone says expired, and nothing else vouches.
    let err = verify_legacy_keyless(
        &LegacyKeyless {
            payload: &layer.payload,
            signature_b64: &layer.signature_b64,
            certificate_pem: &layer.cert_pem,
            chain_pem: Some(&layer.chain_pem),
            rekor_bundle: None,
        },
        DIGEST,
        &policy(),
        &root,
    )
    .unwrap_err();
    assert!(err.to_string().contains("Rekor"), "{err}");

    // Logged after the certificate expired.
    let late = sigstore.legacy_layer(&leaf, &payload, start.unix_timestamp() + 3600);
    let err = verify_layer(&late, DIGEST, &policy(), &root).unwrap_err();
    assert!(err.to_string().contains("certificate chain"), "{err}");
}

#[test]
fn forged_set_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let layer = good_layer(&sigstore);
    let mut doc: serde_json::Value = serde_json::from_str(&layer.rekor_bundle).unwrap();
    // A SET by another log key, over the very same payload.
    let forger = TestSigstore::new().unwrap();
    let forged: serde_json::Value = serde_json::from_str(
        &forger
            .legacy_layer(
                &sigstore.leaf(&LeafSpec::new(IDENTITY, ISSUER)).unwrap(),
                &layer.payload,
                now() - 30,
            )
            .rekor_bundle,
    )
    .unwrap();
    doc["SignedEntryTimestamp"] = forged["SignedEntryTimestamp"].clone();
    let mut bad = layer.clone();
    bad.rekor_bundle = doc.to_string();
    let err = verify_layer(&bad, DIGEST, &policy(), &root(&sigstore)).unwrap_err();
    assert!(err.to_string().contains("inclusion promise"), "{err}");

    // The integrated time moved by a second: the SET no longer covers it.
    let mut doc: serde_json::Value = serde_json::from_str(&layer.rekor_bundle).unwrap();
    let t = doc["Payload"]["integratedTime"].as_i64().unwrap();
    doc["Payload"]["integratedTime"] = serde_json::json!(t - 1);
    let mut moved = layer.clone();
    moved.rekor_bundle = doc.to_string();
    let err = verify_layer(&moved, DIGEST, &policy(), &root(&sigstore)).unwrap_err();
    assert!(err.to_string().contains("inclusion promise"), "{err}");
}

#[test]
fn log_entry_for_another_signature_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let leaf = sigstore.leaf(&LeafSpec::new(IDENTITY, ISSUER)).unwrap();
    let payload = simple_signing_payload("registry.imgate.test/app", DIGEST);
    let layer = sigstore.legacy_layer(&leaf, &payload, now() - 30);
    // A genuine entry, but for another signature by the same certificate.
    let other = sigstore.legacy_layer(
        &leaf,
        &simple_signing_payload("registry.imgate.test/app", OTHER_DIGEST),
        now() - 30,
    );
    let mut bad = layer.clone();
    bad.rekor_bundle = other.rekor_bundle;
    let err = verify_layer(&bad, DIGEST, &policy(), &root(&sigstore)).unwrap_err();
    assert!(err.to_string().contains("hashedrekord"), "{err}");
}

#[test]
fn certificate_without_sct_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let mut spec = LeafSpec::new(IDENTITY, ISSUER);
    spec.sct = false;
    let leaf = sigstore.leaf(&spec).unwrap();
    let layer = sigstore.legacy_layer(
        &leaf,
        &simple_signing_payload("registry.imgate.test/app", DIGEST),
        now() - 30,
    );
    let err = verify_layer(&layer, DIGEST, &policy(), &root(&sigstore)).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("sct"), "{err}");
}

#[test]
fn signature_for_another_digest_is_not_replayed() {
    let sigstore = TestSigstore::new().unwrap();
    let layer = good_layer(&sigstore);
    match verify_layer(&layer, OTHER_DIGEST, &policy(), &root(&sigstore)) {
        Err(SigstoreError::DigestMismatch { found, wanted }) => {
            assert_eq!(found, DIGEST);
            assert_eq!(wanted, OTHER_DIGEST);
        }
        other => panic!("wanted a digest mismatch, got {other:?}"),
    }
}

#[test]
fn changed_payload_or_signature_is_refused() {
    let sigstore = TestSigstore::new().unwrap();
    let layer = good_layer(&sigstore);
    let mut payload = layer.clone();
    payload.payload = simple_signing_payload("registry.imgate.test/other", DIGEST);
    assert!(verify_layer(&payload, DIGEST, &policy(), &root(&sigstore)).is_err());

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sig = b64.decode(&layer.signature_b64).unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let mut bad = layer.clone();
    bad.signature_b64 = b64.encode(sig);
    assert!(verify_layer(&bad, DIGEST, &policy(), &root(&sigstore)).is_err());
}

fn verify_key(
    layer: &imgate_tests::sigstore::KeyLayer,
    rekor: Option<&str>,
    tlog: TlogMode,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    verify_legacy_key(
        &layer.payload,
        &layer.signature_b64,
        rekor,
        (&layer.spki_der, "ci.pub"),
        tlog,
        DIGEST,
        root,
    )
}

#[test]
fn key_signature_log_entry_is_checked_as_the_tlog_mode_says() {
    let sigstore = TestSigstore::new().unwrap();
    let root = root(&sigstore);
    let payload = simple_signing_payload("registry.imgate.test/app", DIGEST);
    let layer = sigstore.key_layer(&payload, now() - 30).unwrap();

    for mode in [TlogMode::Required, TlogMode::IfPresent] {
        let verified = verify_key(&layer, Some(&layer.rekor_bundle), mode, &root).unwrap();
        assert!(verified.tlog_verified, "{mode:?}");
        assert_eq!(verified.key.as_deref(), Some("ci.pub"));
        assert!(verified.signed_at.is_some(), "{mode:?}: the log time");
    }
    // No entry: required says no, ifPresent and ignore verify the key alone.
    let err = verify_key(&layer, None, TlogMode::Required, &root).unwrap_err();
    assert!(err.to_string().contains("Rekor"), "{err}");
    let alone = verify_key(&layer, None, TlogMode::IfPresent, &root).unwrap();
    assert!(!alone.tlog_verified);

    // A present entry that does not verify is a rejection, not a pass.
    let stranger = TestSigstore::new().unwrap();
    let forged = stranger.key_layer(&payload, now() - 30).unwrap();
    let err = verify_key(
        &layer,
        Some(&forged.rekor_bundle),
        TlogMode::IfPresent,
        &root,
    )
    .unwrap_err();
    assert!(err.is_rejection(), "{err}");
    // An entry for another key, from the trusted log.
    let other = sigstore.key_layer(&payload, now() - 30).unwrap();
    let err = verify_key(&layer, Some(&other.rekor_bundle), TlogMode::Required, &root).unwrap_err();
    assert!(err.is_rejection(), "{err}");
    // Ignore skips the log, but never the signature or the digest.
    let mut bad = layer.clone();
    bad.payload = simple_signing_payload("registry.imgate.test/app", OTHER_DIGEST);
    assert!(verify_key(&bad, Some(&layer.rekor_bundle), TlogMode::Ignore, &root).is_err());
    let other_digest = verify_legacy_key(
        &layer.payload,
        &layer.signature_b64,
        None,
        (&layer.spki_der, "ci.pub"),
        TlogMode::Ignore,
        OTHER_DIGEST,
        &root,
    );
    assert!(matches!(
        other_digest,
        Err(SigstoreError::DigestMismatch { .. })
    ));
}
