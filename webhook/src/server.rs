//! The webhook server: HTTPS admission endpoints (`POST /mutate`,
//! `POST /validate`) and a plain-HTTP side port for `/healthz`, `/readyz`
//! and Prometheus `/metrics`.
//!
//! Shape (after linkerd2-proxy's main and kubewarden's policy-server): load
//! and validate everything first (a bad policy or certificate fails the
//! start, naming the field or file), bind and log the addresses, serve, and
//! on SIGTERM stop accepting and drain in-flight reviews within a grace
//! period. The routes live in `handlers`, the shared state in
//! `state`, the stop signal in `shutdown`; this module
//! owns the listeners and the TLS accept loop, which is manual so the
//! certificate can be swapped under it.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::shutdown::{stop_flag, stopped};
use crate::tls::ReloadingCert;

pub use crate::handlers::{admission_router, metrics_router};
pub use crate::shutdown::shutdown_signal;
pub use crate::state::{
    load_policy, registry_client, AppState, Readiness, ServerError, Settings, DEFAULT_BODY_LIMIT,
    DEFAULT_LISTEN, DEFAULT_METRICS_LISTEN, DEFAULT_RELOAD_INTERVAL, DEFAULT_SHUTDOWN_GRACE,
    MAX_DEADLINE,
};

/// Time allowed for a TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the webhook until `shutdown` resolves, then drains.
///
/// Start-up order: policy and clients, certificate (each failure is an
/// error naming the file or field, before anything is bound), then the
/// listeners.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let state = AppState::load(&settings)?;
    let cert = ReloadingCert::load(&settings.tls_cert, &settings.tls_key)?;
    let tls_config = cert.server_config()?;

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

    let (stop_tx, stop_rx) = stop_flag();
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
