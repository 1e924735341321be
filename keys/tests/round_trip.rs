//! Keys imgate writes read back (current and legacy cosign formats), and
//! keys from `env://VAR`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use imgate_keys::cosign_format::{COSIGN_PRIVATE_KEY_LABEL, SIGSTORE_PRIVATE_KEY_LABEL};
use imgate_keys::{
    load_public_key, load_signing_key, EncryptParams, KeyError, PublicKey, SigningKey,
};

/// The label and the scrypt N written in an encrypted key file.
fn label_and_n(pem: &str) -> (String, u64) {
    let first = pem.lines().next().unwrap();
    let label = first
        .trim_start_matches("-----BEGIN ")
        .trim_end_matches("-----")
        .to_string();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let json: serde_json::Value = serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    (label, json["kdf"]["params"]["N"].as_u64().unwrap())
}

#[test]
fn generate_write_read_round_trip_in_cosigns_current_format() {
    let key = SigningKey::generate();
    let pem = key.to_cosign_pem(b"correct horse").unwrap();
    assert_eq!(
        label_and_n(&pem),
        (SIGSTORE_PRIVATE_KEY_LABEL.to_string(), 65536)
    );

    let back = SigningKey::from_cosign_pem(pem.as_bytes(), b"correct horse", "k.key").unwrap();
    assert_eq!(back.public_key(), key.public_key());
    assert_eq!(back.name(), "k.key");
    // The read key signs what the original's public key accepts.
    key.public_key().verify(b"m", &back.sign(b"m")).unwrap();

    let err = SigningKey::from_cosign_pem(pem.as_bytes(), b"correct horsE", "k.key").unwrap_err();
    assert!(matches!(err, KeyError::WrongPassword { .. }), "{err:?}");
}

#[test]
fn legacy_label_and_n_32768_round_trip() {
    let key = SigningKey::generate();
    let pem = key
        .to_cosign_pem_with(b"", &EncryptParams::legacy())
        .unwrap();
    assert_eq!(
        label_and_n(&pem),
        (COSIGN_PRIVATE_KEY_LABEL.to_string(), 32768)
    );
    let back = SigningKey::from_cosign_pem(pem.as_bytes(), b"", "old.key").unwrap();
    assert_eq!(back.public_key(), key.public_key());
}

#[test]
fn empty_password_is_a_password() {
    let key = SigningKey::generate();
    let pem = key.to_cosign_pem(b"").unwrap();
    SigningKey::from_cosign_pem(pem.as_bytes(), b"", "k").unwrap();
    let err = SigningKey::from_cosign_pem(pem.as_bytes(), b" ", "k").unwrap_err();
    assert!(matches!(err, KeyError::WrongPassword { .. }), "{err:?}");
}

#[test]
fn tampered_ciphertext_is_refused() {
    let key = SigningKey::generate();
    let pem = key
        .to_cosign_pem_with(
            b"pw",
            &EncryptParams {
                log_n: 10,
                ..EncryptParams::default()
            },
        )
        .unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut json: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap();
    let mut ct = STANDARD
        .decode(json["ciphertext"].as_str().unwrap())
        .unwrap();
    let last = ct.len() - 1;
    ct[last] ^= 1;
    json["ciphertext"] = STANDARD.encode(ct).into();
    let body = STANDARD.encode(serde_json::to_vec(&json).unwrap());
    let tampered = format!("-----BEGIN {SIGSTORE_PRIVATE_KEY_LABEL}-----\n{body}\n-----END {SIGSTORE_PRIVATE_KEY_LABEL}-----\n");
    assert!(SigningKey::from_cosign_pem(tampered.as_bytes(), b"pw", "k").is_err());
}

#[test]
fn public_pem_round_trips() {
    let key = SigningKey::generate().public_key();
    let pem = key.to_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let back = PublicKey::from_pem(pem.as_bytes(), "p").unwrap();
    assert_eq!(back, key);
    assert_eq!(back.hint(), key.hint());
}

