//! [`attest`]: sign an in-toto statement about an image digest and store it
//! the way cosign does, in either format, keeping every attestation already
//! there: a DSSE envelope layer appended to the `.att` manifest (legacy), or
//! a Sigstore bundle attached as a referrer (bundle).
//!
//! Signing goes through [`EnvelopeSigner`], which sees only the bytes to
//! sign and answers with the signature and how to verify it (a key's hint;
//! a keyless signer's certificate and log entry), so the formats never know
//! who signs: [`KeySigner`] signs offline with a key (file, PKCS#11, Vault),
//! and `crate::sigstore::SigstoreSigner` keylessly (or a key with its
//! signature logged), its work verified by imgate before it returns.

use std::collections::BTreeMap;

use base64::Engine as _;
use futures::future::BoxFuture;

use super::{legacy, statement};
use crate::digest::Digest;
use crate::oci::Descriptor;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};
use crate::signature::bundle::{self, Envelope, EnvelopeSignature, IN_TOTO_PAYLOAD_TYPE};
use crate::signature::legacy::{
    CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION, REKOR_BUNDLE_ANNOTATION, RFC3161_ANNOTATION,
};
use crate::signature::tag::TagWriteError;
use crate::signature::Format;
use crate::sigstore::{ArtifactInput, Payload, SigstoreSigner};

/// A signature over a DSSE envelope's PAE and what a verifier needs with it.
#[derive(Debug, Clone)]
pub struct SignedEnvelope {
    /// ASN.1 DER signature over the PAE.
    pub signature: Vec<u8>,
    /// The Sigstore bundle v0.3 holding the envelope and the verification
    /// material (a key hint; or a certificate, log entries, timestamps).
    pub bundle: Vec<u8>,
    /// Annotations of a legacy layer besides the signature (a keyless
    /// signer's `dev.sigstore.cosign/certificate`, `/chain`, `/bundle`).
    pub legacy_annotations: BTreeMap<String, String>,
}

/// Why a signer could not sign (a token, KMS or Sigstore service refused).
pub type SignerError = Box<dyn std::error::Error + Send + Sync>;

/// What signs attestations: bytes in, a signature and its verification
/// material out.
pub trait EnvelopeSigner: Send + Sync + std::fmt::Debug {
    /// Signs the DSSE envelope of `payload` (of `payload_type`), an in-toto
    /// statement about `subject`: the signature is over
    /// `bundle::pae(payload_type, payload)`.
    fn sign_envelope<'a>(
        &'a self,
        payload_type: &'a str,
        payload: &'a [u8],
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<SignedEnvelope, SignerError>>;
}

/// An [`EnvelopeSigner`] over a key (file, PKCS#11, Vault): no log entry,
/// verified offline with the public key.
#[derive(Debug)]
pub struct KeySigner<'k>(pub &'k dyn imgate_keys::Signer);

impl EnvelopeSigner for KeySigner<'_> {
    fn sign_envelope<'a>(
        &'a self,
        payload_type: &'a str,
        payload: &'a [u8],
        _subject: &'a Digest,
    ) -> BoxFuture<'a, Result<SignedEnvelope, SignerError>> {
        Box::pin(async move {
            // Signing may block (a token, a KMS round trip): acceptable for
            // the one-shot CLI, as for `imgate sign`.
            let signature = self.0.sign_message(&bundle::pae(payload_type, payload))?;
            let bundle = bundle::build_bundle(payload, &signature, &self.0.public_key().hint());
            Ok(SignedEnvelope {
                signature,
                bundle,
                legacy_annotations: BTreeMap::new(),
            })
        })
    }
}

impl EnvelopeSigner for SigstoreSigner<'_> {
    fn sign_envelope<'a>(
        &'a self,
        payload_type: &'a str,
        payload: &'a [u8],
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<SignedEnvelope, SignerError>> {
        Box::pin(async move {
            let sha256: [u8; 32] = hex::decode(subject.hex())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{subject} is not a sha256 digest"))?;
            let signed = self
                .sign(
                    Payload::Dsse {
                        payload_type,
                        payload,
                    },
                    ArtifactInput::Sha256(sha256),
                )
                .await?;
            let legacy = &signed.legacy;
            let signature = bundle::decode_base64(&legacy.signature_b64)?;
            let legacy_annotations = [
                (CERTIFICATE_ANNOTATION, &legacy.certificate_pem),
                (CHAIN_ANNOTATION, &legacy.chain_pem),
                (REKOR_BUNDLE_ANNOTATION, &legacy.rekor_bundle),
                (RFC3161_ANNOTATION, &legacy.rfc3161_timestamp),
            ]
            .into_iter()
            .filter_map(|(key, value)| value.clone().map(|v| (key.to_string(), v)))
            .collect();
            Ok(SignedEnvelope {
                signature,
                bundle: signed.bundle,
                legacy_annotations,
            })
        })
    }
}

