//! What the server holds while it runs: its settings (flags or their
//! `IMGATE_*` twins), the readiness flags `/readyz` reports, and the state
//! shared by both routers (engine, metrics, Kubernetes client, limits).
//! Also the start-up loading of the policy and the clients, so a bad policy
//! or an unusable client fails the start naming the file or field.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imgate_core::policy::{Policy, PolicyError};
use imgate_core::registry::{ClientConfig, RegistryClient, RegistryError, DEFAULT_REQUEST_TIMEOUT};

use crate::admission::{Engine, DEFAULT_DEADLINE};
use crate::kube::{KubeClient, KubeError};
use crate::metrics::Metrics;
use crate::server::limits::{BodyBudget, PortLimits};
use crate::server::tls::TlsError;

/// Largest admission request body accepted. The API server sends whole
/// objects; 3 MiB is above etcd's 1.5 MiB object limit with the old object
/// of an UPDATE, and far below what could hurt the process.
pub const DEFAULT_BODY_LIMIT: usize = 3 * 1024 * 1024;

/// Default HTTPS admission address (`--listen`).
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8443));

/// Default plain-HTTP health and metrics address (`--metrics-listen`).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9090));

/// Default interval between checks of the policy and certificate files.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Default time in-flight reviews get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The API server's longest webhook `timeoutSeconds`: a review deadline at
/// or above it would be cut off by the API server rather than answered.
pub const MAX_DEADLINE: Duration = Duration::from_secs(30);

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
    /// `--kube-pull-secrets` while any TLS client may post reviews.
    #[error(
        "--kube-pull-secrets without --client-ca would let any client that reaches the admission \
         port make imgate read the pull secrets of any namespace; set --client-ca to the CA of the \
         API server's client certificate (docs/operations.md, \"Client authentication\") or, \
         knowingly, --allow-unauthenticated-pull-secrets"
    )]
    UnauthenticatedPullSecrets,
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
    /// PEM CA bundle whose certificates clients of the admission port must
    /// present (watched with the serving certificate); `None`: any TLS
    /// client may post reviews.
    pub client_ca: Option<PathBuf>,
    /// Read pull secrets even though any TLS client may post reviews (no
    /// `client_ca`): whoever reaches the port can then have imgate use any
    /// namespace's pull secrets.
    pub allow_unauthenticated_pull_secrets: bool,
    /// How often the policy and certificate files are checked for changes.
    pub reload_interval: Duration,
    /// How long in-flight reviews may take to finish after SIGTERM.
    pub grace: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// Connection, time and buffering bounds of the admission port.
    pub limits: PortLimits,
}

impl Settings {
    /// Settings with the documented defaults for everything but the files.
    pub fn new(policy: PathBuf, tls_cert: PathBuf, tls_key: PathBuf) -> Self {
        Settings {
            policy,
            tls_cert,
            tls_key,
            listen: DEFAULT_LISTEN,
            metrics_listen: DEFAULT_METRICS_LISTEN,
            deadline: DEFAULT_DEADLINE,
            docker_config: None,
            kube_pull_secrets: false,
            client_ca: None,
            allow_unauthenticated_pull_secrets: false,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            grace: DEFAULT_SHUTDOWN_GRACE,
            body_limit: DEFAULT_BODY_LIMIT,
            limits: PortLimits::default(),
        }
    }

    /// The registry client configuration before the policy adds its
    /// per-registry settings: static credentials only from the file named.
    pub fn base_client_config(&self) -> ClientConfig {
        ClientConfig {
            use_docker_config: self.docker_config.is_some(),
            docker_config: self.docker_config.clone(),
            // One hung request must not eat the whole budget: each gets a
            // share of it, so a retry on a fresh connection still fits (a
            // registry back from an outage is seen at once); the engine's
            // deadline bounds the total anyway.
            request_timeout: DEFAULT_REQUEST_TIMEOUT.min(self.deadline / 2),
            operation_timeout: self.deadline,
            ..ClientConfig::default()
        }
    }

