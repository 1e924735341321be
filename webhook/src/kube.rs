//! The Kubernetes API client: the webhook's own service account token
//! (re-read for every request, since bound tokens rotate), the cluster CA,
//! timeouts, a short cache, and GETs of the few objects imgate reads
//! (namespaces for label selectors, secrets and service accounts for pull
//! secrets). Every name put into an API path is validated first and
//! percent-escaped, so a name taken from an admitted object can never
//! climb out of its namespace.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use imgate_core::workload::{is_dns1123_label, is_dns1123_subdomain};
use serde_json::Value;

use crate::admission::NamespaceLabels;

/// Where a pod's service account files are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`]: where `token` and `ca.crt` are read
/// when the webhook runs outside a pod (against a development cluster, or
/// the tests' API server), together with `KUBERNETES_SERVICE_HOST`/`_PORT`.
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "IMGATE_KUBE_SERVICE_ACCOUNT_DIR";

/// How long a fetched object is reused: a rollout of many pods costs one
/// API read, and a rotated secret is seen soon enough.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most objects cached.
const CACHE_MAX: usize = 1024;

/// Errors talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The in-cluster configuration is unusable.
    #[error("kubernetes client configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// The API server could not be reached or did not answer in time.
    #[error("reading {what} from the kubernetes api: {detail}")]
    Request {
        /// `secret NS/NAME`, `serviceaccount NS/NAME`, `namespace NAME`.
        what: String,
        /// The error chain.
        detail: String,
    },
    /// The API server answered with an error status.
    #[error("reading {what} from the kubernetes api: status {status}")]
    Status {
        /// The object.
        what: String,
        /// HTTP status (403: RBAC does not allow it, 404: it does not exist).
        status: u16,
    },
    /// A name that would go into an API path is not a valid object name
    /// (it could climb out of the pod's namespace); it is never read.
    #[error("{what} {name:?} is not a valid name ({rule})")]
    InvalidName {
        /// `secret`, `serviceaccount`, `namespace`.
        what: &'static str,
        /// The name as written.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

const SUBDOMAIN_RULE: &str = "DNS-1123 subdomain: lower-case letters, digits, '-' and '.'";
const LABEL_RULE: &str = "DNS-1123 label: lower-case letters, digits and '-'";

/// `name`, if it is a valid object name of `what` (namespaces: DNS-1123
/// labels; secrets and service accounts: DNS-1123 subdomains).
pub(crate) fn checked<'a>(what: &'static str, name: &'a str) -> Result<&'a str, KubeError> {
    let (ok, rule) = if what == "namespace" {
        (is_dns1123_label(name), LABEL_RULE)
    } else {
        (is_dns1123_subdomain(name), SUBDOMAIN_RULE)
    };
    if ok {
        Ok(name)
    } else {
        Err(KubeError::InvalidName {
            what,
            name: name.to_string(),
            rule,
        })
    }
}

/// Percent-escapes one path segment: everything but RFC 3986's unreserved
/// characters. A second line of defence behind [`checked`]: even a name
/// that slipped through stays one segment.
fn escape_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `/api/v1/namespaces/<namespace>[/<resource>/<name>]`, from validated,
/// escaped segments.
pub(crate) fn api_path(
    namespace: &str,
    object: Option<(&'static str, &str)>,
) -> Result<String, KubeError> {
    let mut path = format!(
        "/api/v1/namespaces/{}",
        escape_segment(checked("namespace", namespace)?)
    );
    if let Some((resource, name)) = object {
        let what = match resource {
            "secrets" => "secret",
            _ => "serviceaccount",
        };
        path.push('/');
        path.push_str(resource);
        path.push('/');
        path.push_str(&escape_segment(checked(what, name)?));
    }
    Ok(path)
}

/// A minimal Kubernetes API client: GET of a few core objects, cached briefly.
#[derive(Debug)]
pub struct KubeClient {
    base: String,
    token: Token,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Value)>>,
}

/// The bearer token: bound service account tokens rotate, so a file is
/// re-read for every request.
#[derive(Debug, Clone)]
enum Token {
    File(PathBuf),
    /// A token given directly (the tests' API servers).
    #[cfg(test)]
    Fixed(String),
}

impl Token {
    fn get(&self) -> Result<String, KubeError> {
        match self {
            #[cfg(test)]
            Token::Fixed(t) => Ok(t.clone()),
            Token::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|err| KubeError::Config {
                    detail: format!("cannot read the token {}: {err}", path.display()),
                }),
        }
    }
}