/// How to attest.
#[derive(Debug, Clone)]
pub struct AttestOptions {
    /// The predicate type: a cosign short name or a URI.
    pub predicate_type: String,
    /// The predicate file's bytes.
    pub predicate: Vec<u8>,
    /// Legacy `.att` (the default) or a bundle referrer.
    pub format: Format,
}

/// Why attesting failed. Each names the image.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The reference carries no digest.
    #[error("{image} is not pinned to a digest: resolve it before attesting")]
    NotPinned {
        /// The reference given.
        image: String,
    },
    /// The registry has no manifest with that digest.
    #[error("cannot attest {image}: the registry has no manifest with that digest")]
    ImageNotFound {
        /// The pinned reference.
        image: String,
    },
    /// The predicate cannot be made into a statement.
    #[error("cannot attest {image}")]
    Predicate {
        /// The pinned reference.
        image: String,
        /// What is wrong with the predicate.
        #[source]
        source: statement::PredicateError,
    },
    /// The signer refused or failed.
    #[error("signing the attestation of {image}")]
    Sign {
        /// The pinned reference.
        image: String,
        /// What the signer said.
        #[source]
        source: SignerError,
    },
    /// Talking to the registry failed.
    #[error("pushing the attestation of {image}")]
    Registry {
        /// The pinned reference.
        image: String,
        /// The registry error.
        #[source]
        source: RegistryError,
    },
    /// The `.att` manifest or referrers index does not parse; left untouched.
    #[error("cannot add an attestation to {image}: {detail}")]
    Malformed {
        /// The pinned reference.
        image: String,
        /// What does not parse.
        detail: String,
    },
    /// Concurrent writers kept replacing the tag.
    #[error("gave up adding the attestation to {image} after {attempts} attempts: concurrent writers kept replacing the tag")]
    Conflict {
        /// The pinned reference.
        image: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// What [`attest`] stored.
#[derive(Debug, Clone)]
pub struct Attested {
    /// The predicate type URI signed.
    pub predicate_type: String,
    /// The digest of the `.att` manifest (legacy) or the referrer manifest (bundle).
    pub stored_in: Digest,
}

/// Signs a statement of `opts.predicate_type` about `image` (pinned; the
/// manifest must exist) with `signer`, and stores it in `opts.format`,
/// appending to what is there.
pub async fn attest(
    client: &RegistryClient,
    image: &ImageRef,
    signer: &dyn EnvelopeSigner,
    opts: &AttestOptions,
) -> Result<Attested, AttestError> {
    let name = image.to_string();
    let Some(digest) = image.digest.clone() else {
        return Err(AttestError::NotPinned { image: name });
    };
    let registry = |source| AttestError::Registry {
        image: name.clone(),
        source,
    };
    let target = match client.get_manifest(image, digest.as_str()).await {
        Ok(m) => m,
        Err(RegistryError::NotFound { .. }) => {
            return Err(AttestError::ImageNotFound { image: name })
        }
        Err(err) => return Err(registry(err)),
    };
    let now = now_rfc3339();
    let (uri, statement) = statement::build(
        &opts.predicate_type,
        &opts.predicate,
        &image.name(),
        &digest,
        &now,
    )
    .map_err(|source| AttestError::Predicate {
        image: name.clone(),
        source,
    })?;
    let signed = signer
        .sign_envelope(IN_TOTO_PAYLOAD_TYPE, &statement, &digest)
        .await
        .map_err(|source| AttestError::Sign {
            image: name.clone(),
            source,
        })?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let envelope = Envelope {
        payload: b64.encode(&statement),
        payload_type: IN_TOTO_PAYLOAD_TYPE.to_string(),
        signatures: vec![EnvelopeSignature {
            sig: b64.encode(&signed.signature),
            keyid: None,
        }],
    };
    let stored = match opts.format {
        Format::Legacy => {
            let bytes = serde_json::to_vec(&envelope).map_err(|err| AttestError::Malformed {
                image: name.clone(),
                detail: err.to_string(),
            })?;
            let layer = legacy::attestation_layer(&bytes, &uri, &signed.legacy_annotations);
            legacy::append(client, image, &digest, &bytes, layer).await
        }
        Format::Bundle => {
            let bytes = signed.bundle;
            let subject = Descriptor {
                media_type: target.media_type.clone(),
                digest: digest.clone(),
                size: target.bytes.len() as u64,
                artifact_type: None,
                platform: None,
                annotations: None,
            };
            crate::signature::attach_with_predicate(client, image, subject, &bytes, &now, &uri)
                .await
        }
    };
    let stored_in = stored.map_err(|err| match err {
        TagWriteError::Registry(source) => AttestError::Registry {
            image: name.clone(),
            source,
        },
        TagWriteError::Malformed(detail) => AttestError::Malformed {
            image: name.clone(),
            detail,
        },
        TagWriteError::Conflict(attempts) => AttestError::Conflict {
            image: name.clone(),
            attempts,
        },
    })?;
    Ok(Attested {
        predicate_type: uri,
        stored_in,
    })
}

/// The current time in RFC 3339 (seconds).
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
