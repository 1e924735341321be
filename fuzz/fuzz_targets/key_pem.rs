//! Key files: `PublicKey::from_pem` and `SigningKey::from_cosign_pem` (empty
//! password) never panic on arbitrary bytes, and a file asking for more
//! scrypt work than imgate allows is refused before any derivation.
//!
//! The first byte picks how the rest is used:
//! - even: the bytes are a key file as is (PEM, or anything else);
//! - odd: the bytes are the JSON body of cosign's encrypted key, wrapped in
//!   an `ENCRYPTED SIGSTORE PRIVATE KEY` block here. Mutating base64 text
//!   almost never yields valid JSON, so this is how the fuzzer reaches the
//!   KDF parameters, salt, nonce and ciphertext handling.
//!
//! scrypt cost is bounded by the keys crate (memory 128·N·r at most 256 MiB,
//! p at most 16). Inside that bound a derivation can still take seconds,
//! which would starve the fuzzer without finding anything, so inputs whose
//! parameters are allowed but cost more than [`BUDGET`] are skipped; inputs
//! above imgate's bound are run, because they must be refused at once.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use imgate_keys::cosign_format::{self, SIGSTORE_PRIVATE_KEY_LABEL};
use imgate_keys::{KeyError, PublicKey, SigningKey};
use libfuzzer_sys::fuzz_target;

/// scrypt work (128·N·r·p bytes mixed) the fuzzer is willing to spend on one input.
const BUDGET: u128 = 1 << 20;
/// The keys crate's bounds (cosign_format.rs `MAX_SCRYPT_MEMORY`,
/// `MAX_SCRYPT_P`), private there; mirrored to tell "refused by imgate" from
/// "allowed but slow". If they drift, the fuzzer only gets slower.
const MAX_SCRYPT_MEMORY: u128 = 256 * 1024 * 1024;
const MAX_SCRYPT_P: u128 = 16;

/// Whether deriving a key for this encrypted-key JSON is cheap enough to run.
fn affordable(json: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return true; // refused before any derivation
    };
    let params = &value["kdf"]["params"];
    let (Some(n), Some(r), Some(p)) = (
        params["N"].as_u64(),
        params["r"].as_u64(),
        params["p"].as_u64(),
    ) else {
        return true; // missing or non-integer parameters: refused as malformed
    };
    let (n, r, p) = (u128::from(n), u128::from(r), u128::from(p));
    let memory = 128 * n * r;
    let refused = memory > MAX_SCRYPT_MEMORY || p > MAX_SCRYPT_P || p == 0 || r == 0;
    refused || memory * p <= BUDGET
}

/// The JSON body of an encrypted key PEM, decoded the way a tolerant reader
/// would; `None` when there is none (nothing expensive can happen then).
fn encrypted_body(data: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(data);
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let after = &text[start..];
    let label_end = after.find("-----")?;
    let label = after[..label_end].trim();
    let rest = &after[label_end + 5..];
    let end = rest.find(&format!("-----END {label}-----"))?;
    let b64: String = rest[..end]
        .lines()
        .filter(|line| !line.contains(':'))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    STANDARD.decode(b64).ok()
}

fn pem(label: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        STANDARD.encode(body)
    )
    .into_bytes()
}

fn check_private(pem_bytes: &[u8]) {
    match SigningKey::from_cosign_pem(pem_bytes, b"", "fuzz.key") {
        Ok(key) => {
            // A key that loads must sign something its public key accepts.
            let signature = key.sign(b"fuzz");
            assert!(key.public_key().verify(b"fuzz", &signature).is_ok());
        }
        Err(err) => {
            // Every error names the key it is about.
            assert!(err.to_string().contains("fuzz.key"), "{err}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        match PublicKey::from_pem(rest, "fuzz.pub") {
            Ok(key) => {
                // What loads prints and loads back to the same key.
                let again = PublicKey::from_pem(key.to_pem().as_bytes(), "again")
                    .unwrap_or_else(|err| panic!("printed key does not load: {err}"));
                assert_eq!(again.to_spki_der(), key.to_spki_der());
            }
            Err(err) => assert!(err.to_string().contains("fuzz.pub"), "{err}"),
        }
        if encrypted_body(rest).is_none_or(|body| affordable(&body)) {
            check_private(rest);
        }
    } else {
        if !affordable(rest) {
            return;
        }
        match cosign_format::decrypt(rest, b"", "fuzz.json") {
            Ok(_) | Err(KeyError::WrongPassword { .. }) => {}
            Err(err) => assert!(err.to_string().contains("fuzz.json"), "{err}"),
        }
        check_private(&pem(SIGSTORE_PRIVATE_KEY_LABEL, rest));
    }
});
