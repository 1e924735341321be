//! [`Signer`]: what signing an image needs from a key, whichever vault holds
//! it. A key file ([`SigningKey`]), a PKCS#11 token
//! ([`crate::pkcs11::Pkcs11Signer`]) and Vault/OpenBao transit
//! (`crate::vault::VaultSigner`, feature `hashivault`) all produce the same
//! ASN.1 DER ECDSA-P256-SHA256 signature over the same bytes, so the
//! signature formats never know where the key lives.

use crate::error::KeyError;
use crate::public::PublicKey;
use crate::signing::SigningKey;

/// A P-256 private key that signs on request; the key itself may never be
/// in this process.
///
/// `Send + Sync` so an async caller can hold it across awaits; signing
/// blocks (a token or a network round trip), which is acceptable for the
/// one-shot CLI that signs.
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// Where the key lives, for messages (a path, `env://VAR`, a PKCS#11 URI
    /// without its PIN, `hashivault://NAME`).
    fn name(&self) -> &str;

    /// The public half, as a verifier must be given it.
    fn public_key(&self) -> PublicKey;

    /// An ASN.1 DER ECDSA-P256-SHA256 signature over `msg` (the message, not
    /// its digest: remote signers hash locally and send the digest).
    fn sign_message(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
}

impl Signer for SigningKey {
    fn name(&self) -> &str {
        SigningKey::name(self)
    }

    fn public_key(&self) -> PublicKey {
        SigningKey::public_key(self)
    }

    fn sign_message(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.sign(msg))
    }
}

/// Turns a signature a token or a KMS returned into the DER form cosign
/// stores, and checks it against the public key before anything is pushed:
/// a token that signs with another key than the one it advertises, or a
/// truncated answer, fails here rather than in every verifier later.
///
/// `raw_or_der` is either `r || s` (64 bytes, what PKCS#11's `CKM_ECDSA`
/// returns) or ASN.1 DER (what Vault returns). The high-S form is
/// normalised to low-S, which every verifier accepts.
pub(crate) fn finish_remote_signature(
    public: &PublicKey,
    msg: &[u8],
    raw_or_der: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let parsed = if raw_or_der.len() == 64 {
        p256::ecdsa::Signature::from_slice(raw_or_der)
    } else {
        p256::ecdsa::Signature::from_der(raw_or_der)
    }
    .map_err(|e| KeyError::RemoteSignature {
        key: public.name().to_string(),
        detail: format!("the signature returned is not an ECDSA P-256 signature: {e}"),
    })?;
    let signature = parsed.normalize_s().unwrap_or(parsed);
    let der = signature.to_der().as_bytes().to_vec();
    public
        .verify(msg, &der)
        .map_err(|_| KeyError::RemoteSignature {
            key: public.name().to_string(),
            detail: "the signature returned does not verify with the key's public key".to_string(),
        })?;
    Ok(der)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use sha2::{Digest as _, Sha256};

    fn raw_signature(key: &p256::ecdsa::SigningKey, msg: &[u8]) -> Vec<u8> {
        let digest = Sha256::digest(msg);
        let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).unwrap();
        sig.to_bytes().to_vec()
    }

    #[test]
    fn raw_and_der_signatures_become_the_same_der() {
        let key = SigningKey::generate();
        let public = key.public_key();
        let raw = raw_signature(key.inner_for_tests(), b"payload");
        assert_eq!(raw.len(), 64);
        let der = finish_remote_signature(&public, b"payload", &raw).unwrap();
        public.verify(b"payload", &der).unwrap();
        let again = finish_remote_signature(&public, b"payload", &der).unwrap();
        assert_eq!(der, again);
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let sig = other.sign(b"payload");
        let err = finish_remote_signature(&key.public_key(), b"payload", &sig).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        let err = finish_remote_signature(&key.public_key(), b"payload", b"junk").unwrap_err();
        assert!(err.to_string().contains("not an ECDSA P-256"), "{err}");
    }
}
