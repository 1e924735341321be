//! The registry client, [`RegistryClient`] (a concrete type: tests substitute
//! the engine's `Backend` port, or a registry on loopback, never a fake
//! client): the registry operations, each checking what it receives against
//! digests it computed itself.

use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::transport::{
    discard_body, error_detail, oversize_protocol, read_body, Access, Request, Shared,
};
use super::*;
use crate::oci::{self, ImageIndex};

/// Manifests larger than this are refused (distribution's own limit is 4 MiB),
/// so a lying registry cannot make imgate buffer gigabytes.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Blobs larger than this are refused: imgate only reads small blobs
/// (signature payloads, bundles, configs), never image layers.
pub const MAX_BLOB_SIZE: usize = 64 << 20;
/// How long a repository found without the OCI referrers API is not asked
/// again (a registry upgrade is picked up after this).
pub const NO_REFERRERS_API_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// The header registries use to announce a manifest's or blob's digest.
const DIGEST_HEADER: &str = "docker-content-digest";

/// A registry client; cheap to clone (shares its connection pool and token cache).
#[derive(Clone)]
pub struct RegistryClient {
    shared: Arc<Shared>,
    /// Per-clone credentials from [`RegistryClient::with_credentials`]; they
    /// take precedence over the configured ones.
    extra: Arc<BTreeMap<String, Credentials>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("shared", &self.shared)
            .field(
                "extra_credentials_for",
                &self.extra.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RegistryClient {
    /// Builds a client; fails when a CA file or docker config cannot be read.
    pub fn new(config: ClientConfig) -> Result<Self, RegistryError> {
        Ok(RegistryClient {
            shared: Arc::new(Shared::new(config)?),
            extra: Arc::new(BTreeMap::new()),
        })
    }

    /// Resolves `image` to the digest of what it names (an index stays an index).
    /// A reference with a digest is fetched by that digest and checked.
    pub async fn resolve(&self, image: &ImageRef) -> Result<Resolved, RegistryError> {
        let manifest = self.get_manifest(image, &image.reference()).await?;
        let platforms = if oci::is_index(&manifest.media_type) {
            let index: ImageIndex =
                serde_json::from_slice(&manifest.bytes).map_err(|e| RegistryError::Protocol {
                    registry: image.registry.clone(),
                    detail: format!(
                        "index {} of {} is not a valid image index: {e}",
                        manifest.digest,
                        image.name()
                    ),
                })?;
            index
                .manifests
                .into_iter()
                .map(|d| (d.platform, d.digest))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Resolved {
            pinned: image.pinned(manifest.digest.clone()),
            manifest,
            platforms,
        })
    }

    /// GETs the manifest `reference` (tag or digest) of `image`'s repository and checks its digest.
    pub async fn get_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let requested = parse_reference(reference)?;
        let url = self.shared.url(image, &format!("manifests/{reference}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(oci::MANIFEST_ACCEPT));
        let resp = self
            .send(image, Access::Pull, Method::GET, url.clone(), headers, None)
            .await?;
        let what = match &requested {
            Some(d) => format!("manifest {d}"),
            None => format!("tag {reference}"),
        };
        if resp.status() != StatusCode::OK {
            return Err(self.unexpected(image, resp, &what, &url).await);
        }
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let announced = header_str(resp.headers(), DIGEST_HEADER);
        let bytes = self.body(image, resp, MAX_MANIFEST_SIZE, &what).await?;
        let digest = match requested {
            Some(expected) => {
                ensure_digest(&expected, &bytes, || format!("{}@{expected}", image.name()))?;
                expected
            }
            None => Digest::sha256(&bytes),
        };
        self.check_announced(image, announced.as_deref(), &bytes, &what)?;
        Ok(FetchedManifest {
            media_type: manifest_media_type(content_type.as_deref(), &bytes),
            digest,
            bytes,
        })
    }

    /// GETs a blob and checks it hashes to `digest`; a blob over
    /// [`MAX_BLOB_SIZE`] is [`RegistryError::TooLarge`].
    pub async fn get_blob(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        self.get_blob_limited(image, digest, MAX_BLOB_SIZE).await
    }

    /// GETs a blob of at most `limit` bytes (capped at [`MAX_BLOB_SIZE`]) and
    /// checks it hashes to `digest`. A larger `Content-Length` is refused
    /// before the body is read, and reading stops at the cap when the
    /// registry sends more than it announced: [`RegistryError::TooLarge`].
    pub async fn get_blob_limited(
        &self,
        image: &ImageRef,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let limit = limit.min(MAX_BLOB_SIZE);
        let url = self.shared.url(image, &format!("blobs/{digest}"))?;
        let resp = self
            .send(
                image,
                Access::Pull,
                Method::GET,
                url.clone(),
                HeaderMap::new(),
                None,
            )
            .await?;
        let what = format!("blob {digest}");
        if resp.status() != StatusCode::OK {
            return Err(self.unexpected(image, resp, &what, &url).await);
        }
        let too_large = |size| RegistryError::TooLarge {
            what: what.clone(),
            image: image.name(),
            size,
            limit: limit as u64,
        };
        let bytes = read_body(
            resp,
            limit,
            &image.registry,
            &what,
            self.shared.config.request_timeout,
            &too_large,
        )
        .await?;
        ensure_digest(digest, &bytes, || format!("{} blob", image.name()))?;
        Ok(bytes)
    }

    /// Uploads a blob (skipped when the registry already has it); returns its digest.
    pub async fn put_blob(&self, image: &ImageRef, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256(bytes);
        let blob_url = self.shared.url(image, &format!("blobs/{digest}"))?;
        let head = self
            .send(
                image,
                Access::Push,
                Method::HEAD,
                blob_url.clone(),
                HeaderMap::new(),
                None,
            )
            .await?;
        if head.status() == StatusCode::OK {
            return Ok(digest);
        }
        let start_url = self.shared.url(image, "blobs/uploads/")?;
        let start = self
            .send(
                image,
                Access::Push,
                Method::POST,
                start_url.clone(),
                HeaderMap::new(),
                Some(Bytes::new()),
            )
            .await?;
        if !start.status().is_success() {
            return Err(self
                .unexpected(image, start, "upload session", &start_url)
                .await);
        }
        let location = header_str(start.headers(), LOCATION.as_str()).ok_or_else(|| {
            RegistryError::Protocol {
                registry: image.registry.clone(),
                detail: format!(
                    "upload to {} answered {} without a Location",
                    image.name(),
                    start.status()
                ),
            }
        })?;
        // Location may be absolute or relative to the request (RFC 7231).
        let mut upload_url = start_url
            .join(&location)
            .map_err(|e| RegistryError::Protocol {
                registry: image.registry.clone(),
                detail: format!("upload Location {location:?} is not a URL: {e}"),
            })?;
        upload_url
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let put = self
            .send(
                image,
                Access::Push,
                Method::PUT,
                upload_url.clone(),
                headers,
                Some(Bytes::copy_from_slice(bytes)),
            )
            .await?;
        if !put.status().is_success() {
            return Err(self
                .unexpected(image, put, &format!("blob upload {digest}"), &upload_url)
                .await);
        }
        let announced = header_str(put.headers(), DIGEST_HEADER);
        self.check_announced(
            image,
            announced.as_deref(),
            bytes,
            &format!("blob {digest}"),
        )?;
        Ok(digest)
    }

    /// PUTs a manifest under `reference` (tag or digest); returns the digest of `bytes`.
    pub async fn put_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let digest = match parse_reference(reference)? {
            Some(expected) => {
                ensure_digest(&expected, bytes, || {
                    format!("{}@{expected} (manifest to push)", image.name())
                })?;
                expected
            }
            None => Digest::sha256(bytes),
        };
        let url = self.shared.url(image, &format!("manifests/{reference}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type).map_err(|_| {
                RegistryError::Config(format!("invalid manifest media type {media_type:?}"))
            })?,
        );
        let resp = self
            .send(
                image,
                Access::Push,
                Method::PUT,
                url.clone(),
                headers,
                Some(Bytes::copy_from_slice(bytes)),
            )
            .await?;
        let what = format!("manifest {reference}");
        if !resp.status().is_success() {
            return Err(self.unexpected(image, resp, &what, &url).await);
        }
        let announced = header_str(resp.headers(), DIGEST_HEADER);
        self.check_announced(image, announced.as_deref(), bytes, &what)?;
        Ok(digest)
    }

    /// Whether `image`'s repository is known to support the OCI referrers
    /// API (`None`: not asked yet, or the answer expired).
    pub fn referrers_api_known(&self, image: &ImageRef) -> Option<bool> {
        self.shared.referrers_api(image)
    }

    /// The referrers of `digest` through the OCI referrers API; `None` when the
    /// registry does not support it (404/400/405), so callers fall back to
    /// the tag schema. Either answer is remembered per repository for
    /// [`NO_REFERRERS_API_TTL`]; one without the API is not asked again
    /// meanwhile.
    pub async fn referrers(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Option<crate::oci::ImageIndex>, RegistryError> {
        if self.shared.referrers_api(image) == Some(false) {
            return Ok(None);
        }
        let url = self.shared.url(image, &format!("referrers/{digest}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(oci::OCI_INDEX));
        let resp = self
            .send(image, Access::Pull, Method::GET, url.clone(), headers, None)
            .await?;
        match resp.status() {
            StatusCode::OK => self.shared.remember_referrers_api(image, true),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => {
                discard_body(resp).await;
                self.shared.remember_referrers_api(image, false);
                return Ok(None);
            }
            _ => {
                return Err(self
                    .unexpected(image, resp, &format!("referrers of {digest}"), &url)
                    .await)
            }
        }
        let what = format!("referrers of {digest}");
        let bytes = self.body(image, resp, MAX_MANIFEST_SIZE, &what).await?;
        let index = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Protocol {
            registry: image.registry.clone(),
            detail: format!("{what} in {} is not an image index: {e}", image.name()),
        })?;
        Ok(Some(index))
    }

    /// A cheap clone that also uses `credentials` (keyed by registry host), e.g. a pod's pull secrets.
    pub fn with_credentials(&self, credentials: BTreeMap<String, Credentials>) -> RegistryClient {
        let mut extra = (*self.extra).clone();
        extra.extend(credentials);
        RegistryClient {
            shared: Arc::clone(&self.shared),
            extra: Arc::new(extra),
        }
    }

    /// How many HTTP requests this client and its clones have sent.
    pub fn request_count(&self) -> u64 {
        self.shared.request_count()
    }

    /// The client configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    async fn send(
        &self,
        image: &ImageRef,
        access: Access,
        method: Method,
        url: url::Url,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, RegistryError> {
        let request = Request {
            method,
            url,
            headers,
            body,
        };
        self.shared.send(&self.extra, image, access, request).await
    }

    /// Reads a response body of at most `limit` bytes within the request timeout.
    async fn body(
        &self,
        image: &ImageRef,
        resp: reqwest::Response,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        read_body(
            resp,
            limit,
            &image.registry,
            what,
            self.shared.config.request_timeout,
            &oversize_protocol(&image.registry, what, limit),
        )
        .await
    }

    /// The error for a status the operation did not expect.
    async fn unexpected(
        &self,
        image: &ImageRef,
        resp: reqwest::Response,
        what: &str,
        url: &url::Url,
    ) -> RegistryError {
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            // Read the (short) body so the connection goes back to the pool:
            // 404s are routine (no `.sig` tag, no referrers tag).
            discard_body(resp).await;
            return RegistryError::NotFound {
                what: what.to_string(),
                image: image.name(),
            };
        }
        let detail = error_detail(resp).await;
        tracing::debug!(registry = %image.registry, %status, %detail, "unexpected registry answer");
        RegistryError::Status {
            registry: image.registry.clone(),
            status: status.as_u16(),
            url: url.to_string(),
        }
    }

    /// A `Docker-Content-Digest` the registry sent must match the bytes.
    fn check_announced(
        &self,
        image: &ImageRef,
        announced: Option<&str>,
        bytes: &[u8],
        what: &str,
    ) -> Result<(), RegistryError> {
        let Some(announced) = announced else {
            return Ok(());
        };
        let expected = Digest::parse(announced.trim()).map_err(|e| RegistryError::Protocol {
            registry: image.registry.clone(),
            detail: format!("Docker-Content-Digest for {what} of {}: {e}", image.name()),
        })?;
        ensure_digest(&expected, bytes, || {
            format!("{} {what} (Docker-Content-Digest header)", image.name())
        })
    }
}

/// `bytes` must hash to `expected` (with its algorithm); `image` names them in
/// the error and is only formatted when they do not.
fn ensure_digest(
    expected: &Digest,
    bytes: &[u8],
    image: impl FnOnce() -> String,
) -> Result<(), RegistryError> {
    let actual = expected.compute_like(bytes);
    if actual != *expected {
        return Err(RegistryError::DigestMismatch {
            image: image(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// A manifest reference: `Some(digest)`, or `None` for a valid tag.
fn parse_reference(reference: &str) -> Result<Option<Digest>, RegistryError> {
    if reference.contains(':') {
        return Digest::parse(reference)
            .map(Some)
            .map_err(|e| RegistryError::Config(format!("invalid manifest reference: {e}")));
    }
    let valid_tag = !reference.is_empty()
        && reference.len() <= 128
        && !reference.starts_with(['.', '-'])
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid_tag {
        Ok(None)
    } else {
        Err(RegistryError::Config(format!(
            "invalid manifest reference {reference:?} (neither a tag nor a digest)"
        )))
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The manifest's media type: the body's own `mediaType` (the bytes are what
/// the digest covers), else a known `Content-Type`, else guessed from shape.
fn manifest_media_type(content_type: Option<&str>, bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let known = [
        oci::OCI_INDEX,
        oci::OCI_MANIFEST,
        oci::DOCKER_MANIFEST_LIST,
        oci::DOCKER_MANIFEST,
    ];
    let probe = serde_json::from_slice::<Probe>(bytes).ok();
    if let Some(mt) = probe.as_ref().and_then(|p| p.media_type.clone()) {
        return mt;
    }
    let header = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(h) = header.filter(|h| known.contains(h)) {
        return h.to_string();
    }
    match probe {
        Some(p) if p.manifests.is_some() => oci::OCI_INDEX.to_string(),
        Some(p) if p.config.is_some() => oci::OCI_MANIFEST.to_string(),
        _ => header.unwrap_or("application/octet-stream").to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case(Some(oci::OCI_MANIFEST), r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#, oci::OCI_INDEX)]
    #[case(
        Some("application/json"),
        r#"{"schemaVersion":2,"manifests":[]}"#,
        oci::OCI_INDEX
    )]
    #[case(
        Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
        r#"{"schemaVersion":2,"config":{}}"#,
        oci::DOCKER_MANIFEST
    )]
    #[case(None, r#"{"schemaVersion":2,"config":{}}"#, oci::OCI_MANIFEST)]
    #[case(Some("text/plain"), "not json", "text/plain")]
    fn media_type_prefers_the_body(
        #[case] header: Option<&str>,
        #[case] body: &str,
        #[case] want: &str,
    ) {
        assert_eq!(manifest_media_type(header, body.as_bytes()), want);
    }

    #[test]
    fn manifest_references() {
        assert_eq!(parse_reference("v1.2_x-y").unwrap(), None);
        let d = Digest::sha256(b"x");
        assert_eq!(parse_reference(d.as_str()).unwrap(), Some(d));
        for bad in ["", "../x", "a/b", "sha256:zz", "-x", "a?b"] {
            assert!(parse_reference(bad).is_err(), "{bad}");
        }
    }
}
