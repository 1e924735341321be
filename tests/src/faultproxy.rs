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
//! Unlike [`crate::CountingProxy`] it speaks HTTP/1.1 directly with hyper, so
//! it sees each accepted connection and can abort one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use imgate_core::registry::ClientConfig;
use tokio::net::TcpListener;

use crate::server::background;

/// Largest request body forwarded (manifest and blob uploads of test images).
const MAX_BODY: usize = 64 * 1024 * 1024;

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
    slowed: AtomicU64,
    resets: AtomicU64,
    errors: AtomicU64,
    sequence: AtomicU64,
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
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`) with a free port.
    pub fn start(upstream: &str, faults: Faults) -> anyhow::Result<FaultProxy> {
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
            accept_loop(listener, serving).await;
        });
        Ok(FaultProxy { addr, state, task })
    }

    /// `127.0.0.1:PORT` (use it in image references).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
            slowed: c.slowed.load(Ordering::SeqCst),
            resets: c.resets.load(Ordering::SeqCst),
            errors: c.errors.load(Ordering::SeqCst),
        }
    }

    /// Sets every counter back to zero (the fault sequence goes on).
    pub fn reset_counts(&self) {
        let c = &self.state.counters;
        for counter in [&c.requests, &c.connections, &c.slowed, &c.resets, &c.errors] {
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
    /// this proxy (plain HTTP allowed for it).
    pub fn client_config(&self) -> ClientConfig {
        crate::registry::client_config_for(&self.host(), false, None, None)
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        state.counters.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { handle(&state, request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
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
    request: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let epoch = state
        .epoch
        .lock()
        .map(|e| *e)
        .unwrap_or_else(|_| Instant::now());
    let start = epoch.elapsed();
    let name = format!("{} {}", request.method(), request.uri().path());
    let answer = answer(state, request).await;
    if let Ok(mut log) = state.log.lock() {
        if log.len() < MAX_LOGGED {
            log.push(Logged {
                request: name,
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
    match forward(state, request).await {
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

async fn forward(state: &State, request: Request<Incoming>) -> anyhow::Result<Response<Body>> {
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
}
