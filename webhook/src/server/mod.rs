//! The webhook server: HTTPS admission endpoints (`POST /mutate`,
//! `POST /validate`) and a plain-HTTP side port for `/healthz`, `/readyz`
//! and Prometheus `/metrics`.
//!
//! Shape (after linkerd2-proxy's main and kubewarden's policy-server): load
//! and validate everything first (a bad policy or certificate fails the
//! start, naming the field or file), bind and log the addresses, serve, and
//! on SIGTERM stop accepting and drain in-flight reviews within a grace
//! period. The routes live in `handlers`, the shared state in `state`, the
//! stop signal in `shutdown`, the connection and body bounds in `limits`,
//! certificates in `tls` (serving, reloading) and `certs` (`imgate webhook
//! certs`), hot reload in `reload`; this module owns the listeners and the
//! TLS accept loop, which is manual so the certificate can be swapped under
//! it.

pub mod certs;
mod handlers;
pub mod limits;
mod reload;
mod shutdown;
mod state;
mod tls;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;
use crate::server::limits::{
    fit_connections, raise_fd_limit, Connections, Peer, PortLimits, Slot, HTTP2_KEEPALIVE_TIMEOUT,
};
use crate::server::shutdown::{stop_flag, stopped};
use crate::server::tls::ReloadingCert;

pub use crate::server::handlers::{admission_router, metrics_router};
pub use crate::server::shutdown::shutdown_signal;
pub use crate::server::state::{
    load_policy, registry_client, AppState, Readiness, ServerError, Settings, DEFAULT_BODY_LIMIT,
    DEFAULT_LISTEN, DEFAULT_METRICS_LISTEN, DEFAULT_RELOAD_INTERVAL, DEFAULT_SHUTDOWN_GRACE,
    MAX_DEADLINE,
};

/// HTTP/1 read buffer per connection (request heads must fit).
const HTTP1_READ_BUFFER: usize = 64 * 1024;
/// HTTP/2 flow-control window per stream.
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window per connection.
const HTTP2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// Largest HTTP/2 header list.
const HTTP2_HEADER_LIST: u32 = 64 * 1024;

