//! The webhook server: HTTPS admission endpoints (`POST /mutate`,
//! `POST /validate`) and a plain-HTTP side port for `/healthz`, `/readyz`
//! and Prometheus `/metrics`.
//!
//! Shape (after linkerd2-proxy's main and kubewarden's policy-server): load
//! and validate everything first (a bad policy or certificate fails the
//! start, naming the field or file), bind and log the addresses, serve, and
//! on SIGTERM stop accepting and drain in-flight reviews within a grace
//! period. The admission router is a plain axum `Router` built by
//! [`admission_router`], so tests drive it in-process; TLS is terminated by
//! a manual accept loop so the certificate can be swapped under it.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use imgate_core::policy::{Policy, PolicyError};
use imgate_core::registry::{ClientConfig, RegistryClient, RegistryError};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::admission::{Endpoint, Engine, EngineOptions};
use crate::kube::{KubeClient, KubeError};
use crate::metrics::Metrics;
use crate::review::{self, AdmissionResponse};
use crate::tls::{ReloadingCert, TlsError};

/// Largest admission request body accepted. The API server sends whole
/// objects; 3 MiB is above etcd's 1.5 MiB object limit with the old object
/// of an UPDATE, and far below what could hurt the process.
pub const DEFAULT_BODY_LIMIT: usize = 3 * 1024 * 1024;

/// Time allowed for a TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The policy file is unreadable or invalid.
    #[error("cannot load the policy")]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong, naming the field (boxed: it is large).
        #[source]
        source: Box<PolicyError>,
    },
    /// The serving certificate is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        /// `admission` or `metrics`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The registry client cannot be built (CA file, docker config).
    #[error("registry client")]
    Registry(#[source] RegistryError),
    /// The Kubernetes API client cannot be built.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// `--kube-pull-secrets` outside a cluster.
    #[error(
        "--kube-pull-secrets needs a Kubernetes service account (KUBERNETES_SERVICE_HOST and {})",
        crate::kube::SERVICE_ACCOUNT_DIR
    )]
    NotInCluster,
}

/// Everything the server needs, from flags or their `IMGATE_*` twins.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The policy file (watched for changes).
    pub policy: PathBuf,
    /// PEM certificate chain (watched for changes).
    pub tls_cert: PathBuf,
    /// PEM private key (watched for changes).
    pub tls_key: PathBuf,
    /// HTTPS admission address.
    pub listen: SocketAddr,
    /// Plain-HTTP health and metrics address.
    pub metrics_listen: SocketAddr,
    /// Answer every review within this budget (below the API server's `timeoutSeconds`).
    pub deadline: Duration,
    /// Static registry credentials (a mounted docker config).
    pub docker_config: Option<PathBuf>,
    /// Read pods' and service accounts' pull secrets from the Kubernetes API.
    pub kube_pull_secrets: bool,
    /// How often the policy and certificate files are checked for changes.
    pub reload_interval: Duration,
    /// How long in-flight reviews may take to finish after SIGTERM.
    pub grace: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
}

