//! [`sign`] and [`sign_with_sigstore`]: sign an image digest in either
//! format and push the signature next to it, keeping every signature
//! already there.

use std::collections::BTreeMap;

use base64::Engine as _;
use imgate_keys::{KeyError, Signer};

use super::tag::TagWriteError;
use super::{bundle, payload, Format};
use super::{legacy, referrers};
use crate::digest::Digest;
use crate::oci::Descriptor;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};
use crate::sigstore::{ArtifactInput, Payload, SigningError, SigstoreSigner};

/// How to sign.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// The format to write (legacy `.sig` by default: every verifier in the field reads it).
    pub format: Format,
    /// Annotations to sign along (legacy: `optional`; bundle: the statement subject's annotations).
    pub annotations: BTreeMap<String, String>,
}

/// Why signing failed. Each names the image.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The reference carries no digest; resolve it first.
    #[error("{image} is not pinned to a digest: resolve it before signing")]
    NotPinned {
        /// The reference given.
        image: String,
    },
    /// The registry has no manifest with that digest: refusing to sign what does not exist.
    #[error("cannot sign {image}: the registry has no manifest with that digest")]
    ImageNotFound {
        /// The pinned reference.
        image: String,
    },
    /// Talking to the registry failed.
    #[error("pushing the signature of {image}")]
    Registry {
        /// The pinned reference.
        image: String,
        /// The registry error.
        #[source]
        source: RegistryError,
    },
    /// The existing signature manifest or referrers index does not parse; it
    /// is left untouched rather than overwritten.
    #[error("cannot add a signature to {image}: {detail}")]
    Malformed {
        /// The pinned reference.
        image: String,
        /// What does not parse.
        detail: String,
    },
    /// The key could not sign (a token or KMS refused or is unreachable).
    #[error("signing {image}")]
    Key {
        /// The pinned reference.
        image: String,
        /// What the key's holder said.
        #[source]
        source: KeyError,
    },
    /// Making the signature's Sigstore evidence failed (identity token,
    /// Fulcio, Rekor, timestamp authority, or the self-check); nothing was
    /// pushed.
    #[error("signing {image}")]
    Sigstore {
        /// The pinned reference.
        image: String,
        /// What failed.
        #[source]
        source: SigningError,
    },
    /// Concurrent writers kept replacing the signature tag.
    #[error("gave up adding the signature to {image} after {attempts} attempts: concurrent signers kept replacing the tag")]
    Conflict {
        /// The pinned reference.
        image: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// Signs `image` (which must carry a digest; the manifest must exist in the
/// registry) with `key`, appending to the signatures already there. Returns
/// the digest of the signature manifest (legacy: the `.sig` manifest; bundle:
/// the artifact manifest). `key` is any [`Signer`]: a key file, a PKCS#11
/// token or a KMS; the bytes signed and the layout are the same for all. No
/// log entry or timestamp is made: see [`sign_with_sigstore`] for that.
pub async fn sign(
    client: &RegistryClient,
    image: &ImageRef,
    key: &dyn Signer,
    opts: &SignOptions,
) -> Result<Digest, SignError> {
    sign_by(client, image, By::Key(key), opts).await
}

/// Like [`sign`], with the signature's Sigstore evidence made by `signer`
/// (keyless: a Fulcio certificate; or a key whose signature is logged): a
/// Rekor entry, a timestamp where configured, and in the legacy layout
/// cosign's certificate, chain, Rekor-bundle and timestamp annotations. What
/// is pushed has passed imgate's own verification first.
pub async fn sign_with_sigstore(
    client: &RegistryClient,
    image: &ImageRef,
    signer: &SigstoreSigner<'_>,
    opts: &SignOptions,
) -> Result<Digest, SignError> {
    sign_by(client, image, By::Sigstore(signer), opts).await
}

/// Who signs.
enum By<'a, 'k> {
    Key(&'a dyn Signer),
    Sigstore(&'a SigstoreSigner<'k>),
}

async fn sign_by(
    client: &RegistryClient,
    image: &ImageRef,
    by: By<'_, '_>,
    opts: &SignOptions,
) -> Result<Digest, SignError> {
    let name = image.to_string();
    let Some(digest) = image.digest.clone() else {
        return Err(SignError::NotPinned { image: name });
    };
    let registry_err = |source| SignError::Registry {
        image: name.clone(),
        source,
    };
    let target = match client.get_manifest(image, digest.as_str()).await {
        Ok(m) => m,
        Err(RegistryError::NotFound { .. }) => {
            return Err(SignError::ImageNotFound { image: name })
        }
        Err(err) => return Err(registry_err(err)),
    };
    let key_err = |source| SignError::Key {
        image: name.clone(),
        source,
    };
    let sigstore_err = |source| SignError::Sigstore {
        image: name.clone(),
        source,
    };
    match opts.format {
        Format::Legacy => {
            let body = payload::build(&image.name(), &digest, &opts.annotations);
            let layer = match by {
                By::Key(key) => {
                    let signature = base64::engine::general_purpose::STANDARD
                        .encode(key.sign_message(&body).map_err(key_err)?);
                    legacy::signature_layer(&body, &signature)
                }
                By::Sigstore(signer) => {
                    let signed = signer
                        .sign(Payload::Message(&body), ArtifactInput::Bytes(&body))
                        .await
                        .map_err(sigstore_err)?;
                    signer
                        .check_legacy(&body, &signed.legacy, digest.as_str())
                        .map_err(sigstore_err)?;
                    legacy::evidence_layer(&body, &signed.legacy)
                }
            };
            legacy::append(client, image, &digest, &body, layer)
                .await
                .map_err(|err| tag_error(&name, err))
        }
        Format::Bundle => {
            let statement = bundle::build_statement(&digest, &opts.annotations);
            let bundle_bytes = match by {
                By::Key(key) => {
                    let sig = key
                        .sign_message(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &statement))
                        .map_err(key_err)?;
                    bundle::build_bundle(&statement, &sig, &key.public_key().hint())
                }
                By::Sigstore(signer) => {
                    let subject = digest_bytes(&digest).ok_or_else(|| SignError::Malformed {
                        image: name.clone(),
                        detail: format!("{digest} is not a SHA-256 digest"),
                    })?;
                    let payload = Payload::Dsse {
                        payload_type: bundle::IN_TOTO_PAYLOAD_TYPE,
                        payload: &statement,
                    };
                    signer
                        .sign(payload, ArtifactInput::Sha256(subject))
                        .await
                        .map_err(sigstore_err)?
                        .bundle
                }
            };
            let subject = Descriptor {
                media_type: target.media_type.clone(),
                digest: digest.clone(),
                size: target.bytes.len() as u64,
                artifact_type: None,
                platform: None,
                annotations: None,
            };
            referrers::attach(client, image, subject, &bundle_bytes, &now_rfc3339())
                .await
                .map_err(|err| tag_error(&name, err))
        }
    }
}

/// The 32 bytes of a `sha256:` digest.
fn digest_bytes(digest: &Digest) -> Option<[u8; 32]> {
    if digest.algorithm() != "sha256" {
        return None;
    }
    hex::decode(digest.hex()).ok()?.try_into().ok()
}

/// The signing error for a failed write to a signature tag of `image`.
fn tag_error(image: &str, err: TagWriteError) -> SignError {
    let image = image.to_string();
    match err {
        TagWriteError::Registry(source) => SignError::Registry { image, source },
        TagWriteError::Malformed(detail) => SignError::Malformed { image, detail },
        TagWriteError::Conflict(attempts) => SignError::Conflict { image, attempts },
    }
}

/// The current time in RFC 3339 (seconds), for `org.opencontainers.image.created`.
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