impl KubeClient {
    /// A client for `base` (e.g. `https://10.0.0.1:443`), trusting only
    /// `ca_pem` when given.
    #[cfg(test)]
    pub fn new(
        base: &str,
        token: String,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        Self::build(base, Token::Fixed(token), ca_pem, timeout)
    }

    fn build(
        base: &str,
        token: Token,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(pem) = ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|err| KubeError::Config {
                    detail: format!("cluster CA: {err}"),
                })?;
            // Only the cluster CA: the API server is never a public host.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|err| KubeError::Config {
            detail: imgate_core::error_chain(&err),
        })?;
        Ok(KubeClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The in-cluster client, or `None` when not running in a pod
    /// (no `KUBERNETES_SERVICE_HOST` or no service account token mounted).
    pub fn in_cluster(timeout: Duration) -> Result<Option<Self>, KubeError> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        let dir = std::env::var_os(SERVICE_ACCOUNT_DIR_ENV)
            .map_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR), PathBuf::from);
        Self::from_parts(&host, &port, &dir, timeout)
    }

    fn from_parts(
        host: &str,
        port: &str,
        dir: &Path,
        timeout: Duration,
    ) -> Result<Option<Self>, KubeError> {
        let token = dir.join("token");
        if !token.exists() {
            return Ok(None);
        }
        let ca_path = dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|err| KubeError::Config {
            detail: format!("cannot read {}: {err}", ca_path.display()),
        })?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Self::build(
            &format!("https://{host}:{port}"),
            Token::File(token),
            Some(&ca),
            timeout,
        )
        .map(Some)
    }

    /// GETs `path` (built with [`api_path`]); `what` names the object in errors.
    pub(crate) async fn get(&self, what: &str, path: &str) -> Result<Value, KubeError> {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, value)) = cache.get(path) {
                if now.duration_since(*at) < CACHE_TTL {
                    return Ok(value.clone());
                }
            }
        }
        let token = self.token.get()?;
        let request_err = |err: reqwest::Error| KubeError::Request {
            what: what.to_string(),
            detail: imgate_core::error_chain(&err),
        };
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(request_err)?;
        let status = response.status();
        if !status.is_success() {
            return Err(KubeError::Status {
                what: what.to_string(),
                status: status.as_u16(),
            });
        }
        let value: Value = response.json().await.map_err(request_err)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (at, _)| now.duration_since(*at) < CACHE_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(path.to_string(), (now, value.clone()));
        }
        Ok(value)
    }
}

