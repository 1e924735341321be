//! A delay-and-fault reverse proxy in front of a plain-HTTP registry, for the
//! benchmark and the soak: it counts requests *and* TCP connections (so a
//! benchmark can say "one review costs N round trips over M connections"),
//! adds a fixed latency to every request (a registry that is far away), and
//! can inject faults at a chosen rate: extra latency, a connection dropped
//! mid-request (the client sees a reset / "connection closed before the
//! message completed"), or a 5xx answer.
//!
//! Fault choice is deterministic (a hash of the request's sequence number),
//! so two runs with the same settings inject the same faults in the same
//! order. The settings can change while the proxy runs.
//!
//! Clients reach it in one of two ways ([`Front`]): plain HTTP/1.1, or TLS
//! with a certificate from a CA the proxy makes for itself, serving HTTP/2
//! or HTTP/1.1 as ALPN decides — what public registries serve, and the only
//! way a client can multiplex concurrent requests over one connection.
//!
//! Unlike [`crate::CountingProxy`] it speaks HTTP directly with hyper, so it
//! sees each accepted connection and can abort one: over HTTP/1.1 a dropped
//! request closes its connection; over HTTP/2 it resets the request's stream
//! (`RST_STREAM`), and the connection's other streams go on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use imgate_core::registry::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::pki::TestCa;
use crate::server::background;

/// Largest request body forwarded (manifest and blob uploads of test images).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long a client may take over its TLS handshake before the connection
/// is dropped (counted in [`FaultCounts::handshake_failures`]).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How clients talk to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Plain HTTP/1.1 (the client must be told to allow HTTP for the host).
    Plain,
    /// TLS (certificate from the proxy's own test CA, see
    /// [`FaultProxy::ca_file`]), HTTP/2 or HTTP/1.1 by ALPN.
    Tls,
}

/// What the proxy does; rates are per mille of requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added to every request before it is forwarded.
    pub delay: Duration,
    /// Share of requests (per mille) that wait `slow` more.
    pub slow_per_mille: u32,
    /// The extra wait of a slowed request.
    pub slow: Duration,
    /// Share of requests (per mille) whose connection is dropped unanswered.
    pub reset_per_mille: u32,
    /// Share of requests (per mille) answered `503` without forwarding.
    pub error_per_mille: u32,
}

/// Counters since the start or the last [`FaultProxy::reset_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    /// Requests received.
    pub requests: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// Of those, TLS connections that negotiated HTTP/2 (ALPN `h2`).
    pub h2_connections: u64,
    /// TLS connections dropped because the handshake failed or took longer
    /// than 10 s.
    pub handshake_failures: u64,
    /// Requests slowed by `slow`.
    pub slowed: u64,
    /// Connections dropped mid-request.
    pub resets: u64,
    /// Requests answered 503.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
    h2_connections: AtomicU64,
    handshake_failures: AtomicU64,
    slowed: AtomicU64,
    resets: AtomicU64,
    errors: AtomicU64,
    sequence: AtomicU64,
    /// Numbers the accepted connections for the log; never reset.
    connection_ids: AtomicU64,
}

#[derive(Debug)]
struct State {
    upstream: String,
    client: reqwest::Client,
    faults: Mutex<Faults>,
    counters: Counters,
    /// `METHOD /path STATUS` with start and end, since the last reset.
    log: Mutex<Vec<Logged>>,
    epoch: Mutex<Instant>,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Logged {
    /// `METHOD /path`.
    pub request: String,
    /// The connection it came on: 1 for the first the proxy accepted, and so on.
    pub connection: u64,
    /// `h2` or `http/1.1`.
    pub protocol: &'static str,
    /// The status answered (0: the connection was dropped).
    pub status: u16,
    /// Milliseconds from the last reset to the request's arrival.
    pub start_ms: u64,
    /// Milliseconds from the last reset to the answer.
    pub end_ms: u64,
}

/// Requests remembered for [`FaultProxy::log`]; later ones are counted, not kept.
const MAX_LOGGED: usize = 10_000;

/// A running fault proxy on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    /// The CA file clients trust (TLS front only).
    ca_file: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a plain-HTTP/1.1 proxy in front of `upstream` (`http://host:port`)
    /// with a free port.
    pub fn start(upstream: &str, faults: Faults) -> anyhow::Result<FaultProxy> {
        Self::start_with(upstream, faults, Front::Plain)
    }

