//! The registry backend: the real [`Backend`] over the registry client, and
//! the typed errors of registry work, with which of them count as an outage.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use imgate_core::attestation::{self, Evidence, Wanted};
use imgate_core::digest::Digest;
use imgate_core::policy::HumanDuration;
use imgate_core::reference::ImageRef;
use imgate_core::registry::{RegistryClient, RegistryError};
use imgate_core::signature::{Requirements, Verdict, VerifyError};

use super::ports::Backend;

/// Why the registry work for one image gave no verdict. Cheap to clone, so
/// one failed computation can be shared by every review waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    /// Resolving the tag failed.
    #[error(transparent)]
    Resolve(Arc<RegistryError>),
    /// Fetching the signatures failed.
    #[error(transparent)]
    Verify(Arc<VerifyError>),
    /// The review's deadline passed first.
    #[error("registry did not answer within {0}")]
    Deadline(HumanDuration),
    /// The computation was lost (its task panicked).
    #[error("internal error while {0}")]
    Internal(&'static str),
}

impl CheckError {
    /// Whether the registry was unavailable (cannot connect, timed out, 5xx,
    /// 429, or silent until the deadline): the only failures
    /// `onRegistryError: allow` may fail open on. A 404, a refusal, a lying
    /// or malformed answer or a bad configuration is an answer, and denies.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CheckError::Resolve(err) => err.is_unavailable(),
            CheckError::Verify(err) => err.is_unavailable(),
            CheckError::Deadline(_) => true,
            CheckError::Internal(_) => false,
        }
    }

    /// The message with its whole cause chain (`fetching signatures: registry … answered 503 …`).
    pub fn chain(&self) -> String {
        imgate_core::error_chain(self)
    }
}

/// The real backend: [`RegistryClient::resolve`] and [`imgate_core::signature::verify`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryBackend;

impl Backend for RegistryBackend {
    fn resolve(
        &self,
        client: RegistryClient,
        image: ImageRef,
    ) -> BoxFuture<'static, Result<Digest, RegistryError>> {
        async move {
            client
                .resolve(&image)
                .await
                .map(|resolved| resolved.manifest.digest)
        }
        .boxed()
    }

    fn verify(
        &self,
        client: RegistryClient,
        image: ImageRef,
        requirements: Requirements,
    ) -> BoxFuture<'static, Result<Verdict, VerifyError>> {
        async move { imgate_core::signature::verify(&client, &image, &requirements).await }.boxed()
    }

    fn verify_attested(
        &self,
        client: RegistryClient,
        image: ImageRef,
        requirements: Option<Requirements>,
        wanted: Wanted,
    ) -> BoxFuture<'static, Result<(Option<Verdict>, Evidence), VerifyError>> {
        async move {
            match requirements {
                Some(requirements) => {
                    let (verdict, evidence) =
                        attestation::verify_with_signature(&client, &image, &requirements, &wanted)
                            .await?;
                    Ok((Some(verdict), evidence))
                }
                None => Ok((None, attestation::collect(&client, &image, &wanted).await?)),
            }
        }
        .boxed()
    }
}
