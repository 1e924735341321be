//! [`verify`]: read the signatures of a digest from the registry (legacy
//! `.sig` layers first, then bundles), check each against the requirements
//! as it arrives, and answer with the first that satisfies them all (reading
//! no further) or every unmet one.
//!
//! Fail closed: a signature whose blob is missing or does not hash to its
//! descriptor is an unmet requirement; a registry failure is an error the
//! caller maps through its `onRegistryError`, unless another signature
//! already verified (a satisfied requirement cannot be undone by a broken
//! sibling).

use std::future::Future;

use futures::{Stream, StreamExt as _};

use super::collect::{Found, Listing};
use super::requirements::{push_unique, Requirements, Unmet, Verdict, Verified};
use super::{check, legacy, referrers};
use crate::digest::Digest;
use crate::oci::ImageIndex;
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

/// What verification learnt so far from the signatures that did not satisfy.
struct Findings<'a> {
    digest: &'a Digest,
    repository: String,
    req: &'a Requirements,
    unmet: Vec<Unmet>,
    any_found: bool,
    first_error: Option<RegistryError>,
}

impl Findings<'_> {
    /// Applies the requirements to one signature: `Some` when it satisfies
    /// everything, else its unmet requirements are recorded.
    fn check(&mut self, found: &Found) -> Option<Verified> {
        self.any_found = true;
        let result = match found {
            Found::Legacy {
                index,
                payload,
                annotations,
            } => check::legacy(
                *index,
                payload,
                annotations,
                self.digest,
                &self.repository,
                self.req,
            ),
            Found::Bundle { index, bundle } => {
                check::bundle(*index, bundle, self.digest, &self.repository, self.req)
            }
            Found::Unusable(u) => Err(vec![u.clone()]),
        };
        match result {
            Ok(verified) => Some(verified),
            Err(list) => {
                list.into_iter()
                    .for_each(|u| push_unique(&mut self.unmet, u));
                None
            }
        }
    }

    /// The listing to read signatures from, after noting an unusable
    /// listing or a registry failure.
    fn listing<T>(&mut self, listing: Result<Listing<T>, RegistryError>) -> Option<T> {
        match listing {
            Ok(Listing::Found(t)) => Some(t),
            Ok(Listing::Absent) => None,
            Ok(Listing::Malformed(detail)) => {
                self.check(&Found::Unusable(Unmet::Malformed {
                    signature: None,
                    detail,
                }));
                None
            }
            Err(err) => {
                self.first_error.get_or_insert(err);
                None
            }
        }
    }

    /// Checks each signature of one format as it arrives, stopping at the
    /// first that satisfies (the rest are not fetched) or at the first
    /// registry failure. `over` reports signatures past the cap.
    async fn first_satisfying(
        &mut self,
        (over, signatures): (
            Option<Unmet>,
            impl Stream<Item = Result<Found, RegistryError>>,
        ),
    ) -> Option<Verified> {
        if let Some(over) = over {
            self.any_found = true;
            push_unique(&mut self.unmet, over);
        }
        let mut signatures = std::pin::pin!(signatures);
        while let Some(item) = signatures.next().await {
            match item {
                Ok(found) => {
                    if let Some(verified) = self.check(&found) {
                        return Some(verified);
                    }
                }
                Err(err) => {
                    self.first_error.get_or_insert(err);
                    break;
                }
            }
        }
        None
    }
}

/// Verifies `image` (which must carry a digest: callers resolve first, and the
/// digest is what is verified) against `req`. Reads both formats: the legacy
/// `.sig` tag and bundles (referrers API, else the referrers tag schema).
/// Offline and key-based: only the image's registry is contacted.
///
/// No signature at all is a [`Verdict::Denied`] with [`Unmet::NoSignatures`],
/// not an error; so is a digest cosign cannot sign ([`Unmet::UnsupportedDigest`]).
pub async fn verify(
    client: &RegistryClient,
    image: &ImageRef,
    req: &Requirements,
) -> Result<Verdict, VerifyError> {
    let Some(digest) = image.digest.clone() else {
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
    let listing = referrers::index(client, image, &digest);
    verify_listed(client, image, &digest, req, listing).await
}

/// [`verify`] of a pinned sha256 `digest`, with the bundle listing given by
/// the caller, who may share it with another reader (attestations read the
/// same referrers).
pub(crate) async fn verify_listed(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
    req: &Requirements,
    bundle_listing: impl Future<Output = Result<Listing<ImageIndex>, RegistryError>>,
) -> Result<Verdict, VerifyError> {
    let digest = digest.clone();
    let mut findings = Findings {
        digest: &digest,
        repository: image.name(),
        req,
        unmet: Vec::new(),
        any_found: false,
        first_error: None,
    };

    // Both listings are asked for at once (the `.sig` tag and the referrers),
    // and the legacy signatures are read while the bundle listing is still
    // on its way (a registry without the referrers API needs a second
    // request for the tag schema). Legacy signatures are checked first: they
    // are what `imgate sign` writes by default.
    let legacy_side = async {
        let listing = legacy::read(client, image, &digest).await;
        match findings.listing(listing) {
            Some(manifest) => {
                let signatures = legacy::signatures(client, image, manifest);
                findings.first_satisfying(signatures).await
            }
            None => None,
        }
    };
    let (legacy_verified, bundle_listing) = futures::join!(legacy_side, bundle_listing);
    if let Some(verified) = legacy_verified {
        return Ok(Verdict::Verified(verified));
    }
    if let Some(index) = findings.listing(bundle_listing) {
        let signatures = referrers::signatures(client, image, index);
        if let Some(verified) = findings.first_satisfying(signatures).await {
            return Ok(Verdict::Verified(verified));
        }
    }

    if let Some(err) = findings.first_error {
        return Err(VerifyError::Registry(err));
    }
    let mut unmet = findings.unmet;
    if !findings.any_found {
        unmet.push(Unmet::NoSignatures {
            digest: digest.clone(),
        });
    }
    Ok(Verdict::Denied { digest, unmet })
}
