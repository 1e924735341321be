//! The proxy's serving side: the accept loop, plain and TLS connections,
//! the fault each request gets, and the forwarding to the registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::{splitmix64, Faults, Logged, State, MAX_LOGGED};

/// Largest request body forwarded (manifest and blob uploads of test images).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long a client may take over its TLS handshake before the connection
/// is dropped (counted in [`super::FaultCounts::handshake_failures`]).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        state.counters.connections.fetch_add(1, Ordering::SeqCst);
        // As registries do (Go's net/http sets it on every connection):
        // without it, Nagle's algorithm holds an HTTP/2 DATA frame written
        // apart from its HEADERS until the client's delayed ACK, ~40 ms.
        let _ = stream.set_nodelay(true);
        let id = state.counters.connection_ids.fetch_add(1, Ordering::SeqCst) + 1;
        let state = state.clone();
        let tls = tls.clone();
        // The handshake runs on the connection's own task, so a slow client
        // never holds up the accept loop.
        tokio::spawn(async move {
            match tls {
                None => serve_plain(state, id, stream).await,
                Some(acceptor) => serve_tls(state, id, acceptor, stream).await,
            }
        });
    }
}

async fn serve_plain(state: Arc<State>, id: u64, stream: TcpStream) {
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { handle(&state, id, false, request).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn serve_tls(state: Arc<State>, id: u64, acceptor: TlsAcceptor, stream: TcpStream) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        _ => {
            state
                .counters
                .handshake_failures
                .fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        state.counters.h2_connections.fetch_add(1, Ordering::SeqCst);
    }
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { handle(&state, id, true, request).await }
    });
    // The auto builder reads the client's first bytes: the HTTP/2 preface
    // (what a client that negotiated `h2` sends) or an HTTP/1.1 request.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let _ = builder
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The fault a request gets, decided by its sequence number.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    Reset,
    Error,
    Slow,
}

pub(super) fn choose(sequence: u64, faults: &Faults) -> Fault {
    let roll = (splitmix64(sequence) % 1000) as u32;
    let reset = faults.reset_per_mille;
    let error = reset + faults.error_per_mille;
    let slow = error + faults.slow_per_mille;
    if roll < reset {
        Fault::Reset
    } else if roll < error {
        Fault::Error
    } else if roll < slow {
        Fault::Slow
    } else {
        Fault::None
    }
}

/// Answers one request (with its fault) and logs it.
async fn handle(
    state: &State,
    connection: u64,
    tls: bool,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let epoch = state
        .epoch
        .lock()
        .map(|e| *e)
        .unwrap_or_else(|_| Instant::now());
    let start = epoch.elapsed();
    let name = format!("{} {}", request.method(), request.uri().path());
    let protocol = if request.version() == Version::HTTP_2 {
        "h2"
    } else {
        "http/1.1"
    };
    let answer = answer(state, tls, request).await;
    if let Ok(mut log) = state.log.lock() {
        if log.len() < MAX_LOGGED {
            log.push(Logged {
                request: name,
                connection,
                protocol,
                status: answer.as_ref().map_or(0, |r| r.status().as_u16()),
                start_ms: start.as_millis() as u64,
                end_ms: epoch.elapsed().as_millis() as u64,
            });
        }
    }
    answer
}

async fn answer(
    state: &State,
    tls: bool,
    request: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let counters = &state.counters;
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let sequence = counters.sequence.fetch_add(1, Ordering::SeqCst);
    let faults = state.faults.lock().map(|f| *f).unwrap_or_default();
    let fault = choose(sequence, &faults);
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    match fault {
        Fault::Reset => {
            counters.resets.fetch_add(1, Ordering::SeqCst);
            // An error from the service makes hyper close the connection
            // without an answer.
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected by the fault proxy",
            ));
        }
        Fault::Error => {
            counters.errors.fetch_add(1, Ordering::SeqCst);
            return Ok(status_response(StatusCode::SERVICE_UNAVAILABLE));
        }
        Fault::Slow => {
            counters.slowed.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(faults.slow).await;
        }
        Fault::None => {}
    }
    match forward(state, tls, request).await {
        Ok(response) => Ok(response),
        Err(_) => Ok(status_response(StatusCode::BAD_GATEWAY)),
    }
}

fn status_response(status: StatusCode) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": "UNAVAILABLE", "message": "injected by the fault proxy"}]});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
}

async fn forward(
    state: &State,
    tls: bool,
    mut request: Request<Incoming>,
) -> anyhow::Result<Response<Body>> {
    // The registry builds upload `Location`s from `Host` and
    // `X-Forwarded-Proto`; both must name the proxy as the client reached it,
    // or the client's next request would bypass the proxy. An HTTP/2 request
    // carries its host as `:authority`, which is no header.
    if !request.headers().contains_key(HOST) {
        if let Some(authority) = request.uri().authority() {
            let value = HeaderValue::from_str(authority.as_str())?;
            request.headers_mut().insert(HOST, value);
        }
    }
    if tls {
        request
            .headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
    }
    crate::proxy::relay(
        &state.client,
        &state.upstream,
        request.map(Body::new),
        MAX_BODY,
    )
    .await
}
