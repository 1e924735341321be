//! The checks against real cosign data and generated signatures.

use super::*;
use crate::sigstore::{IdentityPolicy, TlogMode};
use base64::Engine as _;
use imgate_keys::{PublicKey, SigningKey};

const VECTOR_PAYLOAD: &[u8] =
    include_bytes!("../../../../fixtures/cosign/signature-vector-1.payload.json");
const VECTOR_SIG: &str = include_str!("../../../../fixtures/cosign/signature-vector-1.sig.b64");
const VECTOR_PUB: &[u8] = include_bytes!("../../../../fixtures/cosign/signature-vector-1.pub");
const VECTOR_DIGEST: &str =
    "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
const VECTOR_REPO: &str = "registry-testing.svc.lan/busybox";
const KEYLESS: &[u8] = include_bytes!("../../../../fixtures/cosign/bundle-v03-keyless.json");
const KEYLESS_PUB: &[u8] =
    include_bytes!("../../../../fixtures/cosign/bundle-v03-keyless-leaf.pub");
const KEYLESS_DIGEST: &str =
    "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";

fn req(keys: Vec<PublicKey>) -> Requirements {
    Requirements {
        keys,
        ..Requirements::default()
    }
}

/// `super::legacy` for a layer carrying only a signature annotation.
fn legacy(
    index: usize,
    payload: &[u8],
    signature: Option<&str>,
    digest: &Digest,
    repository: &str,
    req: &Requirements,
) -> Result<Verified, Vec<Unmet>> {
    let ann = LayerAnnotations {
        signature: signature.map(str::to_string),
        ..LayerAnnotations::default()
    };
    super::legacy(index, payload, &ann, digest, repository, req)
}

/// `super::bundle` for an image in [`VECTOR_REPO`].
fn bundle(
    index: usize,
    bytes: &[u8],
    digest: &Digest,
    req: &Requirements,
) -> Result<Verified, Vec<Unmet>> {
    super::bundle(index, bytes, digest, VECTOR_REPO, req)
}

fn vector_key() -> PublicKey {
    PublicKey::from_pem(VECTOR_PUB, "vector.pub").unwrap()
}

fn digest(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

#[test]
fn real_cosign_signature_verifies() {
    let v = legacy(
        1,
        VECTOR_PAYLOAD,
        Some(VECTOR_SIG.trim()),
        &digest(VECTOR_DIGEST),
        VECTOR_REPO,
        &req(vec![vector_key()]),
    )
    .unwrap();
    assert_eq!(v.key, "vector.pub");
    assert_eq!(v.format, Format::Legacy);
    assert_eq!(v.digest.as_str(), VECTOR_DIGEST);
}

#[test]
fn real_cosign_signature_fails_with_any_payload_byte_changed() {
    let r = req(vec![vector_key()]);
    for i in 0..VECTOR_PAYLOAD.len() {
        let mut tampered = VECTOR_PAYLOAD.to_vec();
        tampered[i] ^= 0x01;
        let err = legacy(
            1,
            &tampered,
            Some(VECTOR_SIG.trim()),
            &digest(VECTOR_DIGEST),
            VECTOR_REPO,
            &r,
        )
        .unwrap_err();
        assert!(
            matches!(err[..], [Unmet::WrongKey { .. }]),
            "byte {i}: {err:?}"
        );
    }
}

#[test]
fn real_cosign_signature_fails_with_any_signature_byte_changed() {
    let r = req(vec![vector_key()]);
    let der = bundle::decode_base64(VECTOR_SIG).unwrap();
    for i in 0..der.len() {
        let mut tampered = der.clone();
        tampered[i] ^= 0x01;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&tampered);
        assert!(
            legacy(
                1,
                VECTOR_PAYLOAD,
                Some(&b64),
                &digest(VECTOR_DIGEST),
                VECTOR_REPO,
                &r
            )
            .is_err(),
            "signature byte {i}"
        );
    }
}