    /// Starts a proxy in front of `upstream` (`http://host:port`) with a free
    /// port, reached through `front`. A TLS front makes a CA and a
    /// certificate for 127.0.0.1 and writes the CA to [`FaultProxy::ca_file`].
    pub fn start_with(upstream: &str, faults: Faults, front: Front) -> anyhow::Result<FaultProxy> {
        let (acceptor, ca_file, dir) = match front {
            Front::Plain => (None, None, None),
            Front::Tls => {
                let ca = TestCa::new("imgate fault proxy CA")?;
                let config = crate::pki::rustls_server_config(&ca.server_cert()?)?;
                let dir = tempfile::Builder::new()
                    .prefix("imgate-faultproxy-")
                    .tempdir()
                    .context("creating the fault proxy's temp dir")?;
                let ca_file = dir.path().join("ca.pem");
                std::fs::write(&ca_file, ca.cert_pem())
                    .with_context(|| format!("writing {}", ca_file.display()))?;
                (
                    Some(TlsAcceptor::from(Arc::new(config))),
                    Some(ca_file),
                    Some(dir),
                )
            }
        };
        let client = reqwest::Client::builder()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            client,
            faults: Mutex::new(faults),
            counters: Counters::default(),
            log: Mutex::new(Vec::new()),
            epoch: Mutex::new(Instant::now()),
        });
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let serving = state.clone();
        let task = background().spawn(async move {
            let Ok(listener) = TcpListener::from_std(std_listener) else {
                return;
            };
            accept_loop(listener, serving, acceptor).await;
        });
        Ok(FaultProxy {
            addr,
            state,
            task,
            ca_file,
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT` (use it in image references).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`, or `https://` for a TLS front.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Whether clients reach the proxy over TLS.
    pub fn is_tls(&self) -> bool {
        self.ca_file.is_some()
    }

    /// The PEM file of the CA that issued the proxy's certificate (TLS front).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The `imgate` flags to reach the registry through this proxy:
    /// `--registry-ca FILE` or `--allow-http-registry HOST`.
    pub fn cli_args(&self) -> Vec<String> {
        match &self.ca_file {
            Some(ca) => vec!["--registry-ca".to_string(), ca.display().to_string()],
            None => vec!["--allow-http-registry".to_string(), self.host()],
        }
    }

    /// Replaces the fault settings (requests already waiting keep theirs).
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut current) = self.state.faults.lock() {
            *current = faults;
        }
    }

    /// The counters so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.state.counters;
        FaultCounts {
            requests: c.requests.load(Ordering::SeqCst),
            connections: c.connections.load(Ordering::SeqCst),
            h2_connections: c.h2_connections.load(Ordering::SeqCst),
            handshake_failures: c.handshake_failures.load(Ordering::SeqCst),
            slowed: c.slowed.load(Ordering::SeqCst),
            resets: c.resets.load(Ordering::SeqCst),
            errors: c.errors.load(Ordering::SeqCst),
        }
    }

    /// Sets every counter back to zero (the fault sequence goes on).
    pub fn reset_counts(&self) {
        let c = &self.state.counters;
        for counter in [
            &c.requests,
            &c.connections,
            &c.h2_connections,
            &c.handshake_failures,
            &c.slowed,
            &c.resets,
            &c.errors,
        ] {
            counter.store(0, Ordering::SeqCst);
        }
        if let Ok(mut log) = self.state.log.lock() {
            log.clear();
        }
        if let Ok(mut epoch) = self.state.epoch.lock() {
            *epoch = Instant::now();
        }
    }

    /// The requests since the start or the last reset (at most 10,000), in
    /// the order they were answered.
    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// An `imgate_core` client configuration reaching the registry through
    /// this proxy (plain HTTP allowed for it, or its CA trusted).
    pub fn client_config(&self) -> ClientConfig {
        crate::registry::client_config_for(&self.host(), self.is_tls(), self.ca_file(), None)
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, tls: Option<TlsAcceptor>) {
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
enum Fault {
    None,
    Reset,
    Error,
    Slow,
}

fn choose(sequence: u64, faults: &Faults) -> Fault {
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

/// The longest chain of requests in `trace` where each one arrived at the
/// proxy no earlier than the one before it was answered.
pub fn in_turn(trace: &[Logged]) -> u64 {
    let mut by_start: Vec<&Logged> = trace.iter().collect();
    by_start.sort_by_key(|l| (l.start_ms, l.end_ms));
    // chain[i]: the longest chain ending with by_start[i]. A cold trace holds
    // a few dozen requests, so the quadratic walk costs nothing.
    let mut chain: Vec<u64> = Vec::with_capacity(by_start.len());
    for (i, request) in by_start.iter().enumerate() {
        let before = by_start[..i]
            .iter()
            .zip(&chain)
            .filter(|(earlier, _)| earlier.end_ms <= request.start_ms)
            .map(|(_, length)| *length)
            .max()
            .unwrap_or(0);
        chain.push(before + 1);
    }
    chain.into_iter().max().unwrap_or(0)
}

/// A well-mixed hash of a counter (Steele, Lea, Flood: SplitMix64).
pub fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn logged(start_ms: u64, end_ms: u64, connection: u64) -> Logged {
        Logged {
            request: format!("GET /{start_ms}"),
            connection,
            protocol: "h2",
            status: 200,
            start_ms,
            end_ms,
        }
    }

    #[test]
    fn in_turn_counts_the_requests_waited_for_one_after_another() {
        // A tag, three signature lookups at once, then the signature blob,
        // answered out of order.
        let trace = [
            logged(28, 57, 1),
            logged(0, 28, 1),
            logged(56, 85, 2),
            logged(28, 56, 1),
            logged(29, 56, 3),
        ];
        assert_eq!(in_turn(&trace), 3);
        // Requests that overlap count once.
        assert_eq!(in_turn(&[logged(0, 30, 1), logged(1, 29, 1)]), 1);
        assert_eq!(in_turn(&[]), 0);
    }

    #[test]
    fn fault_rates_are_close_to_what_was_asked() {
        let faults = Faults {
            reset_per_mille: 20,
            error_per_mille: 30,
            slow_per_mille: 100,
            ..Faults::default()
        };
        let (mut resets, mut errors, mut slow) = (0, 0, 0);
        for sequence in 0..100_000 {
            match choose(sequence, &faults) {
                Fault::Reset => resets += 1,
                Fault::Error => errors += 1,
                Fault::Slow => slow += 1,
                Fault::None => {}
            }
        }
        // 2%, 3% and 10% of 100,000, within 10% of each.
        assert!((1800..=2200).contains(&resets), "{resets}");
        assert!((2700..=3300).contains(&errors), "{errors}");
        assert!((9000..=11000).contains(&slow), "{slow}");
        assert_eq!(choose(7, &Faults::default()), Fault::None);
    }

    /// The TLS front: a push through it (its upload `Location`s must come
    /// back through it, over https), then three requests at once from an
    /// HTTP/2 client on one connection, then a dropped request resetting
    /// only its stream.
    #[tokio::test(flavor = "multi_thread")]
    async fn tls_front_multiplexes_http2_streams_on_one_connection() {
        use crate::{ImageBuilder, PushWith, Registry, Variant};
        use imgate_core::registry::RegistryClient;
        use imgate_core::signature::{self, SignOptions};
        use imgate_core::ImageRef;
        use imgate_keys::SigningKey;
        let registry = Registry::start(Variant::Http).await.unwrap();
        let proxy =
            FaultProxy::start_with(&registry.url(""), Faults::default(), Front::Tls).unwrap();
        assert!(proxy.url().starts_with("https://127.0.0.1:"));
        assert_eq!(proxy.cli_args()[0], "--registry-ca");
        let ca = proxy.ca_file().unwrap().to_path_buf();
        let image = ImageBuilder::new("fault-proxy-tls")
            .image()
            .push(&registry, "self/tls", "v1", PushWith::Http)
            .await
            .unwrap();
        // Signing uploads a blob and a manifest through the proxy.
        let signer = RegistryClient::new(proxy.client_config()).unwrap();
        let reference =
            ImageRef::parse(&format!("{}/self/tls:v1@{}", proxy.host(), image.digest)).unwrap();
        signature::sign(
            &signer,
            &reference,
            &SigningKey::generate(),
            &SignOptions::default(),
        )
        .await
        .unwrap();
        let pushed = proxy.log();
        assert!(
            pushed.iter().any(|l| l.request.starts_with("PUT ")
                && l.request.contains("/blobs/uploads/")
                && l.status == 201),
            "{pushed:?}"
        );
        assert!(pushed.iter().all(|l| l.protocol == "h2"), "{pushed:?}");

        proxy.reset_counts();
        proxy.set_faults(Faults {
            delay: Duration::from_millis(200),
            ..Faults::default()
        });
        let pem = std::fs::read(&ca).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        let url = format!("{}/v2/self/tls/manifests/v1", proxy.url());
        let get = || {
            client
                .get(&url)
                .header("accept", image.media_type.as_str())
                .send()
        };
        // One request first, so the three after it find an HTTP/2
        // connection in the client's pool (a client opening three at once
        // before any has negotiated would open three).
        let first = get().await.unwrap();
        assert_eq!(first.version(), reqwest::Version::HTTP_2);
        first.bytes().await.unwrap();
        let started = Instant::now();
        let answers = futures::future::join_all([get(), get(), get()]).await;
        let elapsed = started.elapsed();
        for answer in answers {
            let answer = answer.unwrap();
            assert_eq!(answer.status(), 200);
            let body = answer.bytes().await.unwrap();
            let digest = format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
            );
            assert_eq!(digest, image.digest);
        }
        // Concurrent on the proxy: one delay, not three.
        assert!(
            elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(550),
            "{elapsed:?}"
        );
        let counts = proxy.counts();
        assert_eq!(
            (counts.requests, counts.connections, counts.h2_connections),
            (4, 1, 1),
            "{counts:?}"
        );
        let log = proxy.log();
        assert_eq!(log.len(), 4);
        assert!(
            log.iter().all(|l| l.protocol == "h2"
                && l.connection == log[0].connection
                && l.status == 200),
            "{log:?}"
        );

        // A dropped request resets its stream; the connection serves the next.
        proxy.set_faults(Faults {
            reset_per_mille: 1000,
            ..Faults::default()
        });
        assert!(get().await.is_err());
        proxy.set_faults(Faults::default());
        let answer = get().await.unwrap();
        assert_eq!(answer.status(), 200);
        let counts = proxy.counts();
        assert!(counts.resets >= 1, "{counts:?}");
        assert_eq!(counts.connections, 1, "{counts:?}");

        // A client that does not trust the proxy's CA is turned away.
        assert!(reqwest::Client::builder()
            .use_rustls_tls()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .is_err());
        // The proxy sees the client's alert on its own task: wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.counts().handshake_failures == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(proxy.counts().handshake_failures, 1, "{:?}", proxy.counts());
    }
}
