//! Registry credentials from Kubernetes pull secrets: the pod's
//! `spec.imagePullSecrets` and its service account's, read through the
//! Kubernetes API with the webhook's own service account (the same secrets
//! the kubelet would use to pull), parsed from `kubernetes.io/dockerconfigjson`
//! or the legacy `kubernetes.io/dockercfg`.
//!
//! A missing or unreadable secret is not fatal (the kubelet ignores them
//! too); it only means fewer credentials, and the registry will say so.
//! Secret contents are never logged.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use imgate_core::registry::Credentials;
use serde_json::Value;

/// Where a pod's service account files are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long a fetched secret or service account is reused: a rollout of
/// many pods costs one API read, and a rotated secret is seen soon enough.
const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 1024;

/// Errors reading pull secrets.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    /// The in-cluster configuration is unusable.
    #[error("kubernetes client configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// The API server could not be reached or did not answer in time.
    #[error("reading {what} from the kubernetes api: {detail}")]
    Request {
        /// `secret NS/NAME`, `serviceaccount NS/NAME`.
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
    /// The secret is not a docker config or is malformed.
    #[error("{what} is not a usable pull secret: {detail}")]
    Parse {
        /// The secret.
        what: String,
        /// What is wrong (never the contents).
        detail: String,
    },
}

/// Longest DNS-1123 subdomain (secret and service account names).
const MAX_SUBDOMAIN: usize = 253;
/// Longest DNS-1123 label (namespace names).
const MAX_LABEL: usize = 63;
const SUBDOMAIN_RULE: &str = "DNS-1123 subdomain: lower-case letters, digits, '-' and '.'";
const LABEL_RULE: &str = "DNS-1123 label: lower-case letters, digits and '-'";

/// Whether `name` is a DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting
/// and ending with a letter or digit.
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= MAX_LABEL && label_shape(name)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, of any length.
fn label_shape(label: &str) -> bool {
    let bytes = label.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `name` is a DNS-1123 subdomain (as Kubernetes checks it): at
/// most 253 characters of dot-separated labels. Such a name can never be
/// `.`, `..` or hold a `/` or `%`, so it cannot change which API path it
/// is put in.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_SUBDOMAIN && name.split('.').all(label_shape)
}

/// `name`, if it is a valid object name of `what` (namespaces: DNS-1123
/// labels; secrets and service accounts: DNS-1123 subdomains).
fn checked<'a>(what: &'static str, name: &'a str) -> Result<&'a str, PullSecretError> {
    let (ok, rule) = if what == "namespace" {
        (is_dns1123_label(name), LABEL_RULE)
    } else {
        (is_dns1123_subdomain(name), SUBDOMAIN_RULE)
    };
    if ok {
        Ok(name)
    } else {
        Err(PullSecretError::InvalidName {
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
fn api_path(
    namespace: &str,
    object: Option<(&'static str, &str)>,
) -> Result<String, PullSecretError> {
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

/// Normalises a docker config key (`https://index.docker.io/v1/`,
/// `registry.example.com:5000`, `http://host/v2/`) to the registry host the
/// registry client keys credentials by.
pub fn normalize_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

fn entry_credentials(entry: &Value) -> Result<Option<Credentials>, String> {
    if let Some(token) = entry.get("identitytoken").and_then(Value::as_str) {
        if !token.is_empty() {
            return Ok(Some(Credentials {
                username: "<token>".into(),
                password: token.into(),
            }));
        }
    }
    let user = entry.get("username").and_then(Value::as_str);
    let pass = entry.get("password").and_then(Value::as_str);
    if let (Some(username), Some(password)) = (user, pass) {
        return Ok(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }));
    }
    let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
        return Ok(None);
    };
    if auth.is_empty() {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "an \"auth\" value is not base64".to_string())?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| "an \"auth\" value is not UTF-8".to_string())?;
    let Some((username, password)) = decoded.split_once(':') else {
        return Err("an \"auth\" value is not \"user:password\"".into());
    };
    Ok(Some(Credentials {
        username: username.into(),
        password: password.into(),
    }))
}

/// Parses a docker config: `{"auths": {HOST: {...}}}` (`.dockerconfigjson`)
/// or, when `legacy`, the bare `{HOST: {...}}` map of `.dockercfg`.
/// Error messages never include the contents.
pub fn parse_docker_config(
    bytes: &[u8],
    legacy: bool,
) -> Result<BTreeMap<String, Credentials>, String> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|err| format!("not JSON (line {}, column {})", err.line(), err.column()))?;
    let auths = if legacy {
        value.as_object()
    } else {
        value.get("auths").and_then(Value::as_object)
    };
    let Some(auths) = auths else {
        return Err(if legacy {
            "not a JSON object".into()
        } else {
            "no \"auths\" object".into()
        });
    };
    let mut out = BTreeMap::new();
    for (key, entry) in auths {
        if let Some(creds) =
            entry_credentials(entry).map_err(|e| format!("{e} (registry {key})"))?
        {
            out.insert(normalize_host(key), creds);
        }
    }
    Ok(out)
}