impl Settings {
    /// Settings with the documented defaults for everything but the files.
    pub fn new(policy: PathBuf, tls_cert: PathBuf, tls_key: PathBuf) -> Self {
        Settings {
            policy,
            tls_cert,
            tls_key,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            deadline: Duration::from_secs(8),
            docker_config: None,
            kube_pull_secrets: false,
            reload_interval: Duration::from_secs(5),
            grace: Duration::from_secs(20),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// The registry client configuration before the policy adds its
    /// per-registry settings: static credentials only from the file named.
    pub fn base_client_config(&self) -> ClientConfig {
        ClientConfig {
            use_docker_config: self.docker_config.is_some(),
            docker_config: self.docker_config.clone(),
            // One slow request must not eat the whole budget; the engine's
            // deadline bounds the total anyway.
            request_timeout: self.deadline,
            ..ClientConfig::default()
        }
    }
}

/// What `/readyz` reports on.
#[derive(Debug, Default)]
pub struct Readiness {
    tls_bound: AtomicBool,
    policy_loaded: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    /// The HTTPS listener is bound and has a certificate.
    pub fn set_tls_bound(&self, yes: bool) {
        self.tls_bound.store(yes, Ordering::SeqCst);
    }

    /// A valid policy is loaded.
    pub fn set_policy_loaded(&self, yes: bool) {
        self.policy_loaded.store(yes, Ordering::SeqCst);
    }

    /// Draining: tell the Service to stop sending new reviews.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Ready for reviews.
    pub fn is_ready(&self) -> bool {
        self.tls_bound.load(Ordering::SeqCst)
            && self.policy_loaded.load(Ordering::SeqCst)
            && !self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Shared state of both routers.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    body_limit: usize,
}

impl AppState {
    /// State around an engine. `kube`, when given, supplies pods' pull secrets.
    pub fn new(engine: Engine, metrics: Arc<Metrics>, kube: Option<Arc<KubeClient>>) -> Self {
        Self::build(engine, metrics, kube, DEFAULT_BODY_LIMIT)
    }

    fn with_limits(
        engine: Engine,
        metrics: Arc<Metrics>,
        kube: Option<Arc<KubeClient>>,
        settings: &Settings,
    ) -> Self {
        Self::build(engine, metrics, kube, settings.body_limit)
    }

    fn build(
        engine: Engine,
        metrics: Arc<Metrics>,
        kube: Option<Arc<KubeClient>>,
        body_limit: usize,
    ) -> Self {
        // The engine reads pull secrets lazily, under the review deadline.
        if let Some(kube) = kube {
            engine.set_pull_secrets(kube);
        }
        AppState {
            inner: Arc::new(Inner {
                engine,
                metrics,
                readiness: Readiness::default(),
                body_limit,
            }),
        }
    }

    /// Readiness flags (the server sets them; tests may too).
    pub fn readiness(&self) -> &Readiness {
        &self.inner.readiness
    }

    /// The engine (policy swaps go through it).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
}

/// The admission router: `POST /mutate`, `POST /validate`.
pub fn admission_router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(state)
}

/// The side router: `/healthz`, `/readyz`, `/metrics`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness().is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
        .into_response()
}

async fn mutate(State(state): State<AppState>, body: Body) -> Response {
    handle(state, Endpoint::Mutate, body).await
}

async fn validate(State(state): State<AppState>, body: Body) -> Response {
    handle(state, Endpoint::Validate, body).await
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most `limit` bytes. Past the limit the rest is read and
/// discarded (up to a bound) so the client still receives the 413 instead
/// of a connection reset mid-upload.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let discard_bound = limit.saturating_mul(8);
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| BodyError::Read(err.to_string()))?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            out = Vec::new();
            if total > discard_bound {
                return Err(BodyError::TooLarge);
            }
            continue;
        }
        out.extend_from_slice(&chunk);
    }
    if total > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// Keeps the in-flight gauge right even when a review is cancelled (the
/// API server hung up).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.review_started();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.review_finished();
    }
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// One admission request, from bytes to the answer. The mapping from a bad
/// request to an HTTP answer lives here and only here: a body we cannot
/// read at all is a 4xx (the API server applies `failurePolicy`); a review
/// with a readable uid gets an `invalid` response echoing it.
async fn handle(state: AppState, endpoint: Endpoint, body: Body) -> Response {
    // The review deadline counts from here: reading the body, pull secrets
    // and registry work all spend the same budget.
    let arrived = std::time::Instant::now();
    let limit = state.inner.body_limit;
    let bytes = match read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            state.metrics().invalid_review();
            tracing::warn!(limit, "admission request body too large");
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("admission review body exceeds the limit of {limit} bytes"),
            );
        }
        Err(BodyError::Read(detail)) => {
            state.metrics().invalid_review();
            return plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {detail}"),
            );
        }
    };
    let review = match review::parse_review(&bytes) {
        Ok(review) => review,
        Err(err) => {
            state.metrics().invalid_review();
            // ReviewError prints its own cause: no chain here.
            let message = err.to_string();
            tracing::warn!(error = %message, "invalid admission review");
            return match review::salvage_uid(&bytes) {
                Some(uid) => axum::Json(AdmissionResponse::invalid(&uid, message).into_review())
                    .into_response(),
                None => plain(StatusCode::BAD_REQUEST, message),
            };
        }
    };
    let (uid, kind, namespace, name, operation) = match &review.request {
        Some(r) => (
            r.uid.clone(),
            r.kind.kind.clone(),
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
            r.operation.clone(),
        ),
        None => Default::default(),
    };
    let span = tracing::info_span!(
        "admission",
        uid = %uid,
        endpoint = endpoint.as_str(),
        kind = %kind,
        namespace = %namespace,
        name = %name,
        operation = %operation,
    );
    async move {
        let _in_flight = InFlight::start(state.metrics());
        // The engine logs the decision line and observes the latency.
        let answer = state.engine().review_at(review, endpoint, arrived).await;
        axum::Json(answer).into_response()
    }
    .instrument(span)
    .await
}

