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

    /// A cloud KMS key reference (`awskms://`, `gcpkms://`, `azurekms://`,
    /// …): cosign reads these, imgate does not.
    #[error(
        "{scheme}:// keys are not supported by imgate: use a key file, env://VAR, \
         a pkcs11: URI (HSM, YubiKey) or hashivault://NAME (Vault/OpenBao transit)"
    )]
    UnsupportedKms {
        /// The scheme, e.g. `awskms`.
        scheme: String,
    },

    /// A token or KMS answered with something that is not a valid signature
    /// by the key's public half.
    #[error("key {key} returned a bad signature: {detail}")]
    RemoteSignature {
        /// The key's name.
        key: String,
        /// What is wrong with it.
        detail: String,
    },

    /// No PIN or KMS credential could be found for a key.
    #[error("no {what} for {key}: {hint}")]
    MissingSecret {
        /// The key's name.
        key: String,
        /// What is missing (`PIN`, `Vault token`).
        what: &'static str,
        /// Where it can come from.
        hint: &'static str,
    },

    /// A PKCS#11 token or module failed ([`Pkcs11Error`]).
    #[error(transparent)]
    Pkcs11(Box<Pkcs11Error>),

    /// Vault or OpenBao failed ([`VaultError`]).
    #[error(transparent)]
    Vault(Box<VaultError>),
}

/// Why a key on a PKCS#11 token could not be used. Messages name the key
/// by its URI without the PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The PIN file named by `pin-source` cannot be read.
    #[error("cannot read the PIN file {path} for {key}")]
    PinFile {
        /// The key's name (the URI without its PIN).
        key: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// No PKCS#11 module was named.
    #[error(
        "no PKCS#11 module for {key}: add module-path=/path/to/module.so to the URI's query \
         or set IMGATE_PKCS11_MODULE_PATH (or COSIGN_PKCS11_MODULE_PATH)"
    )]
    NoModule {
        /// The key's name.
        key: String,
    },

    /// The PKCS#11 module cannot be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {detail}")]
    Module {
        /// The module's path.
        module: String,
        /// Why (missing file, not a PKCS#11 library, initialisation error).
        detail: String,
    },

    /// No token matches the URI's token attributes.
    #[error("no PKCS#11 token matches {key} (tokens present: {present})")]
    TokenNotFound {
        /// The key's name.
        key: String,
        /// The labels of the tokens present, or `none`.
        present: String,
    },

    /// No (or more than one) key object matches the URI on the token.
    #[error("{detail} on token {token:?} for {key}")]
    ObjectNotFound {
        /// The key's name.
        key: String,
        /// The token's label.
        token: String,
        /// What was looked for and found.
        detail: String,
    },

    /// The token refused the PIN. imgate never retries a login, so one
    /// failed attempt costs one try of the token's retry counter.
    #[error(
        "wrong PIN for PKCS#11 token {token:?} ({key}); not retried, so the token's \
         retry counter went down by one"
    )]
    WrongPin {
        /// The key's name.
        key: String,
        /// The token's label.
        token: String,
    },

    /// The token's user PIN is locked after too many wrong PINs.
    #[error(
        "the user PIN of PKCS#11 token {token:?} is locked ({key}); unlock it with the SO PIN"
    )]
    PinLocked {
        /// The key's name.
        key: String,
        /// The token's label.
        token: String,
    },

    /// Another PKCS#11 failure.
    #[error("PKCS#11 {operation} failed for {key}: {detail}")]
    Failed {
        /// The key's name.
        key: String,
        /// What imgate was doing.
        operation: String,
        /// The module's answer.
        detail: String,
    },
}

/// Why a key in Vault/OpenBao transit could not be used. Messages never
/// carry the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// Vault/OpenBao could not be reached (DNS, connect, TLS, timeout).
    #[error("cannot reach Vault at {addr} for {key}: {detail}")]
    Unreachable {
        /// The key's name.
        key: String,
        /// `VAULT_ADDR`.
        addr: String,
        /// Why.
        detail: String,
    },

    /// Vault answered 403: the token is invalid, expired, or its policy does
    /// not allow the operation.
    #[error(
        "Vault at {addr} denied {operation} for {key} (403): the token is invalid or expired, \
         or its policy does not allow {path}"
    )]
    Denied {
        /// The key's name.
        key: String,
        /// `VAULT_ADDR`.
        addr: String,
        /// What imgate was doing.
        operation: String,
        /// The API path the policy must allow.
        path: String,
    },

    /// The transit key does not exist.
    #[error("Vault transit key {name} not found under mount {mount}/ at {addr} ({key})")]
    KeyNotFound {
        /// The key's name.
        key: String,
        /// The transit key's name.
        name: String,
        /// The transit mount.
        mount: String,
        /// `VAULT_ADDR`.
        addr: String,
    },

    /// Nothing is mounted at the transit path.
    #[error(
        "no transit secrets engine mounted at {mount}/ on Vault at {addr} ({key}); \
         set TRANSIT_SECRET_ENGINE_PATH to the mount path"
    )]
    MountNotFound {
        /// The key's name.
        key: String,
        /// The transit mount.
        mount: String,
        /// `VAULT_ADDR`.
        addr: String,
    },

    /// Any other Vault error, with Vault's own messages.
    #[error("Vault at {addr} refused {operation} for {key} (HTTP {status}): {detail}")]
    Refused {
        /// The key's name.
        key: String,
        /// `VAULT_ADDR`.
        addr: String,
        /// What imgate was doing.
        operation: String,
        /// The HTTP status.
        status: u16,
        /// Vault's `errors`, joined.
        detail: String,
    },

    /// The Vault client is misconfigured (no address, a bad CA file).
    #[error("Vault configuration for {key}: {detail}")]
    Config {
        /// The key's name.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

impl From<Pkcs11Error> for KeyError {
    fn from(err: Pkcs11Error) -> KeyError {
        KeyError::Pkcs11(Box::new(err))
    }
}

impl From<VaultError> for KeyError {
    fn from(err: VaultError) -> KeyError {
        KeyError::Vault(Box::new(err))
    }
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