/// Parses a Secret object as returned by the API (`data` values base64).
pub fn parse_secret(
    what: &str,
    secret: &Value,
) -> Result<BTreeMap<String, Credentials>, PullSecretError> {
    let err = |detail: String| PullSecretError::Parse {
        what: what.to_string(),
        detail,
    };
    let kind = secret.get("type").and_then(Value::as_str).unwrap_or("");
    let (field, legacy) = match kind {
        "kubernetes.io/dockerconfigjson" => (".dockerconfigjson", false),
        "kubernetes.io/dockercfg" => (".dockercfg", true),
        other => {
            return Err(err(format!(
                "type is {other:?}, not kubernetes.io/dockerconfigjson"
            )))
        }
    };
    let data = secret
        .get("data")
        .and_then(|d| d.get(field))
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("no data.{field}")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| err(format!("data.{field} is not base64")))?;
    parse_docker_config(&bytes, legacy).map_err(err)
}

/// The pod spec inside an admitted object: a Pod's `spec`, a controller's
/// `spec.template.spec`, a CronJob's `spec.jobTemplate.spec.template.spec`.
pub fn pod_spec(object: &Value) -> Option<&Value> {
    let spec = object.get("spec")?;
    if let Some(inner) = spec
        .get("jobTemplate")
        .and_then(|j| j.get("spec"))
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
    {
        return Some(inner);
    }
    if let Some(inner) = spec.get("template").and_then(|t| t.get("spec")) {
        return Some(inner);
    }
    Some(spec)
}

/// The pull secret names and service account of a pod spec.
pub fn pull_secret_refs(pod_spec: &Value) -> (Vec<String>, String) {
    let names = pod_spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let account = pod_spec
        .get("serviceAccountName")
        .or_else(|| pod_spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    (names, account)
}

/// The pull secrets a pod would use: its own `imagePullSecrets` and those
/// of its service account, in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPullSecrets {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's own `imagePullSecrets` names, in order.
    pub secrets: Vec<String>,
    /// Its service account (`default` when unset; `None` when its name is
    /// invalid and so not read).
    pub service_account: Option<String>,
}

impl PodPullSecrets {
    /// The references of the pod spec `spec` in `namespace`, and warnings
    /// about references that are skipped. A name that is not a valid object
    /// name (`../../victim/secrets/regcred`) is skipped and never read; `None`
    /// when the namespace itself is missing or invalid.
    pub fn from_pod_spec(namespace: &str, spec: &Value) -> (Option<PodPullSecrets>, Vec<String>) {
        let skip = |err: PullSecretError| format!("imgate: not reading pull secrets: {err}");
        if namespace.is_empty() {
            return (None, Vec::new());
        }
        if let Err(err) = checked("namespace", namespace) {
            return (None, vec![skip(err)]);
        }
        let (names, account) = pull_secret_refs(spec);
        let mut warnings = Vec::new();
        let mut secrets = Vec::new();
        for name in names {
            match checked("secret", &name) {
                Ok(_) => secrets.push(name),
                Err(err) => warnings.push(skip(err)),
            }
        }
        let service_account = match checked("serviceaccount", &account) {
            Ok(_) => Some(account),
            Err(err) => {
                warnings.push(skip(err));
                None
            }
        };
        let pod = PodPullSecrets {
            namespace: namespace.to_string(),
            secrets,
            service_account,
        };
        (Some(pod), warnings)
    }
}

/// A minimal Kubernetes API client: GET secrets and service accounts.
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
    Fixed(String),
}

impl Token {
    fn get(&self) -> Result<String, PullSecretError> {
        match self {
            Token::Fixed(t) => Ok(t.clone()),
            Token::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|err| PullSecretError::Config {
                    detail: format!("cannot read the token {}: {err}", path.display()),
                }),
        }
    }
}

