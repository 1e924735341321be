//! `PublicKey`: a P-256 ECDSA verifying key read from PKIX PEM, with the
//! name it came from for messages.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256};

use crate::algorithm::require_p256;
use crate::error::KeyError;
use crate::pem;

/// PEM label of a PKIX SubjectPublicKeyInfo.
pub(crate) const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";
/// The DER of a P-256 SubjectPublicKeyInfo up to the uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66) {0,
/// 0x04 …} }. Every P-256 key's SPKI is these bytes plus the 65-byte point,
/// which is exactly what Go's `x509.MarshalPKIXPublicKey` produces; building
/// it directly keeps `public_key()` infallible.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Length of a raw `r || s` P-256 signature.
const RAW_SIGNATURE_LEN: usize = 64;

/// An ECDSA P-256 public key and where it came from.
///
/// Equality compares the key only, not the name: the same key read from
/// `cosign.pub` and from `env://KEY` is the same key.
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: VerifyingKey,
    /// The canonical (uncompressed point) PKIX DER, computed once: it is
    /// what the hint and the PEM are made from.
    spki: Vec<u8>,
    name: String,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    pub(crate) fn from_verifying_key(key: VerifyingKey, name: String) -> PublicKey {
        let point = key.to_encoded_point(false);
        let mut spki = Vec::with_capacity(SPKI_P256_PREFIX.len() + point.len());
        spki.extend_from_slice(&SPKI_P256_PREFIX);
        spki.extend_from_slice(point.as_bytes());
        PublicKey { key, spki, name }
    }

    /// Reads a PKIX `PUBLIC KEY` PEM (what `cosign generate-key-pair` and
    /// `openssl ec -pubout` write). `name` (a path or `env://VAR`) is used in
    /// errors. A private key given here is
    /// [`KeyError::PrivateKeyGivenAsPublic`].
    ///
    /// ```no_run
    /// let pem = std::fs::read("cosign.pub").unwrap();
    /// let key = imgate_keys::PublicKey::from_pem(&pem, "cosign.pub").unwrap();
    /// println!("{}", key.hint());
    /// ```
    pub fn from_pem(pem_bytes: &[u8], name: &str) -> Result<PublicKey, KeyError> {
        let block = pem::decode(pem_bytes).map_err(|e| KeyError::Malformed {
            key: name.to_string(),
            detail: e.to_string(),
        })?;
        match block.label.as_str() {
            PUBLIC_KEY_LABEL => PublicKey::from_spki_der(&block.body, name),
            label if is_private_label(label) => Err(KeyError::PrivateKeyGivenAsPublic {
                key: name.to_string(),
            }),
            "CERTIFICATE" => Err(KeyError::UnsupportedKey {
                key: name.to_string(),
                detail: "a certificate, not a public key (extract it with `openssl x509 -pubkey -noout`)"
                    .to_string(),
            }),
            "RSA PUBLIC KEY" => Err(KeyError::UnsupportedKey {
                key: name.to_string(),
                detail: "RSA keys are not supported; imgate uses ECDSA P-256 keys".to_string(),
            }),
            other => Err(KeyError::Malformed {
                key: name.to_string(),
                detail: format!("PEM block {other:?} is not a public key (expected \"{PUBLIC_KEY_LABEL}\")"),
            }),
        }
    }

    /// Reads a PKIX SubjectPublicKeyInfo in DER.
    pub fn from_spki_der(der: &[u8], name: &str) -> Result<PublicKey, KeyError> {
        let malformed = |detail: String| KeyError::Malformed {
            key: name.to_string(),
            detail,
        };
        let spki = pkcs8::spki::SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|e| malformed(format!("not a PKIX public key: {e}")))?;
        require_p256(&spki.algorithm).map_err(|detail| KeyError::UnsupportedKey {
            key: name.to_string(),
            detail,
        })?;
        let key = VerifyingKey::from_public_key_der(der)
            .map_err(|e| malformed(format!("not a valid P-256 public key: {e}")))?;
        Ok(PublicKey::from_verifying_key(key, name.to_string()))
    }

    /// The PKIX SubjectPublicKeyInfo in DER.
    pub fn to_spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The PKIX `PUBLIC KEY` PEM, as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> String {
        pem::encode(PUBLIC_KEY_LABEL, &self.spki)
    }

    /// Verifies an ECDSA-P256-SHA256 signature over `msg`. The signature is
    /// ASN.1 DER (what cosign stores) or a raw 64-byte `r || s` (which
    /// cosign also accepts). Anything that does not verify, including a
    /// signature that is not parseable, is [`KeyError::BadSignature`].
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let sig = match Signature::from_der(signature) {
            Ok(sig) => sig,
            Err(_) if signature.len() == RAW_SIGNATURE_LEN => {
                Signature::from_slice(signature).map_err(|_| KeyError::BadSignature)?
            }
            Err(_) => return Err(KeyError::BadSignature),
        };
        // Go's crypto/ecdsa does not normalise s, so high-s signatures made
        // by cosign are valid and must verify; p256's verifier accepts both.
        self.key
            .verify(msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }

    /// base64 (standard, padded) of the SHA-256 of the PKIX DER: the
    /// `verificationMaterial.publicKey.hint` cosign writes in a bundle.
    pub fn hint(&self) -> String {
        STANDARD.encode(Sha256::digest(&self.spki))
    }

    /// Where the key came from (a path, `env://VAR`, or a policy entry).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same key under another name (e.g. the policy rule it belongs to).
    pub fn with_name(mut self, name: impl Into<String>) -> PublicKey {
        self.name = name.into();
        self
    }
}

/// PEM labels that hold private key material in any form we know.
pub(crate) fn is_private_label(label: &str) -> bool {
    crate::cosign_format::is_encrypted_label(label)
        || matches!(
            label,
            "PRIVATE KEY"
                | "EC PRIVATE KEY"
                | "ENCRYPTED PRIVATE KEY"
                | "RSA PRIVATE KEY"
                | "OPENSSH PRIVATE KEY"
        )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use pkcs8::EncodePublicKey as _;

    #[test]
    fn spki_prefix_matches_the_der_encoder() {
        let key = crate::SigningKey::generate().public_key();
        let der = key.key.to_public_key_der().unwrap();
        assert_eq!(der.as_bytes(), key.to_spki_der());
    }
}
