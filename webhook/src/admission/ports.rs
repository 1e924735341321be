//! What the engine asks of the outside world, in one place: registry work
//! ([`Backend`]), namespace labels ([`NamespaceLabels`]) and pods' pull
//! secrets ([`PullSecrets`]). The engine is built with all three
//! ([`super::EngineBuilder`]) and never changes them afterwards. The real
//! implementations live beside the clients they wrap (the registry backend
//! in `backend.rs`, the Kubernetes ones in `kube.rs` and `pullsecrets.rs`);
//! tests substitute fakes.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use imgate_core::attestation::{Evidence, Wanted};
use imgate_core::digest::Digest;
use imgate_core::reference::ImageRef;
use imgate_core::registry::{Credentials, RegistryClient, RegistryError};
use imgate_core::signature::{Requirements, Verdict, VerifyError};

use crate::pullsecrets::PodPullSecrets;

/// Registry work the engine needs. Errors stay typed so the engine can tell
/// an outage (which `onRegistryError: allow` may forgive) from an answer
/// about the image (which it may not).
pub trait Backend: Send + Sync + 'static {
    /// The digest a tag names.
    fn resolve(
        &self,
        client: RegistryClient,
        image: ImageRef,
    ) -> BoxFuture<'static, Result<Digest, RegistryError>>;
    /// Verify the signatures of `image` (pinned by digest).
    fn verify(
        &self,
        client: RegistryClient,
        image: ImageRef,
        requirements: Requirements,
    ) -> BoxFuture<'static, Result<Verdict, VerifyError>>;
    /// The signature verdict of `image` (pinned by digest) when
    /// `requirements` are given, and the evidence of its attestations under
    /// `wanted`, asked of the registry at the same time. By default (a
    /// backend that knows no attestations): the signatures as
    /// [`Backend::verify`] and no attestation found, which denies any rule
    /// that wants one.
    fn verify_attested(
        &self,
        client: RegistryClient,
        image: ImageRef,
        requirements: Option<Requirements>,
        _wanted: Wanted,
    ) -> BoxFuture<'static, Result<(Option<Verdict>, Evidence), VerifyError>> {
        let verdict = requirements.map(|r| self.verify(client, image.clone(), r));
        Box::pin(async move {
            let Some(digest) = image.digest else {
                return Err(VerifyError::NotPinned {
                    image: image.to_string(),
                });
            };
            let verdict = match verdict {
                Some(verdict) => Some(verdict.await?),
                None => None,
            };
            Ok((verdict, Evidence::empty(digest)))
        })
    }
}

/// A namespace's labels (through the Kubernetes API in a cluster), for
/// `namespaces.excludeSelector`. `None`: unknown.
pub trait NamespaceLabels: Send + Sync + 'static {
    /// The labels of `namespace`.
    fn labels(&self, namespace: &str) -> BoxFuture<'_, Option<BTreeMap<String, String>>>;
}

/// Registry credentials from a pod's pull secrets (read through the
/// Kubernetes API in a cluster). Asked at most once per reviewed object, and
/// only when one of its images needs the registry, under the review's
/// deadline.
pub trait PullSecrets: Send + Sync + 'static {
    /// Every credential of `pod`'s pull secrets and its service account's,
    /// keyed by normalised registry host (the pod's own secrets win); empty
    /// when none apply or none can be read.
    fn credentials<'a>(
        &'a self,
        pod: &'a PodPullSecrets,
    ) -> BoxFuture<'a, BTreeMap<String, Credentials>>;
}
