//! What signature collection hands to the checks, shared by both formats:
//! a listing that is absent, malformed or found; one signature's bytes or why
//! it is unusable; the caps on what an image's signatures may make imgate
//! read; and reading a blob of a signature, where content problems become
//! unmet requirements rather than registry errors.
//!
//! The format modules (`legacy.rs`, `referrers.rs`) depend on this one and
//! never on each other or on `verify.rs`.

use super::requirements::{SignatureId, Unmet};
use crate::digest::Digest;
use crate::oci::Descriptor;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// Largest simple-signing payload read (real ones are well under 2 KiB).
pub const MAX_PAYLOAD_SIZE: usize = 64 << 10;
/// Largest Sigstore bundle read (a few KiB with a certificate chain).
pub const MAX_BUNDLE_SIZE: usize = 256 << 10;
/// Signatures read per `.sig` manifest (its simple-signing layers); the rest
/// are reported as unchecked, never counted as passing.
pub const MAX_SIGNATURE_LAYERS: usize = 32;
/// Referrers examined per image (signatures, attestations and other
/// artifacts alike); the rest are reported as unchecked.
pub const MAX_REFERRERS: usize = 32;
/// Signature blobs (and referrer manifests) fetched at the same time for one
/// image.
pub(crate) const FETCH_CONCURRENCY: usize = 4;

/// Where a format lists its signatures (the `.sig` manifest, a referrers
/// index), as read from the registry.
#[derive(Debug, Clone)]
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

/// One signature read from the registry, ready for its checks, or why it
/// cannot be checked.
#[derive(Debug)]
pub(crate) enum Found {
    /// A legacy layer: payload blob (digest-checked) and its annotations.
    Legacy {
        index: usize,
        payload: Vec<u8>,
        annotations: LayerAnnotations,
    },
    /// A bundle blob (digest-checked).
    Bundle { index: usize, bundle: Vec<u8> },
    /// A signature that cannot be checked (blob missing, not matching, too large).
    Unusable(Unmet),
}

/// Why a signature blob was not read.
#[derive(Debug)]
pub(crate) enum BlobProblem {
    /// The bytes do not hash to the descriptor's digest.
    Mismatch(Digest),
    /// The registry does not have the blob.
    Missing(Digest),
    /// Larger than a signature of its kind may be.
    TooLarge {
        digest: Digest,
        size: Option<u64>,
        limit: u64,
    },
}

impl BlobProblem {
    /// The unmet requirement for signature `id`.
    pub(crate) fn unmet(self, id: SignatureId) -> Unmet {
        match self {
            BlobProblem::Mismatch(digest) => Unmet::BlobMismatch {
                signature: id,
                digest,
            },
            BlobProblem::Missing(digest) => Unmet::Malformed {
                signature: Some(id),
                detail: format!("layer {digest} is missing from the registry"),
            },
            BlobProblem::TooLarge {
                digest,
                size,
                limit,
            } => Unmet::TooLarge {
                signature: id,
                digest,
                size,
                limit,
            },
        }
    }
}

/// Reads the blob `layer` describes, at most `limit` bytes: a descriptor
/// announcing more is refused before any request, and reading stops at the
/// cap if the descriptor lied. Content problems are a [`BlobProblem`].
pub(crate) async fn fetch_blob(
    client: &RegistryClient,
    image: &ImageRef,
    layer: &Descriptor,
    limit: usize,
) -> Result<Result<Vec<u8>, BlobProblem>, RegistryError> {
    let digest = &layer.digest;
    if layer.size > limit as u64 {
        return Ok(Err(BlobProblem::TooLarge {
            digest: digest.clone(),
            size: Some(layer.size),
            limit: limit as u64,
        }));
    }
    match client.get_blob_limited(image, digest, limit).await {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(RegistryError::DigestMismatch { .. }) => Ok(Err(BlobProblem::Mismatch(digest.clone()))),
        Err(RegistryError::TooLarge { size, limit, .. }) => Ok(Err(BlobProblem::TooLarge {
            digest: digest.clone(),
            size,
            limit,
        })),
        Err(RegistryError::NotFound { .. }) => Ok(Err(BlobProblem::Missing(digest.clone()))),
        Err(err) => Err(err),
    }
}

/// The annotations of a legacy layer that verification reads (filled in by
/// `legacy::layer_annotations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerAnnotations {
    /// `dev.cosignproject.cosign/signature`.
    pub signature: Option<String>,
    /// `dev.sigstore.cosign/certificate`: present on keyless signatures.
    pub certificate: Option<String>,
    /// `dev.sigstore.cosign/chain`.
    pub chain: Option<String>,
    /// `dev.sigstore.cosign/bundle`: the Rekor entry.
    pub rekor_bundle: Option<String>,
}
