//! HTTP implementation of [`RegistryClient`].

use super::*;

/// A registry client; cheap to clone (shares its connection pool and token cache).
#[derive(Debug, Clone)]
pub struct RegistryClient {
    config: ClientConfig,
}

impl RegistryClient {
    /// Builds a client; fails when a CA file or docker config cannot be read.
    pub fn new(config: ClientConfig) -> Result<Self, RegistryError> {
        Ok(RegistryClient { config })
    }

    /// Resolves `image` to the digest of what it names (an index stays an index).
    /// A reference with a digest is fetched by that digest and checked.
    pub async fn resolve(&self, image: &ImageRef) -> Result<Resolved, RegistryError> {
        let _ = image;
        todo!("registry client")
    }

    /// GETs the manifest `reference` (tag or digest) of `image`'s repository and checks its digest.
    pub async fn get_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let _ = (image, reference);
        todo!("registry client")
    }

    /// GETs a blob and checks it hashes to `digest`.
    pub async fn get_blob(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        let _ = (image, digest);
        todo!("registry client")
    }

    /// Uploads a blob (skipped when the registry already has it); returns its digest.
    pub async fn put_blob(&self, image: &ImageRef, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let _ = (image, bytes);
        todo!("registry client")
    }

    /// PUTs a manifest under `reference` (tag or digest); returns the digest of `bytes`.
    pub async fn put_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let _ = (image, reference, media_type, bytes);
        todo!("registry client")
    }

    /// The referrers of `digest` through the OCI referrers API; `None` when the
    /// registry does not support it (404/400), so callers fall back to the tag schema.
    pub async fn referrers(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Option<crate::oci::ImageIndex>, RegistryError> {
        let _ = (image, digest);
        todo!("registry client")
    }

    /// A cheap clone that also uses `credentials` (keyed by registry host), e.g. a pod's pull secrets.
    pub fn with_credentials(&self, credentials: BTreeMap<String, Credentials>) -> RegistryClient {
        let mut config = self.config.clone();
        config.credentials.extend(credentials);
        RegistryClient { config }
    }

    /// How many HTTP requests this client and its clones have sent.
    pub fn request_count(&self) -> u64 {
        0
    }
}
