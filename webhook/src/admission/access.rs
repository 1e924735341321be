//! Which credential a registry call for one object uses, and the identity
//! that keys cached answers by it.
//!
//! What a registry tells imgate (a tag's digest, a signature's verdict) is
//! what that registry tells *that credential*. A private image's answer,
//! learnt with one namespace's pull secret, must never answer another
//! namespace that has no access: that would tell it the image exists, its
//! digest and its signature state, and pin it to a digest a node may hold.
//! So the caches are keyed by [`CredentialId`]: `None` for the webhook's own
//! identity (its static credentials, or anonymous; the same for every
//! tenant), `Some` for a pod's pull secret. The pod's credentials are read
//! before the caches are asked, at most once per object.

use std::collections::BTreeMap;
use std::sync::Arc;

use imgate_core::registry::{normalise_host, Credentials, RegistryClient};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::PullSecrets;
use crate::pullsecrets::PodPullSecrets;

/// A credential's identity in cache keys: SHA-256 of the user name and
/// secret, truncated to 128 bits (collision-resistant across tenants;
/// never the secret itself, never logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct CredentialId([u8; 16]);

impl CredentialId {
    fn of(credentials: &Credentials) -> CredentialId {
        let mut hasher = Sha256::new();
        hasher.update(credentials.username.as_bytes());
        hasher.update([0]);
        hasher.update(credentials.password.as_bytes());
        let digest = hasher.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        CredentialId(id)
    }
}

/// The credentials one object's registry calls use.
#[derive(Clone)]
pub(super) struct Access {
    client: RegistryClient,
    /// The pod's pull secrets, where they are read, and (once read) what
    /// they hold.
    pod: Option<PodAccess>,
}

#[derive(Clone)]
struct PodAccess {
    source: Arc<dyn PullSecrets>,
    secrets: Arc<PodPullSecrets>,
    credentials: Arc<OnceCell<BTreeMap<String, Credentials>>>,
}

impl Access {
    pub(super) fn new(
        client: RegistryClient,
        pod: Option<(Arc<dyn PullSecrets>, PodPullSecrets)>,
    ) -> Access {
        Access {
            client,
            pod: pod.map(|(source, secrets)| PodAccess {
                source,
                secrets: Arc::new(secrets),
                credentials: Arc::new(OnceCell::new()),
            }),
        }
    }

    /// The client for calls to `registry` and the identity of the
    /// credential it presents there. Reads the pod's pull secrets the first
    /// time (the caller bounds it by the review's deadline).
    pub(super) async fn for_registry(
        &self,
        registry: &str,
    ) -> (RegistryClient, Option<CredentialId>) {
        let Some(pod) = &self.pod else {
            return (self.client.clone(), None);
        };
        let all = pod
            .credentials
            .get_or_init(|| pod.source.credentials(&pod.secrets))
            .await;
        let host = normalise_host(registry);
        match all.get(&host) {
            Some(credentials) => {
                let id = CredentialId::of(credentials);
                let client = self
                    .client
                    .with_credentials([(host, credentials.clone())].into());
                (client, Some(id))
            }
            None => (self.client.clone(), None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn creds(user: &str, password: &str) -> Credentials {
        Credentials {
            username: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn ids_differ_by_user_and_secret_and_hide_both() {
        let a = CredentialId::of(&creds("alice", "pw"));
        assert_eq!(a, CredentialId::of(&creds("alice", "pw")));
        assert_ne!(a, CredentialId::of(&creds("alice", "pw2")));
        assert_ne!(a, CredentialId::of(&creds("bob", "pw")));
        // The separator keeps `a` + `b:c` apart from `a:b` + `c`.
        assert_ne!(
            CredentialId::of(&creds("a", "bc")),
            CredentialId::of(&creds("ab", "c"))
        );
        let shown = format!("{a:?}");
        assert!(!shown.contains("alice") && !shown.contains("pw"));
    }
}