/// How long an idle or shed connection gets to flush its goodbye (HTTP/2
/// GOAWAY) before it is dropped: shorter than the time admitting waits for
/// a shed connection, so the place is free when it looks.
const FLUSH_PATIENCE: Duration = Duration::from_millis(20);
/// How often a closing connection with a request being served checks
/// whether it is done.
const CLOSE_PATIENCE: Duration = Duration::from_secs(1);

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
    let fd_limit = raise_fd_limit();
    let mut limits = settings.limits.clone();
    limits.max_connections = fit_connections(limits.max_connections, fd_limit);
    if limits.max_connections < settings.limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files = fd_limit,
            "the open-files limit cannot hold --max-connections; lowered"
        );
    }
    let cert = ReloadingCert::load_with_client_ca(
        &settings.tls_cert,
        &settings.tls_key,
        settings.client_ca.as_deref(),
    )?;
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
        client_certificates = if cert.requires_client_cert() { "required" } else { "not required" },
        max_connections = limits.max_connections,
        open_files = fd_limit,
        "imgate webhook listening (https admission, http health and metrics)"
    );

    let (stop_tx, stop_rx) = stop_flag();
    let reloader = tokio::spawn(crate::server::reload::reload_loop(
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
        cert.requires_client_cert(),
        admission_router(state.clone()),
        limits,
        state.metrics().clone(),
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
/// waits for them (bounded by the caller). Every connection holds a slot of
/// the connection bounds, placed under its source address as soon as it is
/// accepted, and is closed when idle too long, or when a bound needs its
/// slot (see `limits`).
async fn accept_loop(
    listener: TcpListener,
    tls_config: Arc<rustls::ServerConfig>,
    client_auth: bool,
    router: Router,
    limits: PortLimits,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // With client certificates required, a connection past its handshake
    // is one the API server authenticated: never displaced by a newcomer.
    let connections = Connections::new(&limits, client_auth, Some(Arc::clone(&metrics)));
    let shared = Shared {
        acceptor: tokio_rustls::TlsAcceptor::from(tls_config),
        router,
        limits,
        metrics: Arc::clone(&metrics),
    };
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = stopped(&mut stop) => break,
            slot = connections.admit() => slot,
        };
        let (tcp, peer) = tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(error = %err, open = connections.open(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(refusal) = slot.place(peer.ip().to_canonical()) {
            // Dropping the stream and the slot closes the connection now.
            metrics.refused_connection(refusal.reason());
            tracing::debug!(%peer, reason = refusal.reason(), "connection refused");
            continue;
        }
        tasks.spawn(serve_connection(
            tcp,
            peer,
            slot,
            shared.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    let open = tasks.len();
    if open > 0 {
        tracing::info!(connections = open, "draining open connections");
    }
    while tasks.join_next().await.is_some() {}
}

/// Whether a failed handshake was the client's certificate: missing, or
/// not signed by the client CA.
fn client_certificate_refused(err: &std::io::Error) -> bool {
    matches!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_))
    )
}

/// What every admission connection is served with.
#[derive(Clone)]
struct Shared {
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    limits: PortLimits,
    metrics: Arc<Metrics>,
}

/// One admission connection: TLS handshake, then HTTP/1 or HTTP/2 until the
/// client is done, the connection idles out, its slot is shed, or the
/// server stops (then in-flight requests finish first).
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    shared: Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Shared {
        acceptor,
        router,
        limits,
        metrics,
    } = shared;
    let activity = Arc::clone(slot.activity());
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                if client_certificate_refused(&err) {
                    metrics.refused_connection("client_certificate");
                }
                tracing::debug!(%peer, error = %err, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                return;
            }
        },
        _ = activity.shed() => return,
        _ = stopped(&mut stop) => return,
    };
    // Only a verified chain gets this far when client certificates are
    // required; without them no certificate is asked for.
    slot.handshake_done(tls.get_ref().1.peer_certificates().is_some());
    let address = peer.ip().to_canonical();
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let mut router = router.clone();
            let busy = activity.request();
            let activity = Arc::clone(&activity);
            request.extensions_mut().insert(Peer {
                address,
                proven: activity.is_proven(),
                activity: Arc::clone(&activity),
            });
            async move {
                let response = tower::Service::call(&mut router, request).await;
                if response.as_ref().is_ok_and(|r| r.status().is_success()) {
                    activity.completed_request();
                }
                drop(busy);
                response
            }
        })
    };
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // A client that never finishes its headers must not hold a connection
    // forever; HTTP/2 peers that stop answering pings are dropped.
    // What hyper buffers below the handler is bounded too: the HTTP/1
    // read buffer (request heads included) and the HTTP/2 flow-control
    // windows, so unread data cannot pile up per connection.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HTTP1_READ_BUFFER);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .max_header_list_size(HTTP2_HEADER_LIST)
        .keep_alive_interval(limits.http2_keepalive)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
    tokio::pin!(connection);
    let closing = loop {
        let idle_left = limits.idle_timeout.saturating_sub(activity.idle_for());
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(idle_left) => {
                if activity.idle_for() >= limits.idle_timeout {
                    break Closing::Idle;
                }
            }
            _ = activity.shed() => break Closing::Shed,
            _ = stopped(&mut stop) => break Closing::Stop,
        }
    };
    tracing::debug!(%peer, reason = closing.as_str(), "closing connection");
    // Refuse new requests (HTTP/2: GOAWAY) and close once in-flight ones
    // are done. An idle or shed connection gets a moment for that, then is
    // dropped: a client dawdling over its next request head must not hold
    // the slot. A request being served is always finished; one whose body
    // still waits for room in the body budget has not started and goes
    // with its connection.
    connection.as_mut().graceful_shutdown();
    if closing == Closing::Stop {
        let _ = connection.await;
    } else {
        let mut patience = FLUSH_PATIENCE;
        loop {
            tokio::select! {
                _ = connection.as_mut() => break,
                _ = tokio::time::sleep(patience) => {
                    if !activity.is_serving() {
                        break;
                    }
                }
            }
            patience = CLOSE_PATIENCE;
        }
    }
    drop(slot);
}

/// Why the server closes a connection it is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// No request for the idle timeout.
    Idle,
    /// Displaced to admit another connection at the bound.
    Shed,
    /// The server is shutting down: in-flight requests are finished.
    Stop,
}

impl Closing {
    fn as_str(self) -> &'static str {
        match self {
            Closing::Idle => "idle",
            Closing::Shed => "shed",
            Closing::Stop => "stop",
        }
    }
}