#[test]
fn signature_with_line_breaks_is_read() {
    let sig = VECTOR_SIG.trim();
    let wrapped = format!("{}\n{}\n", &sig[..40], &sig[40..]);
    assert!(legacy(
        1,
        VECTOR_PAYLOAD,
        Some(&wrapped),
        &digest(VECTOR_DIGEST),
        VECTOR_REPO,
        &req(vec![vector_key()])
    )
    .is_ok());
}

#[test]
fn legacy_unmet_reasons() {
    let other = SigningKey::generate().public_key().with_name("other.pub");
    let d = digest(VECTOR_DIGEST);
    let sig = Some(VECTOR_SIG.trim());
    // Wrong key: the payload is not inspected.
    let err = legacy(
        1,
        VECTOR_PAYLOAD,
        sig,
        &Digest::sha256(b"x"),
        VECTOR_REPO,
        &req(vec![other.clone()]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        vec![Unmet::WrongKey {
            signature: SignatureId {
                index: 1,
                format: Format::Legacy
            },
            keys: vec!["other.pub".into()]
        }]
    );
    // Any of several keys may satisfy.
    assert!(legacy(
        1,
        VECTOR_PAYLOAD,
        sig,
        &d,
        VECTOR_REPO,
        &req(vec![other, vector_key()])
    )
    .is_ok());
    // Another digest.
    let want = Digest::sha256(b"x");
    let err = legacy(
        2,
        VECTOR_PAYLOAD,
        sig,
        &want,
        VECTOR_REPO,
        &req(vec![vector_key()]),
    )
    .unwrap_err();
    assert!(
        matches!(&err[..], [Unmet::DigestMismatch { found, want: w, signature }] if found == VECTOR_DIGEST && *w == want && signature.index == 2),
        "{err:?}"
    );
    // Repository matching is off by default, on when asked.
    assert!(legacy(
        1,
        VECTOR_PAYLOAD,
        sig,
        &d,
        "mirror.example/busybox",
        &req(vec![vector_key()])
    )
    .is_ok());
    let mut r = req(vec![vector_key()]);
    r.match_repository = true;
    assert!(legacy(1, VECTOR_PAYLOAD, sig, &d, VECTOR_REPO, &r).is_ok());
    let err = legacy(1, VECTOR_PAYLOAD, sig, &d, "mirror.example/busybox", &r).unwrap_err();
    assert!(
        matches!(&err[..], [Unmet::RepositoryMismatch { found, .. }] if found == VECTOR_REPO),
        "{err:?}"
    );
    // Required annotation absent (optional is null).
    let mut r = req(vec![vector_key()]);
    r.annotations.insert("env".into(), "prod".into());
    let err = legacy(1, VECTOR_PAYLOAD, sig, &d, VECTOR_REPO, &r).unwrap_err();
    assert!(
        matches!(&err[..], [Unmet::MissingAnnotation { key, found: None, .. }] if key == "env"),
        "{err:?}"
    );
    // No signature annotation, or not base64.
    assert!(matches!(
        legacy(
            1,
            VECTOR_PAYLOAD,
            None,
            &d,
            VECTOR_REPO,
            &req(vec![vector_key()])
        )
        .unwrap_err()[..],
        [Unmet::Malformed { .. }]
    ));
    assert!(matches!(
        legacy(
            1,
            VECTOR_PAYLOAD,
            Some("%%"),
            &d,
            VECTOR_REPO,
            &req(vec![vector_key()])
        )
        .unwrap_err()[..],
        [Unmet::Malformed { .. }]
    ));
}

#[test]
fn generated_key_legacy_round_trip_with_annotations() {
    let key = SigningKey::generate();
    let d = Digest::sha256(b"image");
    let ann = BTreeMap::from([("env".to_string(), "staging".to_string())]);
    let body = payload::build("localhost:5000/app", &d, &ann);
    let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&body));
    let mut r = req(vec![key.public_key()]);
    let v = legacy(1, &body, Some(&sig), &d, "localhost:5000/app", &r).unwrap();
    assert_eq!(v.annotations, ann);
    r.annotations.insert("env".into(), "prod".into());
    let err = legacy(1, &body, Some(&sig), &d, "localhost:5000/app", &r).unwrap_err();
    assert_eq!(
        err[0].to_string(),
        "signature 1 (legacy): annotation env: want prod, found staging"
    );
}

