//! The cryptography the Sigstore crates call into, on ring and RustCrypto.
//!
//! `sigstore-crypto` defaults to `aws-lc-rs`, which needs cmake and a C
//! toolchain at build time and would be a second crypto provider beside
//! rustls' ring (`deny.toml` bans it). Without that feature the crate asks
//! for a process-wide [`CryptoProvider`]; this is imgate's. It verifies only:
//! imgate never signs with a Sigstore key.
//!
//! ring verifies whole messages for every scheme Sigstore uses except
//! ML-DSA. ring cannot verify a signature over a digest the caller already
//! computed (a `sha256:` artifact given by digest), so prehashed ECDSA goes
//! through RustCrypto's `p256`/`p384`; prehashed RSA is refused with a clear
//! error (no Sigstore deployment signs artifacts with RSA keys today).

use std::sync::Once;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use ring::digest;
use ring::signature::{self as ring_sig, UnparsedPublicKey, VerificationAlgorithm};
use sigstore_verify::crypto::{
    install_default_provider, CryptoProvider, Error as CryptoError, HashContext, SigningScheme,
};
use sigstore_verify::types::HashAlgorithm;

/// imgate's verification-only provider.
#[derive(Debug)]
pub(crate) struct RingProvider;

static PROVIDER: RingProvider = RingProvider;
static INSTALL: Once = Once::new();

/// Install the provider once per process; every entry point of
/// `imgate-sigstore` calls this before touching the Sigstore crates.
pub(crate) fn ensure_installed() {
    INSTALL.call_once(|| {
        // Err means another provider was installed first (an embedding
        // application's choice); that one then serves, which is its right.
        let _ = install_default_provider(&PROVIDER);
    });
}

struct RingHash(digest::Context);

impl HashContext for RingHash {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finalize(self: Box<Self>) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}

fn ring_algorithm(scheme: SigningScheme) -> Option<&'static dyn VerificationAlgorithm> {
    let alg: &'static dyn VerificationAlgorithm = match scheme {
        SigningScheme::EcdsaP256Sha256 => &ring_sig::ECDSA_P256_SHA256_ASN1,
        SigningScheme::EcdsaP256Sha384 => &ring_sig::ECDSA_P256_SHA384_ASN1,
        SigningScheme::EcdsaP384Sha256 => &ring_sig::ECDSA_P384_SHA256_ASN1,
        SigningScheme::EcdsaP384Sha384 => &ring_sig::ECDSA_P384_SHA384_ASN1,
        SigningScheme::Ed25519 => &ring_sig::ED25519,
        SigningScheme::RsaPssSha256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
        SigningScheme::RsaPssSha384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
        SigningScheme::RsaPssSha512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        SigningScheme::RsaPkcs1Sha256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
        SigningScheme::RsaPkcs1Sha384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
        SigningScheme::RsaPkcs1Sha512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
        _ => return None,
    };
    Some(alg)
}

fn invalid(scheme: SigningScheme) -> CryptoError {
    CryptoError::Verification(format!("{} signature invalid", scheme.name()))
}

impl CryptoProvider for RingProvider {
    fn hash(&self, algorithm: HashAlgorithm) -> Result<Box<dyn HashContext>, CryptoError> {
        let alg = match algorithm {
            HashAlgorithm::Sha2256 => &digest::SHA256,
            HashAlgorithm::Sha2384 => &digest::SHA384,
            HashAlgorithm::Sha2512 => &digest::SHA512,
            other => {
                return Err(CryptoError::UnsupportedAlgorithm(format!(
                    "cannot compute {other} digests"
                )))
            }
        };
        Ok(Box::new(RingHash(digest::Context::new(alg))))
    }

    fn verify_raw(
        &self,
        scheme: SigningScheme,
        spki_pubkey_bytes: &[u8],
        data: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let alg = ring_algorithm(scheme).ok_or_else(|| {
            CryptoError::UnsupportedAlgorithm(format!(
                "{} signatures are not supported by imgate",
                scheme.name()
            ))
        })?;
        UnparsedPublicKey::new(alg, spki_pubkey_bytes)
            .verify(data, signature)
            .map_err(|_| invalid(scheme))
    }

    fn verify_prehashed(
        &self,
        scheme: SigningScheme,
        spki_pubkey_bytes: &[u8],
        digest: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        match scheme {
            SigningScheme::EcdsaP256Sha256 | SigningScheme::EcdsaP256Sha384 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(spki_pubkey_bytes)
                    .map_err(|_| CryptoError::InvalidKeyFormat("not a P-256 point".into()))?;
                let sig =
                    p256::ecdsa::Signature::from_der(signature).map_err(|_| invalid(scheme))?;
                key.verify_prehash(digest, &sig)
                    .map_err(|_| invalid(scheme))
            }
            SigningScheme::EcdsaP384Sha256 | SigningScheme::EcdsaP384Sha384 => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(spki_pubkey_bytes)
                    .map_err(|_| CryptoError::InvalidKeyFormat("not a P-384 point".into()))?;
                let sig =
                    p384::ecdsa::Signature::from_der(signature).map_err(|_| invalid(scheme))?;
                key.verify_prehash(digest, &sig)
                    .map_err(|_| invalid(scheme))
            }
            other => Err(CryptoError::UnsupportedAlgorithm(format!(
                "{} signatures over a precomputed digest are not supported by imgate; \
                 give the artifact itself",
                other.name()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::ecdsa::signature::Signer;

    fn p256_key() -> (p256::ecdsa::SigningKey, Vec<u8>) {
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = sk
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        (sk, point)
    }

    #[test]
    fn raw_p256_accepts_good_and_rejects_changed_message() {
        let (sk, point) = p256_key();
        let sig: p256::ecdsa::Signature = sk.sign(b"hello");
        let der = sig.to_der();
        let p = RingProvider;
        p.verify_raw(
            SigningScheme::EcdsaP256Sha256,
            &point,
            b"hello",
            der.as_bytes(),
        )
        .unwrap();
        assert!(p
            .verify_raw(
                SigningScheme::EcdsaP256Sha256,
                &point,
                b"hellO",
                der.as_bytes()
            )
            .is_err());
    }

    #[test]
    fn prehashed_p256_matches_raw() {
        let (sk, point) = p256_key();
        let digest = ring::digest::digest(&ring::digest::SHA256, b"artifact");
        let sig: p256::ecdsa::Signature = sk.sign_prehash(digest.as_ref()).unwrap();
        let der = sig.to_der();
        let p = RingProvider;
        p.verify_prehashed(
            SigningScheme::EcdsaP256Sha256,
            &point,
            digest.as_ref(),
            der.as_bytes(),
        )
        .unwrap();
        // The same signature verifies over the message itself.
        p.verify_raw(
            SigningScheme::EcdsaP256Sha256,
            &point,
            b"artifact",
            der.as_bytes(),
        )
        .unwrap();
        let other = ring::digest::digest(&ring::digest::SHA256, b"other");
        assert!(p
            .verify_prehashed(
                SigningScheme::EcdsaP256Sha256,
                &point,
                other.as_ref(),
                der.as_bytes()
            )
            .is_err());
    }

    #[test]
    fn hashes_match_known_answers() {
        let mut h = RingProvider.hash(HashAlgorithm::Sha2256).unwrap();
        h.update(b"abc");
        assert_eq!(
            hex::encode(h.finalize()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
