//! The HTTP side of the registry client: URLs, sending with auth (anonymous
//! first, then the answer to the registry's challenge, from `authflow.rs`),
//! retries with backoff, timeouts, request counting and size-capped body
//! reads. `client.rs` builds registry operations on top.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::auth::{parse_challenges, Challenge, TokenCache};
use super::dockerconfig::DockerConfig;
use super::{ClientConfig, Credentials, RegistryError};
use crate::error_chain;
use crate::reference::ImageRef;

/// First retry delay; doubled on each further retry.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest wait honoured from a `Retry-After` header or the backoff.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Error bodies are read this far for the message.
const MAX_ERROR_BODY: usize = 16 << 10;

/// What a request needs from the registry's auth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read.
    Pull,
    /// Read and write.
    Push,
}

impl Access {
    fn scope(self, repository: &str) -> String {
        match self {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
        }
    }
}

/// One registry API request, before auth.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: url::Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
}

/// State shared by a client and all its clones.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    /// The client for registries without their own CA file.
    default_http: reqwest::Client,
    /// `config.registries` keyed by lower-case host: host names compare
    /// case-insensitively (DNS does), so `LOCALHOST:5000/x` gets the settings
    /// of `localhost:5000`.
    settings: HashMap<String, super::RegistrySettings>,
    /// Clients for registries with a `ca_file`, keyed like `settings`.
    per_registry_http: HashMap<String, reqwest::Client>,
    pub(super) docker: Option<DockerConfig>,
    pub(super) tokens: TokenCache,
    /// The last challenge each registry sent, so later requests authenticate
    /// up front instead of paying a 401 round trip each time.
    pub(super) challenges: Mutex<HashMap<String, Challenge>>,
    /// Repositories (`host/repository`, host in lower case) whose answer to
    /// the referrers API is known: supported or not, and until when that is
    /// believed.
    referrers_api: Mutex<HashMap<String, (bool, std::time::Instant)>>,
    /// Credential helper answers per registry (helpers are slow processes).
    pub(super) helper_answers: tokio::sync::Mutex<HashMap<String, Option<Credentials>>>,
    requests: AtomicU64,
    /// First contact with each HTTPS origin goes alone (see `origins`).
    origins: super::origins::Origins,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("registries", &self.config.registries)
            .field(
                "docker_config",
                &self.docker.as_ref().map(|d| d.path().to_path_buf()),
            )
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Builds the HTTP clients and reads the docker config.
    pub(crate) fn new(config: ClientConfig) -> Result<Self, RegistryError> {
        let timeout = config.request_timeout;
        let default_http = super::tls::build_client(&config.extra_ca_files, timeout)?;
        let mut per_registry_http = HashMap::new();
        let mut settings = HashMap::new();
        for (host, entry) in &config.registries {
            let host = host_key(host);
            if let Some(ca) = &entry.ca_file {
                let mut files = config.extra_ca_files.clone();
                files.push(ca.clone());
                per_registry_http.insert(host.clone(), super::tls::build_client(&files, timeout)?);
            }
            settings.insert(host, entry.clone());
        }
        let docker = if !config.use_docker_config {
            None
        } else if let Some(path) = &config.docker_config {
            DockerConfig::load(path, true)?
        } else if let Some(path) = super::dockerconfig::default_path() {
            DockerConfig::load(&path, false)?
        } else {
            None
        };
        Ok(Shared {
            config,
            settings,
            default_http,
            per_registry_http,
            docker,
            tokens: TokenCache::default(),
            challenges: Mutex::new(HashMap::new()),
            referrers_api: Mutex::new(HashMap::new()),
            helper_answers: tokio::sync::Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            origins: super::origins::Origins::default(),
        })
    }

    pub(crate) fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether `image`'s repository is known to support the referrers API;
    /// `None` when unknown or the memory has expired.
    pub(crate) fn referrers_api(&self, image: &ImageRef) -> Option<bool> {
        let key = repository_key(image);
        let mut known = self.referrers_api.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(&key) {
            Some((supported, until)) if *until > std::time::Instant::now() => Some(*supported),
            Some(_) => {
                known.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers whether `image`'s repository supports the referrers API.
    /// Whoever writes a Pod chooses how many repositories get named, so the
    /// memory is bounded: at [`MAX_REMEMBERED_REPOSITORIES`] expired answers
    /// go, and if that is not enough all do (forgetting costs one request).
    pub(crate) fn remember_referrers_api(&self, image: &ImageRef, supported: bool) {
        let now = std::time::Instant::now();
        let mut known = self.referrers_api.lock().unwrap_or_else(|e| e.into_inner());
        super::make_room(&mut known, MAX_REMEMBERED_REPOSITORIES, |_, (_, until)| {
            *until > now
        });
        known.insert(
            repository_key(image),
            (supported, now + super::NO_REFERRERS_API_TTL),
        );
    }

    fn settings(&self, image: &ImageRef) -> Option<&super::RegistrySettings> {
        self.settings
            .get(&host_key(&image.registry))
            .or_else(|| self.settings.get(&host_key(image.api_host())))
    }

    pub(super) fn http(&self, image: &ImageRef) -> &reqwest::Client {
        self.per_registry_http
            .get(&host_key(&image.registry))
            .or_else(|| self.per_registry_http.get(&host_key(image.api_host())))
            .unwrap_or(&self.default_http)
    }

    /// `http(s)://<api host>/v2/<repository>/<path>`.
    pub(crate) fn url(&self, image: &ImageRef, path: &str) -> Result<url::Url, RegistryError> {
        let scheme = if self.settings(image).is_some_and(|s| s.http) {
            "http"
        } else {
            "https"
        };
        let text = format!(
            "{scheme}://{}/v2/{}/{path}",
            image.api_host(),
            image.repository
        );
        url::Url::parse(&text)
            .map_err(|e| RegistryError::Config(format!("bad registry URL {text}: {e}")))
    }

    /// Sends a request to `image`'s registry with auth: anonymous first (or
    /// straight with credentials once the registry is known to want them);
    /// on 401 answers the challenge and tries again. Every status other than
    /// 401/403 is returned for the caller to judge; 401/403 after auth is
    /// `Unauthorized`.
    pub(crate) async fn send(
        &self,
        extra: &BTreeMap<String, Credentials>,
        image: &ImageRef,
        access: Access,
        request: Request,
    ) -> Result<reqwest::Response, RegistryError> {
        let Request {
            method,
            url,
            headers,
            body,
        } = request;
        let registry = image.registry.as_str();
        let scope = access.scope(&image.repository);
        let build = |auth: Option<&HeaderValue>| {
            let mut req = self
                .http(image)
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(auth) = auth {
                req = req.header(AUTHORIZATION, auth.clone());
            }
            if let Some(body) = &body {
                req = req.body(body.clone());
            }
            req
        };
        let known = self.known_challenge(registry);
        let mut creds_cache = None;
        let mut auth = match &known {
            Some(Challenge::Basic) if self.credentials(extra, image).await?.is_none() => {
                // Known to want Basic, but this clone has nothing to send:
                // go anonymously and let the registry decide.
                None
            }
            Some(ch) => Some(
                self.authorize(extra, image, &scope, ch, false, &mut creds_cache)
                    .await?,
            ),
            None => None,
        };
        let mut refreshed = false;
        loop {
            let resp = self
                .send_retrying(registry, &|| build(auth.as_ref()))
                .await?;
            let status = resp.status();
            if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                return Ok(resp);
            }
            let challenge = parse_challenges(
                resp.headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let detail = error_detail(resp).await;
            // One fresh attempt: the first 401 of an anonymous request, or a
            // cached token/credentials the registry no longer accepts.
            let retry = status == StatusCode::UNAUTHORIZED && challenge.is_some() && !refreshed;
            let Some(challenge) = challenge.filter(|_| retry) else {
                let who = match &creds_cache {
                    Some(Some(c)) => format!("as user {:?}", c.username),
                    _ if auth.is_some() => "with an anonymous token".to_string(),
                    _ => "anonymously".to_string(),
                };
                return Err(RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    status: status.as_u16(),
                    detail: format!("{method} {url} {who}: {detail}"),
                });
            };
            refreshed = true;
            self.remember_challenge(registry, &challenge);
            auth = Some(
                self.authorize(extra, image, &scope, &challenge, true, &mut creds_cache)
                    .await?,
            );
        }
    }

    /// Sends with retries: 429/500/502/503/504 and connection errors are
    /// retried up to `retries` times with exponential backoff (or the
    /// registry's `Retry-After`, capped); a timeout is retried too, but only
    /// when the retry can finish within `operation_timeout` (a hung
    /// connection is dropped and the retry gets a fresh one).
    pub(crate) async fn send_retrying(
        &self,
        registry: &str,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response, RegistryError> {
        let retries = self.config.retries;
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let backoff = BACKOFF_BASE
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_RETRY_DELAY);
            match self.origins.send(build()).await {
                Ok(resp) if retryable(resp.status()) && attempt < retries => {
                    let delay = retry_after(resp.headers())
                        .unwrap_or(backoff)
                        .min(MAX_RETRY_DELAY);
                    tracing::debug!(
                        registry,
                        status = resp.status().as_u16(),
                        ?delay,
                        "retrying"
                    );
                    // Read the short error body so the connection goes back to the pool.
                    discard_body(resp).await;
                    tokio::time::sleep(delay).await;
                }
                Ok(resp) => return Ok(resp),
                Err(err) if err.is_timeout() => {
                    let timeout = self.config.request_timeout;
                    let in_time =
                        started.elapsed() + backoff + timeout <= self.config.operation_timeout;
                    if attempt >= retries || !in_time {
                        return Err(RegistryError::Timeout {
                            registry: registry.to_string(),
                            timeout,
                        });
                    }
                    tracing::debug!(registry, ?timeout, "no answer in time; retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(err)
                    if (err.is_connect() || err.is_request())
                        && !is_tls_failure(&err)
                        && attempt < retries =>
                {
                    tracing::debug!(registry, error = %error_chain(&err), "retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(err) => {
                    return Err(RegistryError::Connect {
                        registry: registry.to_string(),
                        detail: error_chain(&err),
                    })
                }
            }
            attempt += 1;
        }
    }
}

/// A TLS failure (unknown issuer, wrong name, bad handshake) will fail the
/// same way again, so it is not worth a retry.
fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    imgate_keys::find_in_chain::<rustls::Error>(err).is_some()
}

/// How a registry host is looked up: lower case, as DNS compares names.
fn host_key(host: &str) -> String {
    host.to_ascii_lowercase()
}

/// Repositories whose referrers API support is remembered at once.
const MAX_REMEMBERED_REPOSITORIES: usize = 10_000;

/// How a repository is remembered: its host in lower case, its path as is.
/// Referrers API support is remembered per repository, not per host, as a
/// registry may route repositories to different backends.
fn repository_key(image: &ImageRef) -> String {
    format!("{}/{}", host_key(&image.registry), image.repository)
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// What an error response says: the registry's `errors[].message` when it
/// sent the standard JSON, else the start of the body, else the status.
pub(crate) async fn error_detail(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(&body) {
        let msgs: Vec<String> = parsed
            .errors
            .into_iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code,
                _ => e.message,
            })
            .filter(|m| !m.is_empty())
            .collect();
        if !msgs.is_empty() {
            return msgs.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() || text.len() > 200 {
        status.to_string()
    } else {
        text.to_string()
    }
}

/// Reads and drops a body the caller has no use for (a 404's, a retried
/// 5xx's), so the connection is reused; a long one is cut off instead.
pub(crate) async fn discard_body(resp: reqwest::Response) {
    drop(read_capped(resp, MAX_ERROR_BODY).await);
}

/// Reads at most `limit` bytes, silently stopping there (for error messages).
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        out.extend_from_slice(&chunk);
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// Reads a whole body of at most `limit` bytes. A larger body (announced or
/// actual) is `oversize(announced size)` and reading stops there; a body
/// shorter than its `Content-Length`, or a body cut off by the connection, is
/// an error naming `what`; `timeout` is the one that applied, for the message.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    limit: usize,
    registry: &str,
    what: &str,
    timeout: Duration,
    oversize: &(dyn Fn(Option<u64>) -> RegistryError + Sync),
) -> Result<Vec<u8>, RegistryError> {
    let protocol = |detail: String| RegistryError::Protocol {
        registry: registry.to_string(),
        detail,
    };
    let announced = resp.content_length();
    if let Some(len) = announced.filter(|len| *len > limit as u64) {
        return Err(oversize(Some(len)));
    }
    let mut out = Vec::with_capacity(announced.unwrap_or(0).min(limit as u64) as usize);
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > limit {
                    return Err(oversize(None));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(err) if err.is_timeout() => {
                return Err(RegistryError::Timeout {
                    registry: registry.to_string(),
                    timeout,
                })
            }
            Err(err) => {
                return Err(protocol(format!(
                    "{what} ended early after {} bytes: {}",
                    out.len(),
                    error_chain(&err)
                )))
            }
        }
    }
    if let Some(len) = announced.filter(|len| *len != out.len() as u64) {
        return Err(protocol(format!(
            "{what} is {} bytes but Content-Length said {len}",
            out.len()
        )));
    }
    Ok(out)
}

/// The error for a body over `limit` that is not a blob with its own cap:
/// the registry sent more than the protocol allows.
pub(crate) fn oversize_protocol(
    registry: &str,
    what: &str,
    limit: usize,
) -> impl Fn(Option<u64>) -> RegistryError + Sync {
    let registry = registry.to_string();
    let what = what.to_string();
    move |size| RegistryError::Protocol {
        registry: registry.clone(),
        detail: match size {
            Some(len) => format!("{what} is {len} bytes, more than the {limit} allowed"),
            None => format!("{what} is more than the {limit} bytes allowed"),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_are_found_inside_nested_io_errors() {
        let rustls_err = rustls::Error::General("handshake".into());
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls_err,
        ));
        assert!(is_tls_failure(&nested));
        assert!(!is_tls_failure(&std::io::Error::other(
            "connection refused"
        )));
    }

    #[test]
    fn referrers_api_memory_is_bounded_and_keeps_recent_answers() {
        let shared = Shared::new(ClientConfig {
            use_docker_config: false,
            ..ClientConfig::default()
        })
        .unwrap();
        let image = |i: usize| ImageRef::parse(&format!("r.example/team/app{i}")).unwrap();
        for i in 0..MAX_REMEMBERED_REPOSITORIES + 5 {
            shared.remember_referrers_api(&image(i), i % 2 == 0);
        }
        let held = shared.referrers_api.lock().unwrap().len();
        assert!(held <= MAX_REMEMBERED_REPOSITORIES, "{held} remembered");
        let last = MAX_REMEMBERED_REPOSITORIES + 4;
        assert_eq!(shared.referrers_api(&image(last)), Some(last % 2 == 0));
    }

    #[test]
    fn retry_after_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn scopes() {
        assert_eq!(Access::Pull.scope("a/b"), "repository:a/b:pull");
        assert_eq!(Access::Push.scope("a/b"), "repository:a/b:pull,push");
    }
}
