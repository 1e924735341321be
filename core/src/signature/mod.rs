//! cosign signatures: both formats cosign writes, signing and key-based,
//! offline verification.
//!
//! - Legacy (cosign v1/v2): an OCI manifest at tag `sha256-<hex>.sig` whose
//!   layers are simple-signing payloads ([`payload`]), the signature in a layer
//!   annotation ([`legacy`]).
//! - Bundle (cosign v3's default): a Sigstore bundle v0.3 with a DSSE envelope
//!   over an in-toto statement ([`bundle`]), attached through the OCI
//!   referrers API or the referrers tag schema (`referrers`).
//!
//! Verification reads the signatures listed for the digest (`collect`,
//! bounded in size and number), applies the [`Requirements`] to each as it
//! arrives (`check`), and answers with the first that satisfied them all or
//! with every [`Unmet`] requirement. No Sigstore
//! service is ever contacted: only the registry holding the image.

use std::fmt;

use serde::Serialize;

use crate::digest::Digest;

pub mod bundle;
mod check;
mod collect;
pub mod legacy;
pub mod payload;
mod referrers;
mod requirements;
mod sign;
pub(crate) mod tag;
mod verify;

pub(crate) use collect::{fetch_blob, BlobProblem, Listing, FETCH_CONCURRENCY};
pub use collect::{
    LayerAnnotations, MAX_BUNDLE_SIZE, MAX_PAYLOAD_SIZE, MAX_REFERRERS, MAX_SIGNATURE_LAYERS,
};
pub(crate) use referrers::{attach_with_predicate, index as referrers_index, referrer_bundle};
pub use requirements::{KeylessAuthority, Requirements, SignatureId, Unmet, Verdict, Verified};
pub use sign::{sign, sign_with_sigstore, SignError, SignOptions};
pub(crate) use verify::verify_listed;
pub use verify::{verify, VerifyError};

/// Layer media type of a legacy signature (the simple-signing payload).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 DER signature of a legacy signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A signature format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// cosign's `.sig` tag with simple-signing payloads (read by every verifier in the field).
    #[default]
    Legacy,
    /// A Sigstore bundle v0.3 attached as an OCI referrer (cosign v3's default).
    Bundle,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Legacy => "legacy",
            Format::Bundle => "bundle",
        })
    }
}

/// The tag of the legacy signature manifest of `digest`: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", digest.tag_form())
}
