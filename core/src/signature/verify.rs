//! [`verify`]: collect the signatures of a digest from the registry (legacy
//! `.sig` layers first, then bundles), check each against the requirements,
//! and answer with the first that satisfies them all or every unmet one.
//!
//! Fail closed: a signature whose blob is missing or does not hash to its
//! descriptor is an unmet requirement; a registry failure is an error the
//! caller maps through its `onRegistryError`, unless another signature
//! already verified (a satisfied requirement cannot be undone by a broken
//! sibling).

use super::collect::Found;
use super::requirements::{push_unique, Requirements, Unmet, Verdict, Verified};
use super::{check, legacy, referrers};
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// Why verification could not reach a verdict.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Fetching signatures failed; callers apply their `onRegistryError`
    /// when [`VerifyError::is_unavailable`], and deny otherwise.
    #[error("fetching signatures")]
    Registry(#[from] RegistryError),
    /// The image reference carries no digest (resolve it first: the digest is what is verified).
    #[error("{image} is not pinned to a digest: resolve it before verifying")]
    NotPinned {
        /// The reference given.
        image: String,
    },
}

impl VerifyError {
    /// Whether the failure is the registry being unavailable (see
    /// [`RegistryError::is_unavailable`]); anything else must deny.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, VerifyError::Registry(err) if err.is_unavailable())
    }
}

/// Applies the requirements to what was found: `Ok` with the first
/// signature that satisfies everything, else every unmet requirement.
pub(crate) fn evaluate(
    found: &[Found],
    digest: &Digest,
    repository: &str,
    req: &Requirements,
) -> Result<Verified, Vec<Unmet>> {
    let mut unmet = Vec::new();
    for item in found {
        let result = match item {
            Found::Legacy {
                index,
                payload,
                signature,
            } => check::legacy(
                *index,
                payload,
                signature.as_deref(),
                digest,
                repository,
                req,
            ),
            Found::Bundle { index, bundle } => check::bundle(*index, bundle, digest, req),
            Found::Unusable(u) => Err(vec![u.clone()]),
        };
        match result {
            Ok(verified) => return Ok(verified),
            Err(list) => list.into_iter().for_each(|u| push_unique(&mut unmet, u)),
        }
    }
    Err(unmet)
}

/// Verifies `image` (which must carry a digest: callers resolve first, and the
/// digest is what is verified) against `req`. Reads both formats: the legacy
/// `.sig` tag and bundles (referrers API, else the referrers tag schema).
/// Offline and key-based: only the image's registry is contacted.
///
/// No signature at all is a [`Verdict::Denied`] with [`Unmet::NoSignatures`],
/// not an error.
pub async fn verify(
    client: &RegistryClient,
    image: &ImageRef,
    req: &Requirements,
) -> Result<Verdict, VerifyError> {
    let Some(digest) = super::pinned_digest(image) else {
        return Err(VerifyError::NotPinned {
            image: image.to_string(),
        });
    };
    if digest.algorithm() != "sha256" {
        // cosign's tags (`sha256-<hex>.sig`, the referrers tag) exist for
        // sha256 only: nothing can vouch for this digest, which is an answer
        // about the image, not a registry failure.
        return Ok(Verdict::Denied {
            unmet: vec![Unmet::UnsupportedDigest {
                digest: digest.clone(),
            }],
            digest,
        });
    }
    let repository = image.name();
    let mut unmet = Vec::new();
    let mut any_found = false;
    let mut first_error = None;

    // Legacy first: it is what `imgate sign` writes by default and costs two
    // requests; bundles are only looked up when no legacy signature satisfies.
    let legacy = legacy::collect(client, image, &digest).await;
    any_found |= !legacy.found.is_empty();
    match evaluate(&legacy.found, &digest, &repository, req) {
        Ok(verified) => return Ok(Verdict::Verified(verified)),
        Err(list) => list.into_iter().for_each(|u| push_unique(&mut unmet, u)),
    }
    first_error = first_error.or(legacy.error);

    let bundles = referrers::collect(client, image, &digest).await;
    any_found |= !bundles.found.is_empty();
    match evaluate(&bundles.found, &digest, &repository, req) {
        Ok(verified) => return Ok(Verdict::Verified(verified)),
        Err(list) => list.into_iter().for_each(|u| push_unique(&mut unmet, u)),
    }
    first_error = first_error.or(bundles.error);

    if let Some(err) = first_error {
        return Err(VerifyError::Registry(err));
    }
    if !any_found {
        unmet.push(Unmet::NoSignatures {
            digest: digest.clone(),
        });
    }
    Ok(Verdict::Denied { digest, unmet })
}
