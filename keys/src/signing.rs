//! `SigningKey`: a P-256 ECDSA private key, read from and written to
//! cosign's encrypted key file, signing with SHA-256.

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::Signature;
use pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand_core::OsRng;

use crate::algorithm::require_p256;
use crate::cosign_format::{self, EncryptParams};
use crate::error::KeyError;
use crate::pem;
use crate::public::{PublicKey, PUBLIC_KEY_LABEL};

/// Name used in messages for a key made in this process.
const GENERATED_NAME: &str = "generated key";

/// An ECDSA P-256 private key.
///
/// The secret scalar is zeroized on drop (p256's key does this itself) and
/// never printed: `Debug` shows `SigningKey(<redacted>)`. There is no
/// `Clone`, so the secret exists once.
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
    name: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> SigningKey {
        SigningKey {
            key: p256::ecdsa::SigningKey::random(&mut OsRng),
            name: GENERATED_NAME.to_string(),
        }
    }

    /// Reads a private key file. Normally cosign's encrypted file (labels
    /// `ENCRYPTED SIGSTORE PRIVATE KEY` and the older `ENCRYPTED COSIGN
    /// PRIVATE KEY`; scrypt with N/r/p/salt from the file, nacl/secretbox,
    /// PKCS#8 DER inside). Unencrypted PKCS#8 (`PRIVATE KEY`) and SEC1
    /// (`EC PRIVATE KEY`) P-256 keys are read too, ignoring the password,
    /// since some secret stores hold keys that way.
    ///
    /// `name` (a path or `env://VAR`) is used in errors. A wrong password is
    /// [`KeyError::WrongPassword`]; a public key is
    /// [`KeyError::PublicKeyGivenAsPrivate`].
    ///
    /// ```no_run
    /// let pem = std::fs::read("cosign.key").unwrap();
    /// let key = imgate_keys::SigningKey::from_cosign_pem(&pem, b"", "cosign.key").unwrap();
    /// let signature = key.sign(b"payload");
    /// key.public_key().verify(b"payload", &signature).unwrap();
    /// ```
    pub fn from_cosign_pem(
        pem_bytes: &[u8],
        password: &[u8],
        name: &str,
    ) -> Result<SigningKey, KeyError> {
        let malformed = |detail: String| KeyError::Malformed {
            key: name.to_string(),
            detail,
        };
        let unsupported = |detail: &str| KeyError::UnsupportedKey {
            key: name.to_string(),
            detail: detail.to_string(),
        };
        let block = pem::decode(pem_bytes).map_err(|e| malformed(e.to_string()))?;
        let secret = match block.label.as_str() {
            label if cosign_format::is_encrypted_label(label) => {
                let der = cosign_format::decrypt(&block.body, password, name)?;
                secret_from_pkcs8(&der, name)?
            }
            "PRIVATE KEY" => secret_from_pkcs8(&block.body, name)?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&block.body)
                .map_err(|e| malformed(format!("not a P-256 SEC1 private key: {e}")))?,
            PUBLIC_KEY_LABEL => {
                return Err(KeyError::PublicKeyGivenAsPrivate {
                    key: name.to_string(),
                })
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(unsupported(
                    "a password-encrypted PKCS#8 key (openssl); convert it with `cosign import-key-pair`",
                ))
            }
            "RSA PRIVATE KEY" => {
                return Err(unsupported("RSA keys are not supported; imgate uses ECDSA P-256 keys"))
            }
            "CERTIFICATE" => return Err(unsupported("a certificate, not a private key")),
            other => {
                return Err(malformed(format!(
                    "PEM block {other:?} is not a private key (expected \"{}\")",
                    cosign_format::SIGSTORE_PRIVATE_KEY_LABEL
                )))
            }
        };
        Ok(SigningKey {
            key: p256::ecdsa::SigningKey::from(secret),
            name: name.to_string(),
        })
    }

    /// Writes the key in cosign's encrypted format as cosign writes it today
    /// (scrypt N=65536 r=8 p=1, random 32-byte salt, random 24-byte nonce,
    /// label `ENCRYPTED SIGSTORE PRIVATE KEY`), so `cosign` reads it.
    pub fn to_cosign_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        self.to_cosign_pem_with(password, &EncryptParams::default())
    }

    /// Like [`SigningKey::to_cosign_pem`] with explicit parameters, e.g.
    /// [`EncryptParams::legacy`] for what cosign v1 wrote.
    pub fn to_cosign_pem_with(
        &self,
        password: &[u8],
        params: &EncryptParams,
    ) -> Result<String, KeyError> {
        // SecretDocument zeroizes the PKCS#8 bytes on drop.
        let der = p256::SecretKey::from(&self.key)
            .to_pkcs8_der()
            .map_err(|e| KeyError::Encode {
                key: self.name.clone(),
                detail: format!("cannot encode the private key as PKCS#8: {e}"),
            })?;
        cosign_format::encrypt(der.as_bytes(), password, params, &self.name)
    }

    /// The matching public key (named after this key).
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_verifying_key(*self.key.verifying_key(), self.name.clone())
    }

    /// An ASN.1 DER ECDSA-P256-SHA256 signature over `msg`, the form cosign
    /// stores (base64) in `dev.cosignproject.cosign/signature`. Signing is
    /// deterministic (RFC 6979).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(msg);
        signature.to_der().as_bytes().to_vec()
    }

    /// Where the key came from, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The p256 key itself, for tests that sign the way a token does.
    #[cfg(test)]
    pub(crate) fn inner_for_tests(&self) -> &p256::ecdsa::SigningKey {
        &self.key
    }

    /// The same key under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> SigningKey {
        self.name = name.into();
        self
    }
}

fn secret_from_pkcs8(der: &[u8], name: &str) -> Result<p256::SecretKey, KeyError> {
    let info = pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| KeyError::Malformed {
        key: name.to_string(),
        detail: format!("decrypted key is not PKCS#8: {e}"),
    })?;
    require_p256(&info.algorithm).map_err(|detail| KeyError::UnsupportedKey {
        key: name.to_string(),
        detail,
    })?;
    p256::SecretKey::from_pkcs8_der(der).map_err(|e| KeyError::Malformed {
        key: name.to_string(),
        detail: format!("not a valid P-256 private key: {e}"),
    })
}
