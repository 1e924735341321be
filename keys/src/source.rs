//! Where key bytes come from: a file path, or `env://VAR` (the PEM in an
//! environment variable, the usual form of a CI secret, as in cosign).

use std::io::Read as _;

use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::public::PublicKey;
use crate::signing::SigningKey;

/// Prefix of a key given through an environment variable.
pub const ENV_PREFIX: &str = "env://";
/// Key files are a few hundred bytes; reading stops well above that so a
/// mistaken path (a device, a huge file) fails fast instead of filling memory.
const MAX_KEY_FILE_LEN: u64 = 1024 * 1024;

/// Reads a key's bytes from a path or `env://VAR`. Errors name the path or
/// the variable.
///
/// The bytes may be a private key: prefer [`load_signing_key`], which keeps
/// them in zeroizing memory, or [`read_key_source_zeroizing`].
///
/// ```no_run
/// let pem = imgate_keys::read_key_source("env://COSIGN_PUBLIC_KEY").unwrap();
/// ```
pub fn read_key_source(spec: &str) -> Result<Vec<u8>, KeyError> {
    read_key_source_zeroizing(spec).map(|bytes| bytes.to_vec())
}

/// [`read_key_source`] returning memory that is zeroized on drop.
pub fn read_key_source_zeroizing(spec: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if let Some(var) = spec.strip_prefix(ENV_PREFIX) {
        return read_env(var);
    }
    let file = std::fs::File::open(spec).map_err(|source| io_error(spec, source))?;
    // Sized up front so the buffer is not reallocated, which would leave
    // unzeroized copies of a private key behind.
    let expected = file.metadata().map(|m| m.len()).unwrap_or(0);
    let capacity = usize::try_from(expected.min(MAX_KEY_FILE_LEN) + 1).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| io_error(spec, source))?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(KeyError::Malformed {
            key: spec.to_string(),
            detail: format!("larger than {MAX_KEY_FILE_LEN} bytes; not a key file"),
        });
    }
    Ok(bytes)
}

fn read_env(var: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let env_error = || KeyError::EnvVar {
        var: var.to_string(),
    };
    if var.is_empty() {
        return Err(env_error());
    }
    let value = std::env::var_os(var).ok_or_else(env_error)?;
    let bytes = Zeroizing::new(value.into_encoded_bytes());
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(env_error());
    }
    Ok(bytes)
}

fn io_error(spec: &str, source: std::io::Error) -> KeyError {
    if source.kind() == std::io::ErrorKind::NotFound {
        KeyError::NotFound {
            key: spec.to_string(),
        }
    } else {
        KeyError::Io {
            key: spec.to_string(),
            source,
        }
    }
}

/// Reads a public key from a path or `env://VAR`.
pub fn load_public_key(spec: &str) -> Result<PublicKey, KeyError> {
    let bytes = read_key_source_zeroizing(spec)?;
    PublicKey::from_pem(&bytes, spec)
}

/// Reads and decrypts a private key from a path or `env://VAR`.
///
/// ```no_run
/// let key = imgate_keys::load_signing_key("cosign.key", b"").unwrap();
/// ```
pub fn load_signing_key(spec: &str, password: &[u8]) -> Result<SigningKey, KeyError> {
    let bytes = read_key_source_zeroizing(spec)?;
    SigningKey::from_cosign_pem(&bytes, password, spec)
}

/// Whether `pem` holds a private key, judged by its PEM label,
/// without decrypting it. Lets a caller ask for a password only when one is
/// needed (e.g. `imgate keys public --key K`).
pub fn is_private_key_pem(pem: &[u8]) -> bool {
    crate::pem::first_label(pem).is_some_and(|label| crate::public::is_private_label(&label))
}

/// Whether `pem` is one of cosign's encrypted private keys, i.e. reading it
/// needs a password (unencrypted PKCS#8 and SEC1 keys do not).
pub fn is_encrypted_private_key_pem(pem: &[u8]) -> bool {
    crate::pem::first_label(pem)
        .is_some_and(|label| crate::cosign_format::is_encrypted_label(&label))
}