const KEYLESS_IDENTITY: &str =
    "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const KEYLESS_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn keyless_req(identities: Vec<IdentityPolicy>) -> Requirements {
    Requirements {
        keyless: identities.into_iter().map(Into::into).collect(),
        ..Requirements::default()
    }
}

#[test]
fn real_cosign_v3_keyless_bundle_verifies_by_identity() {
    assert!(is_signature_bundle(KEYLESS));
    let d = digest(KEYLESS_DIGEST);
    let wanted = IdentityPolicy::exact(KEYLESS_IDENTITY, KEYLESS_ISSUER);
    let v = bundle(1, KEYLESS, &d, &keyless_req(vec![wanted.clone()])).unwrap();
    assert_eq!(v.format, Format::Bundle);
    assert_eq!(v.key, format!("{KEYLESS_IDENTITY} from {KEYLESS_ISSUER}"));
    // Any one authority may satisfy.
    let other = IdentityPolicy::exact("someone@example.com", KEYLESS_ISSUER);
    assert!(bundle(1, KEYLESS, &d, &keyless_req(vec![other.clone(), wanted])).is_ok());
    // Another identity: the denial names the one found and the one wanted.
    let err = bundle(1, KEYLESS, &d, &keyless_req(vec![other])).unwrap_err();
    let text = err[0].to_string();
    assert!(matches!(err[..], [Unmet::Keyless { .. }]), "{err:?}");
    assert!(
        text.contains(KEYLESS_IDENTITY) && text.contains("someone@example.com"),
        "{text}"
    );
    // Another issuer.
    let err = bundle(
        1,
        KEYLESS,
        &d,
        &keyless_req(vec![IdentityPolicy::exact(
            KEYLESS_IDENTITY,
            "https://accounts.google.com",
        )]),
    )
    .unwrap_err();
    assert!(
        err[0].to_string().contains("https://accounts.google.com"),
        "{err:?}"
    );
    // Another digest: the subject does not name it.
    let err = bundle(
        1,
        KEYLESS,
        &Digest::sha256(b"x"),
        &keyless_req(vec![IdentityPolicy::exact(
            KEYLESS_IDENTITY,
            KEYLESS_ISSUER,
        )]),
    )
    .unwrap_err();
    assert!(!err.is_empty(), "{err:?}");
}

#[test]
fn keyless_bundle_is_not_accepted_by_a_key_rule() {
    // Even the leaf certificate's own key: a certificate-signed
    // signature needs a keyless authority (and its log evidence).
    let key = PublicKey::from_pem(KEYLESS_PUB, "leaf.pub").unwrap();
    let err = bundle(1, KEYLESS, &digest(KEYLESS_DIGEST), &req(vec![key])).unwrap_err();
    assert!(matches!(err[..], [Unmet::Keyless { .. }]), "{err:?}");
    assert!(err[0].to_string().contains("no keyless signer"), "{err:?}");
}

#[test]
fn key_signature_is_not_accepted_by_a_keyless_rule() {
    let err = legacy(
        1,
        VECTOR_PAYLOAD,
        Some(VECTOR_SIG.trim()),
        &digest(VECTOR_DIGEST),
        VECTOR_REPO,
        &keyless_req(vec![IdentityPolicy::exact("a@example.com", KEYLESS_ISSUER)]),
    )
    .unwrap_err();
    assert!(err[0].to_string().contains("not a certificate"), "{err:?}");
}