impl KubeClient {
    /// The labels of namespace `name` (for `namespaces.excludeSelector`).
    pub async fn namespace_labels(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, KubeError> {
        let what = format!("namespace {name}");
        let path = api_path(name, None)?;
        let ns = self.get(&what, &path).await?;
        Ok(ns
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl NamespaceLabels for KubeClient {
    fn labels(
        &self,
        namespace: &str,
    ) -> futures::future::BoxFuture<'_, Option<BTreeMap<String, String>>> {
        let namespace = namespace.to_string();
        Box::pin(async move {
            match self.namespace_labels(&namespace).await {
                Ok(labels) => Some(labels),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read namespace labels");
                    None
                }
            }
        })
    }
}

/// A fake Kubernetes API server on loopback for tests: answers the paths
/// it knows after an optional delay, checks the bearer token, counts requests.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod fake_api {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use serde_json::Value;

    /// The token the fake API accepts.
    pub(crate) const TOKEN: &str = "t0ken";

    type S = (Arc<HashMap<String, Value>>, Arc<AtomicUsize>, Duration);

    async fn handler(
        State((objects, hits, delay)): State<S>,
        headers: HeaderMap,
        uri: Uri,
    ) -> Result<axum::Json<Value>, StatusCode> {
        hits.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {TOKEN}"))
        {
            return Err(StatusCode::UNAUTHORIZED);
        }
        objects
            .get(uri.path())
            .cloned()
            .map(axum::Json)
            .ok_or(StatusCode::NOT_FOUND)
    }

    /// Serves `objects` by path; returns the base URL and the request counter.
    pub(crate) async fn fake_api(objects: HashMap<String, Value>) -> (String, Arc<AtomicUsize>) {
        slow_api(objects, Duration::ZERO).await
    }

    /// Same, answering every request after `delay`.
    pub(crate) async fn slow_api(
        objects: HashMap<String, Value>,
        delay: Duration,
    ) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let state = (Arc::new(objects), hits.clone(), delay);
        let app = axum::Router::new().fallback(handler).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), hits)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::fake_api::{fake_api, TOKEN};
    use super::*;
    use rstest::rstest;

    #[tokio::test]
    async fn reads_namespace_labels_with_the_token() {
        let mut objects = HashMap::new();
        objects.insert(
            "/api/v1/namespaces/critical".to_string(),
            serde_json::json!({"metadata": {"name": "critical", "labels": {"imgate.dev/ignore": "true"}}}),
        );
        let (base, hits) = fake_api(objects).await;
        let client = KubeClient::new(&base, TOKEN.into(), None, Duration::from_secs(2)).unwrap();
        let labels = NamespaceLabels::labels(&client, "critical").await.unwrap();
        assert_eq!(
            labels.get("imgate.dev/ignore").map(String::as_str),
            Some("true")
        );
        assert!(NamespaceLabels::labels(&client, "absent").await.is_none());
        // Cached: a second read costs no request.
        let before = hits.load(std::sync::atomic::Ordering::SeqCst);
        client.namespace_labels("critical").await.unwrap();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
        // An invalid name is refused before any request.
        let err = client.namespace_labels("../secrets").await.unwrap_err();
        assert!(matches!(err, KubeError::InvalidName { .. }), "{err}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before);
        // A wrong token: a status error, no panic.
        let bad = KubeClient::new(&base, "nope".into(), None, Duration::from_secs(2)).unwrap();
        let err = bad.namespace_labels("other").await.unwrap_err();
        assert!(
            matches!(err, KubeError::Status { status: 401, .. }),
            "{err}"
        );
    }

    #[rstest]
    #[case("apps", None, "/api/v1/namespaces/apps")]
    #[case("apps", Some(("secrets", "reg.cred")), "/api/v1/namespaces/apps/secrets/reg.cred")]
    #[case("apps", Some(("serviceaccounts", "builder")), "/api/v1/namespaces/apps/serviceaccounts/builder")]
    fn paths_are_built_from_valid_names(
        #[case] namespace: &str,
        #[case] object: Option<(&'static str, &str)>,
        #[case] path: &str,
    ) {
        assert_eq!(api_path(namespace, object).unwrap(), path);
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(escape_segment("a/../b%"), "a%2F..%2Fb%25");
        assert!(api_path("a.b", None).is_err(), "namespaces are labels");
        assert!(api_path("apps", Some(("secrets", ".."))).is_err());
    }

    #[tokio::test]
    async fn unreachable_api_times_out_quickly() {
        // A listener that never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let client = KubeClient::new(&base, "t".into(), None, Duration::from_millis(300)).unwrap();
        let start = Instant::now();
        let err = client.namespace_labels("a").await.unwrap_err();
        assert!(matches!(err, KubeError::Request { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
        drop(listener);
    }

    #[test]
    fn not_in_cluster_without_a_token() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            KubeClient::from_parts("10.0.0.1", "443", dir.path(), Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    #[ignore = "needs a Kubernetes cluster"]
    fn in_cluster_client_reads_the_default_service_account() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = KubeClient::in_cluster(Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let labels = rt.block_on(client.namespace_labels("default")).unwrap();
        assert!(labels.contains_key("kubernetes.io/metadata.name"));
    }
}
