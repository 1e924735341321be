//! A counting reverse proxy in front of a registry: every request is recorded
//! (`METHOD /path`), so a test can say "one verification costs N registry
//! requests", and the proxy can be told to hang, fail or slow down, so
//! webhook tests can simulate a registry that is down or hanging.
//!
//! It speaks the upstream's protocol to clients (TLS with a certificate from
//! the registry's test CA when the registry is TLS) and preserves `Host`, so
//! the registry's upload `Location`s point back through the proxy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use imgate_core::registry::ClientConfig;
use tokio::sync::watch;

use crate::registry::{trusting_builder, Registry};
use crate::server::{spawn_router, ServerTask};

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward to the registry.
    Pass,
    /// Never answer (until the mode changes or the proxy is dropped).
    Hang,
    /// Answer 500 without forwarding.
    Fail500,
    /// Answer this status without forwarding (e.g. 429, 503).
    Status(u16),
    /// Wait this long, then forward.
    Delay(Duration),
}

/// A running counting proxy; stops when dropped.
#[derive(Debug)]
pub struct CountingProxy {
    task: ServerTask,
    state: Arc<ProxyState>,
    tls: bool,
    ca_file: Option<PathBuf>,
    credentials: Option<(String, String)>,
    docker_config: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    requests: Mutex<Vec<String>>,
    mode: watch::Sender<ProxyMode>,
}

/// Hop-by-hop headers a proxy must not forward.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl CountingProxy {
    /// Starts a proxy in front of `registry` on 127.0.0.1 with a free port.
    pub async fn start(registry: &Registry) -> anyhow::Result<CountingProxy> {
        let tls = match registry.ca() {
            Some(ca) => Some(crate::pki::rustls_server_config(&ca.server_cert()?)?),
            None => None,
        };
        let credentials = registry
            .credentials()
            .map(|(u, p)| (u.to_string(), p.to_string()));
        Self::start_with(&registry.url(""), registry.ca_file(), tls, credentials).await
    }

    /// Starts a proxy in front of `upstream` (`http(s)://host:port`), trusting
    /// `upstream_ca`, serving TLS with `tls` if given.
    pub async fn start_with(
        upstream: &str,
        upstream_ca: Option<&Path>,
        tls: Option<rustls::ServerConfig>,
        credentials: Option<(String, String)>,
    ) -> anyhow::Result<CountingProxy> {
        // HTTP/1 upstream so the forwarded `Host` header is honoured.
        let client = trusting_builder(upstream_ca)?.http1_only().build()?;
        let (mode, _) = watch::channel(ProxyMode::Pass);
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client,
            requests: Mutex::new(Vec::new()),
            mode,
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let is_tls = tls.is_some();
        let task = spawn_router(router, tls).await?;
        let dir = tempfile::tempdir()?;
        let docker_config = dir.path().join("docker-config.json");
        let auths = match &credentials {
            Some((user, password)) => {
                use base64::Engine;
                let auth =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                serde_json::json!({ task.addr.to_string(): {"auth": auth} })
            }
            None => serde_json::json!({}),
        };
        std::fs::write(
            &docker_config,
            serde_json::to_vec(&serde_json::json!({ "auths": auths }))?,
        )
        .context("writing the proxy's docker config")?;
        Ok(CountingProxy {
            task,
            state,
            tls: is_tls,
            ca_file: upstream_ca.map(Path::to_path_buf),
            credentials,
            docker_config,
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT` of the proxy (use it in image references).
    pub fn host(&self) -> String {
        self.task.addr.to_string()
    }

    /// The proxy's base URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.task.addr)
    }

    /// Requests seen so far (every mode counts).
    pub fn count(&self) -> usize {
        self.requests().len()
    }

    /// The requests seen, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Forgets the requests seen.
    pub fn reset(&self) {
        if let Ok(mut requests) = self.state.requests.lock() {
            requests.clear();
        }
    }

    /// Changes what the proxy does with requests (hanging requests are released
    /// into the new mode).
    pub fn set_mode(&self, mode: ProxyMode) {
        self.state.mode.send_replace(mode);
    }

    /// The `imgate` flags to reach the registry through this proxy.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = match &self.ca_file {
            Some(ca) if self.tls => vec!["--registry-ca".to_string(), ca.display().to_string()],
            _ => vec!["--allow-http-registry".to_string(), self.host()],
        };
        args.push("--docker-config".to_string());
        args.push(self.docker_config.display().to_string());
        args
    }

    /// An `imgate_core` client configuration reaching the registry through this proxy.
    pub fn client_config(&self) -> ClientConfig {
        crate::registry::client_config_for(
            &self.host(),
            self.tls,
            self.ca_file.as_deref(),
            self.credentials
                .as_ref()
                .map(|(user, password)| (user.as_str(), password.as_str())),
        )
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(format!("{method} {path}"));
    }
    let mut mode = *state.mode.borrow();
    if mode == ProxyMode::Hang {
        let mut receiver = state.mode.subscribe();
        let released = receiver
            .wait_for(|m| *m != ProxyMode::Hang)
            .await
            .map(|new_mode| *new_mode);
        match released {
            Ok(new_mode) => mode = new_mode,
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    match mode {
        ProxyMode::Fail500 => return error_response(500),
        ProxyMode::Status(status) => return error_response(status),
        ProxyMode::Delay(delay) => tokio::time::sleep(delay).await,
        ProxyMode::Pass | ProxyMode::Hang => {}
    }
    match pass(&state, request).await {
        Ok(response) => response,
        Err(err) => (StatusCode::BAD_GATEWAY, format!("proxy: {err:#}")).into_response(),
    }
}

fn error_response(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({"errors": [{"code": "UNKNOWN", "message": "injected by the test proxy"}]});
    (status, axum::Json(body)).into_response()
}

async fn pass(state: &ProxyState, request: Request) -> anyhow::Result<Response> {
    relay(&state.client, &state.upstream, request, 512 * 1024 * 1024).await
}

/// Sends `request` on to `upstream` (`scheme://host:port`) with its method,
/// path, headers (`Host` included, so the registry's upload `Location`s
/// point back at the proxy) and body of at most `max_body` bytes, and
/// returns the answer, hop-by-hop headers dropped both ways.
pub(crate) async fn relay(
    client: &reqwest::Client,
    upstream: &str,
    request: Request,
    max_body: usize,
) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let body = axum::body::to_bytes(body, max_body).await?;
    let mut upstream = client.request(parts.method, format!("{upstream}{path_and_query}"));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let response = upstream.body(body).send().await?;
    let mut builder = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    let bytes = response.bytes().await?;
    Ok(builder.body(Body::from(bytes))?)
}
