//! What signature collection hands to the checks, shared by both formats:
//! a listing that is absent, malformed or found; one signature's bytes or why
//! it is unusable; and reading a blob of a signature, where content problems
//! become unmet requirements rather than registry errors.
//!
//! The format modules (`legacy.rs`, `referrers.rs`) depend on this one and
//! never on each other or on `verify.rs`.

use super::requirements::{SignatureId, Unmet};
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// Where a format lists its signatures (the `.sig` manifest, a referrers
/// index), as read from the registry.
#[derive(Debug)]
pub(crate) enum Listing<T> {
    /// Nothing there: no signature of this format.
    Absent,
    /// Something there that does not parse; the detail names it.
    Malformed(String),
    /// The parsed listing.
    Found(T),
}

impl<T> Listing<T> {
    /// The listing with its content mapped.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Listing<U> {
        match self {
            Listing::Absent => Listing::Absent,
            Listing::Malformed(detail) => Listing::Malformed(detail),
            Listing::Found(t) => Listing::Found(f(t)),
        }
    }
}

/// One signature found, with the bytes its checks need, or why it is unusable.
#[derive(Debug)]
pub(crate) enum Found {
    /// A legacy layer: payload blob (digest-checked) and signature annotation.
    Legacy {
        index: usize,
        payload: Vec<u8>,
        signature: Option<String>,
    },
    /// A bundle blob (digest-checked).
    Bundle { index: usize, bundle: Vec<u8> },
    /// A signature that cannot be checked (blob missing or not matching).
    Unusable(Unmet),
}

/// The signatures of one format, and the registry error that stopped the
/// collection early, if any.
#[derive(Debug, Default)]
pub(crate) struct Collection {
    pub(crate) found: Vec<Found>,
    pub(crate) error: Option<RegistryError>,
}

impl Collection {
    /// `Ok` with the listing to collect from, or `Err` with the finished
    /// collection when there is none, it is malformed (one unusable
    /// signature) or the registry failed.
    pub(crate) fn from_listing<T>(
        listing: Result<Listing<T>, RegistryError>,
    ) -> Result<T, Collection> {
        let mut out = Collection::default();
        match listing {
            Ok(Listing::Found(listing)) => return Ok(listing),
            Ok(Listing::Absent) => {}
            Ok(Listing::Malformed(detail)) => out.found.push(Found::Unusable(Unmet::Malformed {
                signature: None,
                detail,
            })),
            Err(err) => out.error = Some(err),
        }
        Err(out)
    }
}

/// Reads a blob of a signature; content problems become unmet requirements.
pub(crate) async fn fetch_blob(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
    id: SignatureId,
) -> Result<Result<Vec<u8>, Unmet>, RegistryError> {
    match client.get_blob(image, digest).await {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(RegistryError::DigestMismatch { .. }) => Ok(Err(Unmet::BlobMismatch {
            signature: id,
            digest: digest.clone(),
        })),
        Err(RegistryError::TooLarge { size, limit, .. }) => Ok(Err(Unmet::TooLarge {
            signature: id,
            digest: digest.clone(),
            size,
            limit,
        })),
        Err(RegistryError::NotFound { .. }) => Ok(Err(Unmet::Malformed {
            signature: Some(id),
            detail: format!("layer {digest} is missing from the registry"),
        })),
        Err(err) => Err(err),
    }
}