/// Loads and validates the policy, naming the file and the field on error.
pub fn load_policy(path: &Path) -> Result<Policy, ServerError> {
    Policy::load(path).map_err(|source| ServerError::Policy {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Builds the registry client for `policy` on top of the static settings.
pub fn registry_client(
    settings: &Settings,
    policy: &Policy,
) -> Result<RegistryClient, ServerError> {
    RegistryClient::new(policy.client_config(settings.base_client_config()))
        .map_err(ServerError::Registry)
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, draining"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, draining"),
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGTERM; only SIGINT stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the webhook until `shutdown` resolves, then drains.
///
/// Start-up order: policy, certificate, clients (each failure is an error
/// naming the file or field, before anything is bound), then the listeners.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let policy = load_policy(&settings.policy)?;
    for warning in policy.warnings() {
        tracing::warn!(policy = %settings.policy.display(), "{warning}");
    }
    let cert = ReloadingCert::load(&settings.tls_cert, &settings.tls_key)?;
    let tls_config = cert.server_config()?;
    let metrics = Metrics::new();
    let client = registry_client(&settings, &policy)?;
    metrics.track_client(&client);
    // In a cluster the API client also serves namespace labels for
    // `namespaces.excludeSelector`; pull secrets only when asked for, since
    // that needs RBAC to read secrets.
    let cluster = match KubeClient::in_cluster(Duration::from_secs(2)) {
        Ok(client) => client.map(Arc::new),
        Err(err) if settings.kube_pull_secrets => return Err(err.into()),
        Err(err) => {
            tracing::warn!(error = %err, "kubernetes api client unavailable; namespace label selectors cannot be evaluated");
            None
        }
    };
    if settings.kube_pull_secrets && cluster.is_none() {
        return Err(ServerError::NotInCluster);
    }
    let engine = Engine::new(
        policy,
        EngineOptions {
            client,
            deadline: settings.deadline,
            metrics: metrics.clone(),
        },
    );
    if let Some(cluster) = &cluster {
        engine.set_namespace_labels(cluster.clone());
    }
    let kube = if settings.kube_pull_secrets {
        cluster
    } else {
        None
    };
    let state = AppState::with_limits(engine, metrics, kube, &settings);
    state.readiness().set_policy_loaded(true);

    let admission =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "admission",
                addr: settings.listen,
                source,
            })?;
    let side = TcpListener::bind(settings.metrics_listen)
        .await
        .map_err(|source| ServerError::Bind {
            what: "metrics",
            addr: settings.metrics_listen,
            source,
        })?;
    let admission_addr = admission.local_addr().unwrap_or(settings.listen);
    let metrics_addr = side.local_addr().unwrap_or(settings.metrics_listen);
    state.readiness().set_tls_bound(true);
    tracing::info!(
        admission = %admission_addr,
        metrics = %metrics_addr,
        policy = %settings.policy.display(),
        cert = %settings.tls_cert.display(),
        "imgate webhook listening (https admission, http health and metrics)"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reloader = tokio::spawn(crate::reload::reload_loop(
        state.clone(),
        settings.clone(),
        cert.clone(),
        stop_rx.clone(),
    ));
    let mut side_stop = stop_rx.clone();
    let side_server = tokio::spawn(
        axum::serve(side, metrics_router(state.clone()))
            .with_graceful_shutdown(async move {
                stopped(&mut side_stop).await;
            })
            .into_future(),
    );

    let accept = accept_loop(
        admission,
        tls_config,
        admission_router(state.clone()),
        stop_rx.clone(),
    );
    tokio::pin!(accept);
    tokio::select! {
        _ = shutdown => {}
        // The accept loop only ends on its own if the listener dies.
        _ = &mut accept => {}
    }
    state.readiness().set_shutting_down();
    let _ = stop_tx.send(true);
    // The accept loop now drains its connections within the grace period.
    match tokio::time::timeout(settings.grace + Duration::from_secs(1), &mut accept).await {
        Ok(()) => {}
        Err(_) => tracing::warn!("drain did not finish in time"),
    }
    let _ = side_server.await;
    reloader.abort();
    tracing::info!("imgate webhook stopped");
    Ok(())
}

/// Accepts TLS connections and serves `router` on each until `stop`; then
/// asks every connection to finish its in-flight requests and close, and
/// waits for them (bounded by the caller).
async fn accept_loop(
    listener: TcpListener,
    tls_config: Arc<rustls::ServerConfig>,
    router: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let mut router = router.clone();
                    async move { tower::Service::call(&mut router, request).await }
                },
            );
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            // A client that never finishes its headers must not hold a
            // connection forever.
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
                _ = stopped(&mut stop) => {
                    // Finish in-flight requests, refuse new ones, close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "draining open connections");
    }
    while connections.join_next().await.is_some() {}
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard returned by wait_for is not Send: drop it here.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}
