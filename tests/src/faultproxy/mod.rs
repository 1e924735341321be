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
use imgate_core::registry::ClientConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pki::TestCa;
use crate::server::background;

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
            serve::accept_loop(listener, serving, acceptor).await;
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

mod serve;

#[cfg(test)]
mod tests;
