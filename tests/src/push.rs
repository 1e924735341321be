//! Pushing test images, two independent ways: `skopeo copy` from an OCI
//! layout, and [`RawClient`], a small Distribution API client written here on
//! reqwest (basic and bearer-token auth) so the harness never depends on the
//! imgate client it is used to test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use crate::image::{Blob, BuiltImage};
use crate::registry::Registry;

/// Every manifest media type, for `Accept`.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// An image pushed to a test registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// `host/repo:tag`.
    pub reference: String,
    /// The digest of the top manifest (the index digest for a multi-arch image).
    pub digest: String,
    /// The platform manifests' digests of an index (empty for a single image).
    pub platform_digests: Vec<String>,
    /// Media type of the top manifest.
    pub media_type: String,
}

impl PushedImage {
    /// `host/repo:tag@sha256:…`.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.reference, self.digest)
    }

    /// `host/repo` (the reference without its tag).
    pub fn repository(&self) -> &str {
        self.reference
            .rsplit_once(':')
            .map_or(self.reference.as_str(), |(repo, _)| repo)
    }
}

/// How to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushWith {
    /// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://…`.
    Skopeo,
    /// The harness's own HTTP client ([`RawClient`]).
    Http,
}

impl BuiltImage {
    /// Pushes this image to `registry` as `repo:tag`.
    pub async fn push(
        &self,
        registry: &Registry,
        repo: &str,
        tag: &str,
        with: PushWith,
    ) -> anyhow::Result<PushedImage> {
        match with {
            PushWith::Skopeo => {
                let layout = tempfile::tempdir()?;
                self.write_oci_layout(layout.path(), "image")?;
                crate::skopeo::skopeo_copy_layout(registry, layout.path(), "image", repo, tag)
                    .await?;
            }
            PushWith::Http => {
                let client = RawClient::new(registry)?;
                for blob in &self.blobs {
                    client.put_blob(repo, blob).await?;
                }
                for manifest in self.child_manifests() {
                    client
                        .put_manifest(
                            repo,
                            &manifest.digest,
                            &manifest.media_type,
                            &manifest.bytes,
                        )
                        .await?;
                }
                let digest = client
                    .put_manifest(repo, tag, &self.top.media_type, &self.top.bytes)
                    .await?;
                if digest != self.top.digest {
                    bail!(
                        "registry stored {repo}:{tag} as {digest}, expected {}",
                        self.top.digest
                    );
                }
            }
        }
        Ok(PushedImage {
            reference: format!("{}/{repo}:{tag}", registry.host()),
            digest: self.top.digest.clone(),
            platform_digests: self.platform_digests(),
            media_type: self.top.media_type.clone(),
        })
    }
}

/// A manifest as the registry returned it.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The body.
    pub bytes: Vec<u8>,
    /// `Content-Type`.
    pub media_type: String,
    /// `Docker-Content-Digest`, if sent.
    pub header_digest: Option<String>,
}

/// A minimal Distribution API client (reqwest): blobs, manifests, tags, with
/// basic and bearer-token auth.
#[derive(Debug)]
pub struct RawClient {
    http: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
    /// Authorization header values by scope (`repository:NAME:ACTIONS`).
    auth: Mutex<HashMap<String, String>>,
    requests: AtomicU64,
}

