//! Interop with real cosign: keys, signatures and a v3 bundle made by
//! cosign (fixtures/cosign/, copied from shared/fixtures/cosign/), plus keys
//! made by openssl (fixtures/keys/openssl/). These are the acceptance checks
//! for the key format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use imgate_keys::{load_public_key, load_signing_key, KeyError, PublicKey, SigningKey};
use sha2::{Digest as _, Sha256};

/// `openssl/...` from fixtures/keys, everything else from the one copy of
/// the cosign data in fixtures/cosign.
fn fixture(name: &str) -> PathBuf {
    let dir = if name.starts_with("openssl/") {
        "../fixtures/keys"
    } else {
        "../fixtures/cosign"
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(name)
}

fn fixture_str(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// The DER inside a PEM file, decoded independently of the crate's reader.
fn pem_der(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(text.to_vec()).unwrap();
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(b64).unwrap()
}

#[test]
fn cosign_generated_key_decrypts_with_empty_password_and_matches_its_public_key() {
    let key = load_signing_key(&fixture_str("cosign-generated-empty-password.key"), b"").unwrap();
    let expected = load_public_key(&fixture_str("cosign-generated-empty-password.pub")).unwrap();
    assert_eq!(key.public_key(), expected);
    // The same PEM text cosign's tooling wrote (the fixture has one extra
    // trailing newline).
    let written = String::from_utf8(read("cosign-generated-empty-password.pub")).unwrap();
    assert_eq!(key.public_key().to_pem().trim_end(), written.trim_end());

    let msg = b"{\"critical\":{}}";
    let sig = key.sign(msg);
    expected.verify(msg, &sig).unwrap();
    assert!(matches!(
        expected.verify(b"{\"critical\":{ }}", &sig),
        Err(KeyError::BadSignature)
    ));
}

#[test]
fn cosign_generated_key_with_wrong_password_is_wrong_password() {
    let spec = fixture_str("cosign-generated-empty-password.key");
    let err = load_signing_key(&spec, b"not-empty").unwrap_err();
    match &err {
        KeyError::WrongPassword { key } => assert_eq!(key, &spec),
        other => panic!("expected WrongPassword, got {other:?}"),
    }
    assert_eq!(err.to_string(), format!("wrong password for key {spec}"));
}

#[test]
fn real_cosign_signature_verifies_and_any_changed_byte_fails() {
    let key = load_public_key(&fixture_str("signature-vector-1.pub")).unwrap();
    let payload = read("signature-vector-1.payload.json");
    let sig_b64 = String::from_utf8(read("signature-vector-1.sig.b64")).unwrap();
    let sig = STANDARD.decode(sig_b64.trim()).unwrap();
    key.verify(&payload, &sig).unwrap();

    // Every byte position of the payload, flipped one bit at a time.
    for i in 0..payload.len() {
        for bit in [0x01u8, 0x80] {
            let mut changed = payload.clone();
            changed[i] ^= bit;
            assert!(
                matches!(key.verify(&changed, &sig), Err(KeyError::BadSignature)),
                "payload byte {i} ^ {bit:#x} still verified"
            );
        }
    }
    // Truncated and extended payloads.
    assert!(key.verify(&payload[..payload.len() - 1], &sig).is_err());
    let mut longer = payload.clone();
    longer.push(b'\n');
    assert!(key.verify(&longer, &sig).is_err());

    // Every byte of the signature.
    for i in 0..sig.len() {
        let mut changed = sig.clone();
        changed[i] ^= 0x01;
        assert!(
            matches!(key.verify(&payload, &changed), Err(KeyError::BadSignature)),
            "signature byte {i} changed still verified"
        );
    }
    // Another key.
    let other = load_public_key(&fixture_str("cosign-generated-empty-password.pub")).unwrap();
    assert!(matches!(
        other.verify(&payload, &sig),
        Err(KeyError::BadSignature)
    ));
}

#[test]
fn raw_and_high_s_forms_of_a_real_signature_verify() {
    use p256::ecdsa::Signature;
    let key = load_public_key(&fixture_str("signature-vector-1.pub")).unwrap();
    let payload = read("signature-vector-1.payload.json");
    let sig_b64 = String::from_utf8(read("signature-vector-1.sig.b64")).unwrap();
    let der = STANDARD.decode(sig_b64.trim()).unwrap();
    let sig = Signature::from_der(&der).unwrap();

    // cosign accepts a raw r || s too.
    key.verify(&payload, &sig.to_bytes()).unwrap();

    // Go does not normalise s, so both s and n - s must verify.
    let (r, s) = sig.split_scalars();
    let flipped = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
    assert_ne!(flipped, sig);
    key.verify(&payload, flipped.to_der().as_bytes()).unwrap();

    assert!(key.verify(&payload, &[0u8; 64]).is_err());
    assert!(key.verify(&payload, b"").is_err());
}

/// DSSE pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[test]
fn real_cosign_v3_bundle_dsse_signature_verifies_and_a_changed_subject_fails() {
    let bundle: serde_json::Value =
        serde_json::from_slice(&read("bundle-v03-keyless.json")).unwrap();
    let envelope = &bundle["dsseEnvelope"];
    let payload_type = envelope["payloadType"].as_str().unwrap();
    assert_eq!(payload_type, "application/vnd.in-toto+json");
    let payload = STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let sig = STANDARD
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let key = load_public_key(&fixture_str("bundle-v03-keyless-leaf.pub")).unwrap();

    key.verify(&pae(payload_type, &payload), &sig).unwrap();

    // A statement for another image: one hex digit of the subject changed.
    let text = String::from_utf8(payload.clone()).unwrap();
    let digest = "c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    assert!(text.contains(digest));
    let other = text.replace(digest, &digest.replacen('c', "d", 1));
    assert!(matches!(
        key.verify(&pae(payload_type, other.as_bytes()), &sig),
        Err(KeyError::BadSignature)
    ));
    // The signature is over the PAE, not the bare payload.
    assert!(key.verify(&payload, &sig).is_err());
    // Another payload type.
    assert!(key
        .verify(&pae("application/json", &payload), &sig)
        .is_err());
}

#[test]
fn hint_is_base64_sha256_of_the_pkix_der() {
    let pem = read("signature-vector-1.pub");
    let key = PublicKey::from_pem(&pem, "signature-vector-1.pub").unwrap();
    let expected = STANDARD.encode(Sha256::digest(pem_der(&pem)));
    assert_eq!(key.hint(), expected);
    assert_eq!(key.name(), "signature-vector-1.pub");
}

#[test]
fn keys_in_the_wrong_place_get_the_right_error() {
    let pub_spec = fixture_str("cosign-generated-empty-password.pub");
    let key_spec = fixture_str("cosign-generated-empty-password.key");
    let err = load_signing_key(&pub_spec, b"").unwrap_err();
    assert!(
        matches!(err, KeyError::PublicKeyGivenAsPrivate { .. }),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("is a public key; signing needs the private key"));
    assert!(
        err.to_string()
            .ends_with("cosign-generated-empty-password.key)"),
        "{err}"
    );

    let err = load_public_key(&key_spec).unwrap_err();
    assert!(
        matches!(err, KeyError::PrivateKeyGivenAsPublic { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{key_spec} is a private key; verification needs the public key ({pub_spec})")
    );
    for plain in [
        "openssl/p256-pkcs8.pem",
        "openssl/p256-sec1.pem",
        "openssl/rsa.key",
    ] {
        let err = load_public_key(&fixture_str(plain)).unwrap_err();
        assert!(
            matches!(err, KeyError::PrivateKeyGivenAsPublic { .. }),
            "{plain}: {err:?}"
        );
    }
}

#[test]
fn unencrypted_openssl_p256_keys_are_read() {
    let expected = load_public_key(&fixture_str("openssl/p256.pub")).unwrap();
    for file in ["openssl/p256-pkcs8.pem", "openssl/p256-sec1.pem"] {
        let key = load_signing_key(&fixture_str(file), b"ignored").unwrap();
        assert_eq!(key.public_key(), expected, "{file}");
        let sig = key.sign(b"x");
        expected.verify(b"x", &sig).unwrap();
    }
}

#[test]
fn other_algorithms_are_unsupported_with_their_name() {
    for (file, name) in [
        ("openssl/p384.pub", "P-384"),
        ("openssl/ed25519.pub", "Ed25519"),
        ("openssl/rsa.pub", "RSA"),
    ] {
        let err = load_public_key(&fixture_str(file)).unwrap_err();
        assert!(
            matches!(err, KeyError::UnsupportedKey { .. }),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{file}: {err}");
    }
    for (file, name) in [
        ("openssl/ed25519.key", "Ed25519"),
        ("openssl/rsa.key", "RSA"),
    ] {
        let err = load_signing_key(&fixture_str(file), b"").unwrap_err();
        assert!(
            matches!(err, KeyError::UnsupportedKey { .. }),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains(name), "{file}: {err}");
    }
}

#[test]
fn missing_and_garbage_files_are_clear() {
    let err = load_public_key("/nonexistent/cosign.pub").unwrap_err();
    assert!(matches!(err, KeyError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "key file /nonexistent/cosign.pub not found"
    );

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pub");
    std::fs::write(&garbage, b"hello world").unwrap();
    let err = load_public_key(garbage.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, KeyError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.pub"), "{err}");

    let err = load_signing_key(dir.path().to_str().unwrap(), b"").unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "a directory: {err:?}");
}

#[test]
fn debug_never_shows_the_secret() {
    let key = load_signing_key(&fixture_str("cosign-generated-empty-password.key"), b"").unwrap();
    assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    assert_eq!(
        format!("{:?}", SigningKey::generate()),
        "SigningKey(<redacted>)"
    );
}
