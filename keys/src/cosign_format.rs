//! cosign's encrypted private key file, read and written byte-compatibly.
//!
//! The format comes from go-securesystemslib's `encrypted` package, which
//! cosign uses: a PEM block (label `ENCRYPTED SIGSTORE PRIVATE KEY`, or
//! `ENCRYPTED COSIGN PRIVATE KEY` in cosign before v2) whose body is JSON
//!
//! ```json
//! {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<b64>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<b64>"},
//!  "ciphertext":"<b64>"}
//! ```
//!
//! The secretbox key is scrypt(password, salt, N, r, p, 32); the plaintext
//! is the PKCS#8 DER private key. NaCl's secretbox puts the 16-byte
//! Poly1305 tag before the ciphertext, which is also what
//! `crypto_secretbox` does, so its output goes into the file as is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use crypto_secretbox::aead::AeadInPlace;
use crypto_secretbox::{KeyInit, Nonce, XSalsa20Poly1305};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::pem;

/// The PEM label current cosign (v2 and later) writes and reads.
pub const SIGSTORE_PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The PEM label cosign v1 wrote; still read by cosign and by imgate.
pub const COSIGN_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// The only key derivation function in the format.
pub const KDF_NAME: &str = "scrypt";
/// The only cipher in the format.
pub const CIPHER_NAME: &str = "nacl/secretbox";
/// log2 of scrypt's N that cosign writes today (N = 65536).
pub const STANDARD_SCRYPT_LOG_N: u8 = 16;
/// log2 of scrypt's N that older cosign wrote (N = 32768).
pub const LEGACY_SCRYPT_LOG_N: u8 = 15;
/// scrypt's block size parameter r in every cosign key.
pub const SCRYPT_R: u32 = 8;
/// scrypt's parallelism parameter p in every cosign key.
pub const SCRYPT_P: u32 = 1;
/// Length of the random scrypt salt go-securesystemslib writes.
pub const SALT_LEN: usize = 32;
/// Length of the XSalsa20 nonce of nacl/secretbox.
pub const NONCE_LEN: usize = 24;
/// Length of the derived secretbox key.
pub const SECRETBOX_KEY_LEN: usize = 32;
/// Length of the Poly1305 tag that precedes the ciphertext.
const TAG_LEN: usize = 16;
/// Memory bound for scrypt parameters read from a file (128 * N * r bytes).
/// A hostile key file must not be able to make imgate allocate gigabytes;
/// 256 MiB still admits N = 2^18 with r = 8, four times cosign's default.
const MAX_SCRYPT_MEMORY: u64 = 256 * 1024 * 1024;
/// Bound on p for the same reason (time rather than memory).
const MAX_SCRYPT_P: u32 = 16;

/// How to write an encrypted key file. `Default` is what current cosign
/// writes; the other values exist to produce older files (tests, interop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptParams {
    /// The PEM label.
    pub label: &'static str,
    /// log2 of scrypt's N.
    pub log_n: u8,
    /// scrypt's r.
    pub r: u32,
    /// scrypt's p.
    pub p: u32,
}

impl Default for EncryptParams {
    fn default() -> Self {
        EncryptParams {
            label: SIGSTORE_PRIVATE_KEY_LABEL,
            log_n: STANDARD_SCRYPT_LOG_N,
            r: SCRYPT_R,
            p: SCRYPT_P,
        }
    }
}

impl EncryptParams {
    /// What cosign v1 wrote: the old label and N = 32768.
    pub fn legacy() -> Self {
        EncryptParams {
            label: COSIGN_PRIVATE_KEY_LABEL,
            log_n: LEGACY_SCRYPT_LOG_N,
            ..EncryptParams::default()
        }
    }
}

/// Whether a PEM label is one of cosign's encrypted private key labels.
pub fn is_encrypted_label(label: &str) -> bool {
    label == SIGSTORE_PRIVATE_KEY_LABEL || label == COSIGN_PRIVATE_KEY_LABEL
}