impl RawClient {
    /// A client for `registry` with its credentials.
    pub fn new(registry: &Registry) -> anyhow::Result<RawClient> {
        Ok(RawClient {
            http: registry.http_client()?,
            base: registry.url(""),
            credentials: registry
                .credentials()
                .map(|(u, p)| (u.to_string(), p.to_string())),
            auth: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// The same client talking to `base_url` (`http://127.0.0.1:PORT`), e.g. through a proxy.
    pub fn with_base(mut self, base_url: &str) -> RawClient {
        self.base = base_url.trim_end_matches('/').to_string();
        self
    }

    /// The same client with other credentials (or none).
    pub fn with_credentials(mut self, credentials: Option<(&str, &str)>) -> RawClient {
        self.credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
        self
    }

    /// HTTP requests sent so far (token requests included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Sends a request for `repo`, authenticating on a 401 challenge and retrying once.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        repo: &str,
        actions: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<reqwest::Response> {
        let scope = format!("repository:{repo}:{actions}");
        let mut attempt = 0;
        loop {
            let mut request = self.http.request(method.clone(), url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.body(body.to_vec());
            }
            let cached = self.auth_lock()?.get(&scope).cloned();
            if let Some(value) = cached {
                request = request.header(AUTHORIZATION, value);
            }
            self.requests.fetch_add(1, Ordering::SeqCst);
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            if response.status() != StatusCode::UNAUTHORIZED || attempt > 0 {
                return Ok(response);
            }
            attempt += 1;
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let value = self.authorize(&challenge, &scope).await?;
            self.auth_lock()?.insert(scope.clone(), value);
        }
    }

    /// [`RawClient::send`] to `/v2/{repo}/{path}` on this registry.
    async fn send_v2(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        actions: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}/v2/{repo}/{path}", self.base);
        self.send(method, &url, repo, actions, headers, body).await
    }

    fn auth_lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, HashMap<String, String>>> {
        self.auth
            .lock()
            .map_err(|_| anyhow::anyhow!("auth cache poisoned"))
    }

    /// The `Authorization` value answering `challenge`.
    async fn authorize(&self, challenge: &str, scope: &str) -> anyhow::Result<String> {
        let basic = self
            .credentials
            .as_ref()
            .map(|(u, p)| format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))));
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.context("registry wants basic auth and no credentials are set");
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            bail!("unsupported auth challenge {challenge:?}");
        }
        let params = parse_challenge(params);
        let realm = params
            .get("realm")
            .context("bearer challenge without realm")?;
        let mut url = reqwest::Url::parse(realm)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.http.get(url);
        if let Some(basic) = basic {
            request = request.header(AUTHORIZATION, basic);
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        let response = request.send().await.context("token request")?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "token server answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let body: serde_json::Value = response.json().await?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .context("token response without token")?;
        Ok(format!("Bearer {token}"))
    }

    /// Uploads a blob (monolithic POST + PUT), skipped when present.
    pub async fn put_blob(&self, repo: &str, blob: &Blob) -> anyhow::Result<()> {
        let head = self
            .send_v2(
                Method::HEAD,
                repo,
                &format!("blobs/{}", blob.digest),
                "pull,push",
                &[],
                None,
            )
            .await?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }
        let start = self
            .send_v2(Method::POST, repo, "blobs/uploads/", "pull,push", &[], None)
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            bail!("starting an upload to {repo}: {}", start.status());
        }
        let location = start
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("upload without Location")?;
        let mut url = reqwest::Url::parse(&self.base)?.join(location)?;
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let put = self
            .send(
                Method::PUT,
                url.as_str(),
                repo,
                "pull,push",
                &[("content-type", "application/octet-stream")],
                Some(&blob.bytes),
            )
            .await?;
        if put.status() != StatusCode::CREATED {
            bail!(
                "uploading blob {} to {repo}: {} {}",
                blob.digest,
                put.status(),
                put.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// PUTs a manifest; returns the registry's `Docker-Content-Digest`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        let response = self
            .send_v2(
                Method::PUT,
                repo,
                &format!("manifests/{reference}"),
                "pull,push",
                &[(CONTENT_TYPE.as_str(), media_type)],
                Some(bytes),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            bail!(
                "putting manifest {repo}:{reference}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .context("manifest PUT without Docker-Content-Digest")
    }

    /// GETs a manifest by tag or digest.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<RawManifest> {
        let response = self
            .send_v2(
                Method::GET,
                repo,
                &format!("manifests/{reference}"),
                "pull",
                &[(ACCEPT.as_str(), MANIFEST_ACCEPT)],
                None,
            )
            .await?;
        if response.status() != StatusCode::OK {
            bail!("getting manifest {repo}:{reference}: {}", response.status());
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let media_type = header("content-type").unwrap_or_default();
        let header_digest = header("docker-content-digest");
        Ok(RawManifest {
            bytes: response.bytes().await?.to_vec(),
            media_type,
            header_digest,
        })
    }

    /// GETs a blob.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> anyhow::Result<Vec<u8>> {
        let response = self
            .send_v2(
                Method::GET,
                repo,
                &format!("blobs/{digest}"),
                "pull",
                &[],
                None,
            )
            .await?;
        if response.status() != StatusCode::OK {
            bail!("getting blob {repo}@{digest}: {}", response.status());
        }
        Ok(response.bytes().await?.to_vec())
    }

    /// Deletes a manifest by digest (the test registries allow deletes).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let response = self
            .send_v2(
                Method::DELETE,
                repo,
                &format!("manifests/{digest}"),
                "pull,push,delete",
                &[],
                None,
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            bail!("deleting {repo}@{digest}: {}", response.status());
        }
        Ok(())
    }

    /// The tags of `repo`.
    pub async fn list_tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        let response = self
            .send_v2(Method::GET, repo, "tags/list", "pull", &[], None)
            .await?;
        if response.status() != StatusCode::OK {
            bail!("listing tags of {repo}: {}", response.status());
        }
        let body: serde_json::Value = response.json().await?;
        Ok(body["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Parses `key="value",key2="value, with comma"` (a `WWW-Authenticate` parameter list).
pub fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = after.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_challenge;

    #[test]
    fn challenge_parameters_keep_commas_inside_quotes() {
        let params = parse_challenge(
            r#"realm="https://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(params["realm"], "https://127.0.0.1:1/token");
        assert_eq!(params["service"], "svc");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
    }
}