impl KubeClient {
    /// A client for `base` (e.g. `https://10.0.0.1:443`), trusting only
    /// `ca_pem` when given.
    pub fn new(
        base: &str,
        token: String,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, PullSecretError> {
        Self::build(base, Token::Fixed(token), ca_pem, timeout)
    }

    fn build(
        base: &str,
        token: Token,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, PullSecretError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|err| {
                PullSecretError::Config {
                    detail: format!("cluster CA: {err}"),
                }
            })?;
            // Only the cluster CA: the API server is never a public host.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|err| PullSecretError::Config {
            detail: crate::tls::error_chain(&err),
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
    pub fn in_cluster(timeout: Duration) -> Result<Option<Self>, PullSecretError> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        Self::from_parts(&host, &port, Path::new(SERVICE_ACCOUNT_DIR), timeout)
    }

    fn from_parts(
        host: &str,
        port: &str,
        dir: &Path,
        timeout: Duration,
    ) -> Result<Option<Self>, PullSecretError> {
        let token = dir.join("token");
        if !token.exists() {
            return Ok(None);
        }
        let ca_path = dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|err| PullSecretError::Config {
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

    async fn get(&self, what: &str, path: &str) -> Result<Value, PullSecretError> {
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, value)) = cache.get(path) {
                if now.duration_since(*at) < CACHE_TTL {
                    return Ok(value.clone());
                }
            }
        }
        let token = self.token.get()?;
        let request_err = |err: reqwest::Error| PullSecretError::Request {
            what: what.to_string(),
            detail: crate::tls::error_chain(&err),
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
            return Err(PullSecretError::Status {
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

    /// The names of the pull secrets of service account `namespace/name`.
    pub async fn service_account_pull_secrets(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<String>, PullSecretError> {
        let what = format!("serviceaccount {namespace}/{name}");
        let path = api_path(namespace, Some(("serviceaccounts", name)))?;
        let sa = self.get(&what, &path).await?;
        Ok(pull_secret_refs(&serde_json::json!({
            "imagePullSecrets": sa.get("imagePullSecrets").cloned().unwrap_or(Value::Null)
        }))
        .0)
    }

    /// The credentials in secret `namespace/name`.
    pub async fn secret_credentials(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Credentials>, PullSecretError> {
        let what = format!("secret {namespace}/{name}");
        let path = api_path(namespace, Some(("secrets", name)))?;
        let secret = self.get(&what, &path).await?;
        parse_secret(&what, &secret)
    }

    /// Every credential the kubelet would use for a pod with `pod_spec` in
    /// `namespace`: its own pull secrets first (they win over the service
    /// account's for the same registry, as in the kubelet). Failures are
    /// logged (names only) and skipped.
    pub async fn credentials_for(&self, pod: &PodPullSecrets) -> BTreeMap<String, Credentials> {
        let namespace = pod.namespace.as_str();
        let mut names = pod.secrets.clone();
        let listed = match &pod.service_account {
            Some(account) => self.service_account_pull_secrets(namespace, account).await,
            None => Ok(Vec::new()),
        };
        match listed {
            Ok(more) => {
                for name in more {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the service account's pull secrets")
            }
        }
        let mut out = BTreeMap::new();
        for name in names {
            match self.secret_credentials(namespace, &name).await {
                Ok(creds) => {
                    for (host, c) in creds {
                        out.entry(host).or_insert(c);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "skipping a pull secret"),
            }
        }
        out
    }
}

impl KubeClient {
    /// The labels of namespace `name` (for `namespaces.excludeSelector`).
    pub async fn namespace_labels(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, PullSecretError> {
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

impl crate::admission::PullSecrets for KubeClient {
    fn credentials<'a>(
        &'a self,
        pod: &'a PodPullSecrets,
        registry: &'a str,
    ) -> futures::future::BoxFuture<'a, Option<Credentials>> {
        Box::pin(async move {
            let host = normalize_host(registry);
            self.credentials_for(pod).await.remove(&host)
        })
    }
}

impl crate::admission::NamespaceLabels for KubeClient {
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
    use super::*;
    use rstest::rstest;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[rstest]
    #[case("https://index.docker.io/v1/", "docker.io")]
    #[case("registry-1.docker.io", "docker.io")]
    #[case("Registry.Example.com:5000", "registry.example.com:5000")]
    #[case("http://localhost:5000/v2/", "localhost:5000")]
    #[case("ghcr.io", "ghcr.io")]
    fn hosts_are_normalised(#[case] key: &str, #[case] host: &str) {
        assert_eq!(normalize_host(key), host);
    }

    #[test]
    fn parses_dockerconfigjson_and_dockercfg() {
        let config = format!(
            r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "ghcr.io":{{"username":"u","password":"p"}},
                "reg.example:5000":{{"identitytoken":"tok"}},
                "empty.example":{{}}
            }}}}"#,
            b64("alice:s3:cret")
        );
        let secret = serde_json::json!({
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(&config)}
        });
        let creds = parse_secret("secret ns/x", &secret).unwrap();
        assert_eq!(creds.len(), 3);
        assert_eq!(creds["docker.io"].username, "alice");
        // Only the first ':' splits: passwords may contain colons.
        assert_eq!(creds["docker.io"].password, "s3:cret");
        assert_eq!(creds["ghcr.io"].password, "p");
        assert_eq!(creds["reg.example:5000"].username, "<token>");

        let legacy = serde_json::json!({
            "type": "kubernetes.io/dockercfg",
            "data": {".dockercfg": b64(&format!(r#"{{"quay.io":{{"auth":"{}","email":"x@y"}}}}"#, b64("bob:pw")))}
        });
        let creds = parse_secret("secret ns/y", &legacy).unwrap();
        assert_eq!(creds["quay.io"].username, "bob");
    }

    #[rstest]
    #[case(serde_json::json!({"type": "Opaque", "data": {}}), "not kubernetes.io/dockerconfigjson")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}), "no data..dockerconfigjson")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "!!"}}), "not base64")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64("{secret-stuff")}}), "not JSON")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(r#"{"auths":{"h":{"auth":"c2VjcmV0LXN0dWZm"}}}"#)}}), "not \"user:password\"")]
    fn bad_secrets_are_named_without_contents(#[case] secret: Value, #[case] expected: &str) {
        let err = parse_secret("secret ns/bad", &secret)
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret ns/bad"), "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("secret-stuff"), "{err}");
    }

    #[test]
    fn finds_the_pod_spec_of_every_kind() {
        let pod =
            serde_json::json!({"spec": {"imagePullSecrets": [{"name": "a"}], "containers": []}});
        let deploy =
            serde_json::json!({"spec": {"template": {"spec": {"serviceAccountName": "builder"}}}});
        let cron = serde_json::json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"imagePullSecrets": [{"name": "b"}, {"name": ""}]}}}}}});
        assert_eq!(
            pull_secret_refs(pod_spec(&pod).unwrap()),
            (vec!["a".into()], "default".into())
        );
        assert_eq!(
            pull_secret_refs(pod_spec(&deploy).unwrap()),
            (vec![], "builder".into())
        );
        assert_eq!(
            pull_secret_refs(pod_spec(&cron).unwrap()),
            (vec!["b".into()], "default".into())
        );
    }

    use super::fake_api::fake_api;

    fn dockerconfig(host: &str, user: &str) -> Value {
        serde_json::json!({
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(&format!(r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#, b64(&format!("{user}:pw"))))}
        })
    }

    #[tokio::test]
    async fn reads_pod_and_service_account_secrets_from_the_api() {
        let mut objects = HashMap::new();
        objects.insert(
            "/api/v1/namespaces/apps/serviceaccounts/builder".to_string(),
            serde_json::json!({"imagePullSecrets": [{"name": "sa-secret"}, {"name": "missing"}]}),
        );
        objects.insert(
            "/api/v1/namespaces/apps/secrets/pod-secret".to_string(),
            dockerconfig("reg.example", "pod-user"),
        );
        objects.insert(
            "/api/v1/namespaces/apps/secrets/sa-secret".to_string(),
            serde_json::json!({
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": b64(&format!(
                    r#"{{"auths":{{"reg.example":{{"auth":"{}"}},"other.example":{{"auth":"{}"}}}}}}"#,
                    b64("sa-user:pw"), b64("sa-other:pw")))}
            }),
        );
        let (base, hits) = fake_api(objects).await;
        let client = KubeClient::new(&base, "t0ken".into(), None, Duration::from_secs(2)).unwrap();
        let spec = serde_json::json!({"serviceAccountName": "builder", "imagePullSecrets": [{"name": "pod-secret"}]});
        let pod = PodPullSecrets::from_pod_spec("apps", &spec).0.unwrap();
        let creds = client.credentials_for(&pod).await;
        // The pod's own secret wins for the same registry; the missing one is skipped.
        assert_eq!(creds["reg.example"].username, "pod-user");
        assert_eq!(creds["other.example"].username, "sa-other");
        assert_eq!(creds.len(), 2);
        let first = hits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(first, 4);
        // A second pod of the rollout is served from the cache (except the
        // 404, which is retried).
        let again = client.credentials_for(&pod).await;
        assert_eq!(again, creds);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), first + 1);

        // Namespace labels, for namespaces.excludeSelector.
        let mut more = HashMap::new();
        more.insert(
            "/api/v1/namespaces/critical".to_string(),
            serde_json::json!({"metadata": {"name": "critical", "labels": {"imgate.dev/ignore": "true"}}}),
        );
        let (base2, _) = fake_api(more).await;
        let client2 =
            KubeClient::new(&base2, "t0ken".into(), None, Duration::from_secs(2)).unwrap();
        let labels = crate::admission::NamespaceLabels::labels(&client2, "critical")
            .await
            .unwrap();
        assert_eq!(
            labels.get("imgate.dev/ignore").map(String::as_str),
            Some("true")
        );
        assert!(
            crate::admission::NamespaceLabels::labels(&client2, "absent")
                .await
                .is_none()
        );

        // A wrong token: nothing, no panic.
        let bad = KubeClient::new(&base, "nope".into(), None, Duration::from_secs(2)).unwrap();
        let err = bad
            .secret_credentials("apps", "pod-secret")
            .await
            .unwrap_err();
        assert!(
            matches!(err, PullSecretError::Status { status: 401, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn names_cannot_climb_out_of_the_pods_namespace() {
        let mut objects = HashMap::new();
        objects.insert(
            "/api/v1/namespaces/victim/secrets/regcred".to_string(),
            dockerconfig("reg.example", "victim-user"),
        );
        objects.insert(
            "/api/v1/namespaces/victim/serviceaccounts/builder".to_string(),
            serde_json::json!({"imagePullSecrets": [{"name": "regcred"}]}),
        );
        objects.insert(
            "/api/v1/namespaces/attacker/serviceaccounts/default".to_string(),
            serde_json::json!({"imagePullSecrets": [{"name": "../../victim/secrets/regcred"}]}),
        );
        let (base, hits) = fake_api(objects).await;
        let client = KubeClient::new(&base, "t0ken".into(), None, Duration::from_secs(2)).unwrap();
        for spec in [
            serde_json::json!({"imagePullSecrets": [{"name": "../../victim/secrets/regcred"}]}),
            serde_json::json!({"imagePullSecrets": [{"name": "%2e%2e/%2e%2e/victim/secrets/regcred"}]}),
            serde_json::json!({"serviceAccountName": "../../victim/serviceaccounts/builder"}),
            // Named by the service account rather than the pod.
            serde_json::json!({}),
        ] {
            let (pod, warnings) = PodPullSecrets::from_pod_spec("attacker", &spec);
            let pod = pod.unwrap();
            let creds = client.credentials_for(&pod).await;
            assert!(creds.is_empty(), "{spec}: read {creds:?}");
            if spec != serde_json::json!({}) {
                assert_eq!(warnings.len(), 1, "{spec}: {warnings:?}");
                assert!(warnings[0].contains("victim"), "{warnings:?}");
                assert!(warnings[0].contains("DNS-1123"), "{warnings:?}");
            }
        }
        // A namespace that is not a DNS-1123 label is not used at all.
        let (pod, warnings) = PodPullSecrets::from_pod_spec(
            "../victim",
            &serde_json::json!({"imagePullSecrets": [{"name": "regcred"}]}),
        );
        assert!(pod.is_none());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // Only the attacker's own service account was ever read.
        assert!(hits.load(std::sync::atomic::Ordering::SeqCst) <= 4);
        let err = client
            .secret_credentials("victim", "../regcred")
            .await
            .unwrap_err();
        assert!(matches!(err, PullSecretError::InvalidName { .. }), "{err}");
    }

    #[rstest]
    #[case("regcred", true)]
    #[case("my.reg-cred.1", true)]
    #[case("", false)]
    #[case("..", false)]
    #[case("a/b", false)]
    #[case("UPPER", false)]
    #[case("-lead", false)]
    #[case("trail-", false)]
    #[case("a..b", false)]
    #[case("a%2fb", false)]
    fn secret_names_are_dns_subdomains(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(is_dns1123_subdomain(name), ok, "{name:?}");
    }

    #[test]
    fn long_names_are_refused() {
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label(&"a".repeat(63)));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(!is_dns1123_label("a.b"));
    }

    #[tokio::test]
    async fn unreachable_api_times_out_quickly() {
        // A listener that never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let client = KubeClient::new(&base, "t".into(), None, Duration::from_millis(300)).unwrap();
        let start = Instant::now();
        let err = client.secret_credentials("a", "b").await.unwrap_err();
        assert!(matches!(err, PullSecretError::Request { .. }), "{err}");
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
        let names = rt
            .block_on(client.service_account_pull_secrets("default", "default"))
            .unwrap();
        let _ = names;
    }
}