    /// Whether reviews may make imgate read pull secrets: only when asked
    /// for, and only when clients must authenticate (or the operator
    /// explicitly accepts that anyone reaching the port may have them read).
    pub fn pull_secrets(&self) -> Result<bool, ServerError> {
        if !self.kube_pull_secrets {
            return Ok(false);
        }
        if self.client_ca.is_none() && !self.allow_unauthenticated_pull_secrets {
            return Err(ServerError::UnauthenticatedPullSecrets);
        }
        Ok(true)
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
    /// Time for a whole request body.
    body_timeout: Duration,
    /// Bytes per second a request body must keep arriving at.
    min_body_rate: usize,
    /// Request-body bytes buffered at once.
    body_budget: BodyBudget,
}

impl AppState {
    /// State around an engine (built with every port it uses).
    pub fn new(engine: Engine, metrics: Arc<Metrics>) -> Self {
        Self::build(engine, metrics, DEFAULT_BODY_LIMIT, &PortLimits::default())
    }

    fn with_limits(engine: Engine, metrics: Arc<Metrics>, settings: &Settings) -> Self {
        Self::build(engine, metrics, settings.body_limit, &settings.limits)
    }

    fn build(
        engine: Engine,
        metrics: Arc<Metrics>,
        body_limit: usize,
        limits: &PortLimits,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                engine,
                metrics,
                readiness: Readiness::default(),
                body_limit,
                body_timeout: limits.body_timeout,
                min_body_rate: limits.min_body_rate,
                body_budget: BodyBudget::new(
                    limits.max_buffered_bytes,
                    limits.max_buffered_bytes_per_source,
                ),
            }),
        }
    }

    /// Loads the policy and builds the clients and engine for `settings`.
    /// Each failure names the file or field, before anything is bound.
    pub fn load(settings: &Settings) -> Result<AppState, ServerError> {
        let pull_secrets = settings.pull_secrets()?;
        if pull_secrets && settings.client_ca.is_none() {
            tracing::warn!(
                "pull secrets are read for reviews from any client of the admission port \
                 (--allow-unauthenticated-pull-secrets without --client-ca): whoever reaches it \
                 can have imgate use another namespace's pull secrets"
            );
        }
        let policy = load_policy(&settings.policy)?;
        for warning in policy.warnings() {
            tracing::warn!(policy = %settings.policy.display(), "{warning}");
        }
        let metrics = Metrics::new();
        let client = registry_client(settings, &policy)?;
        // In a cluster the API client also serves namespace labels for
        // `namespaces.excludeSelector`; pull secrets only when asked for,
        // since that needs RBAC to read secrets.
        let cluster = match KubeClient::in_cluster(Duration::from_secs(2)) {
            Ok(client) => client.map(Arc::new),
            Err(err) if pull_secrets => return Err(err.into()),
            Err(err) => {
                tracing::warn!(error = %err, "kubernetes api client unavailable; namespace label selectors cannot be evaluated");
                None
            }
        };
        if pull_secrets && cluster.is_none() {
            return Err(ServerError::NotInCluster);
        }
        let mut engine = Engine::builder(policy, client)
            .deadline(settings.deadline)
            .metrics(metrics.clone());
        if let Some(cluster) = &cluster {
            engine = engine.namespace_labels(cluster.clone());
            // The one switch between the admission port and the namespaces'
            // credentials: pull secrets only when asked for (that needs
            // RBAC to read secrets) and allowed above.
            if pull_secrets {
                engine = engine.pull_secrets(cluster.clone());
            }
        }
        let state = AppState::with_limits(engine.build(), metrics, settings);
        state.readiness().set_policy_loaded(true);
        Ok(state)
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

    /// Largest accepted request body.
    pub(crate) fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// Time for a whole request body.
    pub(crate) fn body_timeout(&self) -> Duration {
        self.inner.body_timeout
    }

    /// Bytes per second a request body must keep arriving at.
    pub(crate) fn min_body_rate(&self) -> usize {
        self.inner.min_body_rate
    }

    /// Request-body bytes buffered at once.
    pub(crate) fn body_budget(&self) -> &BodyBudget {
        &self.inner.body_budget
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn pull_secrets_need_client_authentication_or_an_explicit_opt_in() {
        let mut settings = Settings::new("p".into(), "c".into(), "k".into());
        assert!(!settings.pull_secrets().unwrap(), "off unless asked for");
        settings.kube_pull_secrets = true;
        let err = settings.pull_secrets().unwrap_err().to_string();
        assert!(err.contains("--client-ca"), "{err}");
        assert!(
            err.contains("--allow-unauthenticated-pull-secrets"),
            "{err}"
        );
        settings.allow_unauthenticated_pull_secrets = true;
        assert!(settings.pull_secrets().unwrap());
        settings.allow_unauthenticated_pull_secrets = false;
        settings.client_ca = Some("client-ca.crt".into());
        assert!(settings.pull_secrets().unwrap());
    }
}