// Field order and names follow go-securesystemslib's structs, so the JSON
// imgate writes is byte-for-byte the shape cosign writes.
#[derive(Serialize, Deserialize)]
struct EncryptedFile {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Encrypts `plaintext` (a PKCS#8 DER key) under `password` and returns the
/// PEM text of the key file.
pub fn encrypt(
    plaintext: &[u8],
    password: &[u8],
    params: &EncryptParams,
    name: &str,
) -> Result<String, KeyError> {
    let encode_err = |detail: String| KeyError::Encode {
        key: name.to_string(),
        detail,
    };
    let scrypt_params = scrypt::Params::new(params.log_n, params.r, params.p, SECRETBOX_KEY_LEN)
        .map_err(|e| encode_err(format!("invalid scrypt parameters: {e}")))?;
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    OsRng
        .try_fill_bytes(&mut salt)
        .and_then(|()| OsRng.try_fill_bytes(&mut nonce))
        .map_err(|e| encode_err(format!("no randomness from the operating system: {e}")))?;

    let key = derive_key(password, &salt, &scrypt_params)
        .map_err(|e| encode_err(format!("scrypt failed: {e}")))?;
    let cipher = XSalsa20Poly1305::new_from_slice(&key[..])
        .map_err(|e| encode_err(format!("secretbox key: {e}")))?;
    let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buffer.extend_from_slice(plaintext);
    cipher
        .encrypt_in_place(Nonce::from_slice(&nonce), b"", &mut *buffer)
        .map_err(|e| encode_err(format!("secretbox failed: {e}")))?;

    let file = EncryptedFile {
        kdf: Kdf {
            name: KDF_NAME.to_string(),
            params: KdfParams {
                n: 1u64 << params.log_n,
                r: params.r,
                p: params.p,
            },
            salt: STANDARD.encode(salt),
        },
        cipher: Cipher {
            name: CIPHER_NAME.to_string(),
            nonce: STANDARD.encode(nonce),
        },
        ciphertext: STANDARD.encode(&*buffer),
    };
    let json = serde_json::to_vec(&file).map_err(|e| encode_err(e.to_string()))?;
    Ok(pem::encode(params.label, &json))
}

/// Decrypts the JSON body of an encrypted key file and returns the PKCS#8
/// DER plaintext. A secretbox authentication failure is a wrong password.
pub fn decrypt(json: &[u8], password: &[u8], name: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let malformed = |detail: String| KeyError::Malformed {
        key: name.to_string(),
        detail,
    };
    let unsupported = |detail: String| KeyError::UnsupportedKey {
        key: name.to_string(),
        detail,
    };
    let file: EncryptedFile = serde_json::from_slice(json)
        .map_err(|e| malformed(format!("not cosign's encrypted key JSON: {e}")))?;
    if file.kdf.name != KDF_NAME {
        return Err(unsupported(format!(
            "key derivation {:?} (only {KDF_NAME} is supported)",
            file.kdf.name
        )));
    }
    if file.cipher.name != CIPHER_NAME {
        return Err(unsupported(format!(
            "cipher {:?} (only {CIPHER_NAME} is supported)",
            file.cipher.name
        )));
    }
    let scrypt_params = checked_scrypt_params(&file.kdf.params).map_err(&malformed)?;
    let salt = decode_b64(&file.kdf.salt, "kdf.salt").map_err(&malformed)?;
    let nonce = decode_b64(&file.cipher.nonce, "cipher.nonce").map_err(&malformed)?;
    if nonce.len() != NONCE_LEN {
        return Err(malformed(format!(
            "cipher.nonce is {} bytes, nacl/secretbox needs {NONCE_LEN}",
            nonce.len()
        )));
    }
    let mut buffer =
        Zeroizing::new(decode_b64(&file.ciphertext, "ciphertext").map_err(&malformed)?);
    if buffer.len() < TAG_LEN {
        return Err(malformed(
            "ciphertext is shorter than the secretbox tag".into(),
        ));
    }

    let key = derive_key(password, &salt, &scrypt_params)
        .map_err(|e| malformed(format!("scrypt failed: {e}")))?;
    let cipher = XSalsa20Poly1305::new_from_slice(&key[..])
        .map_err(|e| malformed(format!("secretbox key: {e}")))?;
    // The tag is checked before anything is decrypted; a mismatch is what a
    // wrong password looks like (a corrupted file looks the same, and cosign
    // cannot tell them apart either).
    cipher
        .decrypt_in_place(Nonce::from_slice(&nonce), b"", &mut *buffer)
        .map_err(|_| KeyError::WrongPassword {
            key: name.to_string(),
        })?;
    Ok(buffer)
}

/// Validates N/r/p from a file and bounds the memory they would use.
fn checked_scrypt_params(params: &KdfParams) -> Result<scrypt::Params, String> {
    let KdfParams { n, r, p } = *params;
    if n < 2 || !n.is_power_of_two() {
        return Err(format!("scrypt N={n} is not a power of two greater than 1"));
    }
    if r == 0 || p == 0 || p > MAX_SCRYPT_P {
        return Err(format!("scrypt r={r} p={p} out of range"));
    }
    let memory = 128u64.saturating_mul(n).saturating_mul(u64::from(r));
    if memory > MAX_SCRYPT_MEMORY {
        return Err(format!(
            "scrypt N={n} r={r} needs {memory} bytes, more than the {MAX_SCRYPT_MEMORY} imgate allows"
        ));
    }
    // n is a power of two below 2^64, so trailing_zeros is its log2 (< 64).
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|e| e.to_string())?;
    scrypt::Params::new(log_n, r, p, SECRETBOX_KEY_LEN)
        .map_err(|e| format!("invalid scrypt parameters N={n} r={r} p={p}: {e}"))
}

fn derive_key(
    password: &[u8],
    salt: &[u8],
    params: &scrypt::Params,
) -> Result<Zeroizing<[u8; SECRETBOX_KEY_LEN]>, scrypt::errors::InvalidOutputLen> {
    let mut key = Zeroizing::new([0u8; SECRETBOX_KEY_LEN]);
    scrypt::scrypt(password, salt, params, &mut key[..])?;
    Ok(key)
}

fn decode_b64(value: &str, field: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(value.trim())
        .map_err(|e| format!("{field} is not base64: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    // Low-cost parameters so unit tests stay fast; interop with real
    // cosign files (N = 65536) is covered in tests/cosign_fixtures.rs.
    fn cheap() -> EncryptParams {
        EncryptParams {
            log_n: 4,
            ..EncryptParams::default()
        }
    }

    #[test]
    fn encrypt_then_decrypt_returns_the_plaintext() {
        let pem_text = encrypt(b"secret der", b"pw", &cheap(), "k").unwrap();
        let block = pem::decode(pem_text.as_bytes()).unwrap();
        assert_eq!(block.label, SIGSTORE_PRIVATE_KEY_LABEL);
        let json: serde_json::Value = serde_json::from_slice(&block.body).unwrap();
        assert_eq!(json["kdf"]["name"], "scrypt");
        assert_eq!(json["kdf"]["params"]["N"], 16);
        assert_eq!(json["cipher"]["name"], "nacl/secretbox");
        assert_eq!(
            STANDARD
                .decode(json["kdf"]["salt"].as_str().unwrap())
                .unwrap()
                .len(),
            SALT_LEN
        );
        assert_eq!(
            STANDARD
                .decode(json["cipher"]["nonce"].as_str().unwrap())
                .unwrap()
                .len(),
            NONCE_LEN
        );
        let plain = decrypt(&block.body, b"pw", "k").unwrap();
        assert_eq!(&plain[..], b"secret der");
    }

    #[test]
    fn wrong_password_is_reported_as_such() {
        let pem_text = encrypt(b"secret der", b"pw", &cheap(), "k").unwrap();
        let block = pem::decode(pem_text.as_bytes()).unwrap();
        let err = decrypt(&block.body, b"pW", "my.key").unwrap_err();
        assert!(
            matches!(err, KeyError::WrongPassword { ref key } if key == "my.key"),
            "{err:?}"
        );
    }

    #[test]
    fn salt_and_nonce_are_fresh_each_time() {
        let a = encrypt(b"x", b"", &cheap(), "k").unwrap();
        let b = encrypt(b"x", b"", &cheap(), "k").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn hostile_or_broken_parameters_are_refused_before_deriving() {
        for (n, r, p) in [
            (0u64, 8u32, 1u32),
            (3, 8, 1),
            (1 << 22, 8, 1),
            (1 << 16, 0, 1),
            (1 << 16, 8, 99),
        ] {
            let json = format!(
                r#"{{"kdf":{{"name":"scrypt","params":{{"N":{n},"r":{r},"p":{p}}},"salt":"AAAA"}},"cipher":{{"name":"nacl/secretbox","nonce":"{}"}},"ciphertext":"{}"}}"#,
                STANDARD.encode([0u8; NONCE_LEN]),
                STANDARD.encode([0u8; 40])
            );
            let err = decrypt(json.as_bytes(), b"", "k").unwrap_err();
            assert!(
                matches!(err, KeyError::Malformed { .. }),
                "N={n} r={r} p={p}: {err:?}"
            );
        }
    }

    #[test]
    fn other_schemes_are_unsupported_and_garbage_is_malformed() {
        let json = br#"{"kdf":{"name":"argon2","params":{"N":16,"r":8,"p":1},"salt":""},"cipher":{"name":"nacl/secretbox","nonce":""},"ciphertext":""}"#;
        assert!(matches!(
            decrypt(json, b"", "k"),
            Err(KeyError::UnsupportedKey { .. })
        ));
        assert!(matches!(
            decrypt(b"{not json", b"", "k"),
            Err(KeyError::Malformed { .. })
        ));
        let short_nonce = br#"{"kdf":{"name":"scrypt","params":{"N":16,"r":8,"p":1},"salt":""},"cipher":{"name":"nacl/secretbox","nonce":"AAAA"},"ciphertext":""}"#;
        assert!(matches!(
            decrypt(short_nonce, b"", "k"),
            Err(KeyError::Malformed { .. })
        ));
    }
}
