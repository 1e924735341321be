//! `KeyError`: everything that can go wrong reading, decrypting, writing or
//! using a key. Messages are lower-case and name the key (a path or
//! `env://VAR`) so a CLI can print them as one clear line.

use std::io;

/// An error about a key file or a signature made with a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file does not exist.
    #[error("key file {key} not found")]
    NotFound {
        /// The path as given.
        key: String,
    },

    /// The key file exists but could not be read.
    #[error("cannot read key file {key}")]
    Io {
        /// The path as given.
        key: String,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// `env://VAR` names a variable that is unset or empty.
    #[error("environment variable {var} (key env://{var}) is not set or empty")]
    EnvVar {
        /// The variable's name.
        var: String,
    },

    /// The password does not open the encrypted private key (secretbox
    /// authentication failed).
    #[error("wrong password for key {key}")]
    WrongPassword {
        /// The key's name.
        key: String,
    },

    /// A public key was given where the private key is needed.
    #[error(
        "{key} is a public key; signing needs the private key{}",
        sibling_hint(key, ".pub", ".key")
    )]
    PublicKeyGivenAsPrivate {
        /// The key's name.
        key: String,
    },

    /// A private key was given where a public key is needed.
    #[error(
        "{key} is a private key; verification needs the public key{}",
        sibling_hint(key, ".key", ".pub")
    )]
    PrivateKeyGivenAsPublic {
        /// The key's name.
        key: String,
    },

    /// A well-formed key of a kind imgate does not use (not ECDSA P-256, or
    /// an encryption scheme other than scrypt + nacl/secretbox).
    #[error("unsupported key {key}: {detail}")]
    UnsupportedKey {
        /// The key's name.
        key: String,
        /// What kind of key or scheme it is.
        detail: String,
    },

    /// The key file is not a key in any format imgate reads.
    #[error("malformed key {key}: {detail}")]
    Malformed {
        /// The key's name.
        key: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A signature does not verify (wrong key, changed message, or not an
    /// ECDSA signature at all). A malformed signature is reported as this
    /// too: to a verifier it is simply a signature that does not hold.
    #[error("signature does not verify")]
    BadSignature,

    /// Encoding or encrypting a key failed (no randomness, an encoder error).
    #[error("cannot write key {key}: {detail}")]
    Encode {
        /// The key's name.
        key: String,
        /// What failed.
        detail: String,
    },
}

/// " (cosign.key)" for "cosign.pub": points at the file the user most likely
/// meant, when the name follows cosign's naming; empty otherwise.
fn sibling_hint(key: &str, from: &str, to: &str) -> String {
    match key.strip_suffix(from) {
        Some(stem) if !stem.is_empty() => format!(" ({stem}{to})"),
        _ => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_key_and_the_likely_sibling() {
        let err = KeyError::PublicKeyGivenAsPrivate {
            key: "cosign.pub".into(),
        };
        assert_eq!(
            err.to_string(),
            "cosign.pub is a public key; signing needs the private key (cosign.key)"
        );
        let err = KeyError::PrivateKeyGivenAsPublic {
            key: "env://KEY".into(),
        };
        assert_eq!(
            err.to_string(),
            "env://KEY is a private key; verification needs the public key"
        );
        let err = KeyError::WrongPassword {
            key: "cosign.key".into(),
        };
        assert_eq!(err.to_string(), "wrong password for key cosign.key");
    }
}