#[test]
fn signatures_are_der_and_verify_only_with_the_signer() {
    let a = SigningKey::generate();
    let b = SigningKey::generate();
    let sig = a.sign(b"payload");
    assert_eq!(sig[0], 0x30, "ASN.1 SEQUENCE");
    assert!(sig.len() <= 72);
    a.public_key().verify(b"payload", &sig).unwrap();
    assert!(matches!(
        b.public_key().verify(b"payload", &sig),
        Err(KeyError::BadSignature)
    ));
}

#[test]
fn keys_from_environment_variables() {
    let key = SigningKey::generate();
    // Names unique to this test: tests in this binary run in parallel.
    std::env::set_var(
        "IMGATE_KEYS_TEST_PRIV",
        key.to_cosign_pem_with(
            b"pw",
            &EncryptParams {
                log_n: 10,
                ..EncryptParams::default()
            },
        )
        .unwrap(),
    );
    std::env::set_var("IMGATE_KEYS_TEST_PUB", key.public_key().to_pem());

    let public = load_public_key("env://IMGATE_KEYS_TEST_PUB").unwrap();
    assert_eq!(public, key.public_key());
    assert_eq!(public.name(), "env://IMGATE_KEYS_TEST_PUB");
    let private = load_signing_key("env://IMGATE_KEYS_TEST_PRIV", b"pw").unwrap();
    assert_eq!(private.public_key(), key.public_key());

    let err = load_signing_key("env://IMGATE_KEYS_TEST_PRIV", b"nope").unwrap_err();
    assert_eq!(
        err.to_string(),
        "wrong password for key env://IMGATE_KEYS_TEST_PRIV"
    );
    let err = load_public_key("env://IMGATE_KEYS_TEST_PRIV").unwrap_err();
    assert!(
        matches!(err, KeyError::PrivateKeyGivenAsPublic { .. }),
        "{err:?}"
    );

    let err = load_public_key("env://IMGATE_KEYS_TEST_UNSET_VARIABLE").unwrap_err();
    assert!(
        matches!(err, KeyError::EnvVar { ref var } if var == "IMGATE_KEYS_TEST_UNSET_VARIABLE"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("IMGATE_KEYS_TEST_UNSET_VARIABLE"),
        "{err}"
    );
    assert!(err.to_string().contains("not set"), "{err}");

    std::env::set_var("IMGATE_KEYS_TEST_EMPTY", "  \n");
    assert!(matches!(
        load_public_key("env://IMGATE_KEYS_TEST_EMPTY"),
        Err(KeyError::EnvVar { .. })
    ));
    assert!(matches!(
        load_public_key("env://"),
        Err(KeyError::EnvVar { .. })
    ));
}

/// Every single-byte corruption of a key file is an error (or, for bytes
/// the format ignores, the same key), never a panic or a different key.
#[test]
fn corrupted_key_files_never_panic_or_yield_another_key() {
    let key = SigningKey::generate();
    let cheap = EncryptParams {
        log_n: 4,
        ..EncryptParams::default()
    };
    let pem = key.to_cosign_pem_with(b"pw", &cheap).unwrap().into_bytes();
    for i in 0..pem.len() {
        for replacement in [b'A', b'-', b'\n', 0xff] {
            if pem[i] == replacement {
                continue;
            }
            let mut changed = pem.clone();
            changed[i] = replacement;
            if let Ok(read) = SigningKey::from_cosign_pem(&changed, b"pw", "k") {
                assert_eq!(
                    read.public_key(),
                    key.public_key(),
                    "byte {i} -> {replacement:#x}"
                );
            }
        }
    }
    let public = key.public_key().to_pem().into_bytes();
    for i in 0..public.len() {
        let mut changed = public.clone();
        changed[i] ^= 0x20;
        if let Ok(read) = PublicKey::from_pem(&changed, "p") {
            // Only a change the encoding ignores may still parse.
            assert_eq!(read, key.public_key(), "byte {i}");
        }
    }
}