#[test]
fn required_tlog_denies_a_key_signature_without_one() {
    let mut r = req(vec![vector_key()]);
    r.tlog = TlogMode::Required;
    let err = legacy(
        1,
        VECTOR_PAYLOAD,
        Some(VECTOR_SIG.trim()),
        &digest(VECTOR_DIGEST),
        VECTOR_REPO,
        &r,
    )
    .unwrap_err();
    assert!(matches!(err[..], [Unmet::Tlog { .. }]), "{err:?}");
    r.tlog = TlogMode::Ignore;
    assert!(legacy(
        1,
        VECTOR_PAYLOAD,
        Some(VECTOR_SIG.trim()),
        &digest(VECTOR_DIGEST),
        VECTOR_REPO,
        &r
    )
    .is_ok());
}

#[test]
fn real_bundle_with_a_changed_subject_fails() {
    let wanted = || {
        keyless_req(vec![IdentityPolicy::exact(
            KEYLESS_IDENTITY,
            KEYLESS_ISSUER,
        )])
    };
    let mut json: serde_json::Value = serde_json::from_slice(KEYLESS).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(json["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let changed = String::from_utf8(payload)
        .unwrap()
        .replace("c811d58d", "d811d58d");
    let new_digest = digest(&KEYLESS_DIGEST.replace("c811d58d", "d811d58d"));
    json["dsseEnvelope"]["payload"] = b64.encode(changed).into();
    let tampered = serde_json::to_vec(&json).unwrap();
    for d in [digest(KEYLESS_DIGEST), new_digest] {
        let err = bundle(1, &tampered, &d, &wanted()).unwrap_err();
        assert!(matches!(err[..], [Unmet::Keyless { .. }]), "{err:?}");
    }
    // The payload type is covered too.
    let mut json: serde_json::Value = serde_json::from_slice(KEYLESS).unwrap();
    json["dsseEnvelope"]["payloadType"] = "application/json".into();
    let err = bundle(
        1,
        &serde_json::to_vec(&json).unwrap(),
        &digest(KEYLESS_DIGEST),
        &wanted(),
    )
    .unwrap_err();
    assert!(matches!(err[..], [Unmet::Keyless { .. }]), "{err:?}");
}

#[test]
fn generated_key_bundle_round_trip_and_annotations() {
    let key = SigningKey::generate();
    let d = Digest::sha256(b"image");
    let ann = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    let statement = bundle::build_statement(&d, &ann);
    let sig = key.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &statement));
    let bytes = bundle::build_bundle(&statement, &sig, &key.public_key().hint());
    let mut r = req(vec![key.public_key()]);
    r.annotations = ann.clone();
    assert_eq!(bundle(1, &bytes, &d, &r).unwrap().annotations, ann);
    r.annotations.insert("team".into(), "a".into());
    let err = bundle(3, &bytes, &d, &r).unwrap_err();
    assert_eq!(
        err[0].to_string(),
        "signature 3 (bundle): annotation team: want a, found none"
    );
    assert!(matches!(
        bundle(1, b"{}", &d, &r).unwrap_err()[..],
        [Unmet::Malformed { .. }]
    ));
}

#[test]
fn a_bundle_never_satisfies_match_repository() {
    let key = SigningKey::generate();
    let d = Digest::sha256(b"image");
    let statement = bundle::build_statement(&d, &BTreeMap::new());
    let sig = key.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &statement));
    let bytes = bundle::build_bundle(&statement, &sig, &key.public_key().hint());
    let mut r = req(vec![key.public_key()]);
    assert!(bundle(1, &bytes, &d, &r).is_ok());
    r.match_repository = true;
    let err = bundle(2, &bytes, &d, &r).unwrap_err();
    assert_eq!(
        err,
        vec![Unmet::NoRepository {
            signature: SignatureId {
                index: 2,
                format: Format::Bundle
            },
            want: VECTOR_REPO.to_string(),
        }]
    );
    assert!(
        err[0].to_string().contains("names no repository"),
        "{}",
        err[0]
    );
}

#[test]
fn attestations_are_not_signatures() {
    let key = SigningKey::generate();
    let statement = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"https://slsa.dev/provenance/v1","predicate":{}}"#;
    let sig = key.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, statement));
    let bytes = bundle::build_bundle(statement, &sig, "");
    assert!(!is_signature_bundle(&bytes));
    assert!(is_signature_bundle(b"garbage"));
}
