//! The load generator: N HTTP/1.1 keep-alive connections over rustls, each
//! driven by its own task sending the next review as soon as the last one
//! is answered (closed loop), for a fixed duration or a fixed count.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use imgate_tests::webhook::SERVICE_NAME;

/// A client for the webhook (or the floor server) at `addr`, reached as
/// [`SERVICE_NAME`] and trusting every CA in `cas`. With `pooled`, one kept-alive
/// connection is reused; without, every request opens a new TLS connection.
pub fn client(
    addr: SocketAddr,
    cas: &[&Path],
    pooled: bool,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .http1_only()
        .resolve(SERVICE_NAME, addr)
        .timeout(timeout)
        .pool_max_idle_per_host(usize::from(pooled));
    for ca in cas {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(builder.build()?)
}

/// `https://imgate.imgate-system.svc:PORT/mutate`.
pub fn mutate_url(addr: SocketAddr) -> String {
    format!("https://{SERVICE_NAME}:{}/mutate", addr.port())
}

/// When a closed-loop run stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After this long.
    Elapsed(Duration),
    /// After this many requests in all.
    Count(u64),
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latencies of the answers that passed the check, sorted.
    pub latencies: Vec<Duration>,
    /// Requests that failed: transport error, non-200, or the check said no.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Outcome {
    /// Answers per second that passed the check.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-quantile (0..=1) in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }
}

/// The `p`-quantile (0..=1) of sorted `samples`, in milliseconds (0 if empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// Sends `body` to `url` over `connections` kept-alive connections until
/// `until`; an answer counts when it is a 200 whose body contains `expect`.
pub async fn closed_loop(
    addr: SocketAddr,
    cas: &[&Path],
    connections: usize,
    body: Bytes,
    expect: &'static str,
    until: Until,
) -> anyhow::Result<Outcome> {
    let url = mutate_url(addr);
    let remaining = Arc::new(AtomicI64::new(match until {
        Until::Count(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Until::Elapsed(_) => i64::MAX,
    }));
    let started = Instant::now();
    let stop_at = match until {
        Until::Elapsed(d) => started + d,
        // A bound even on a count, so a stuck server cannot hang the run.
        Until::Count(_) => started + Duration::from_secs(300),
    };
    let mut workers = Vec::new();
    for _ in 0..connections {
        let client = client(addr, cas, true, Duration::from_secs(30))?;
        let (url, body, remaining) = (url.clone(), body.clone(), remaining.clone());
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            while Instant::now() < stop_at && remaining.fetch_sub(1, Ordering::SeqCst) > 0 {
                let sent = Instant::now();
                let result = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let failure = match result {
                    Ok(response) if response.status() == 200 => match response.bytes().await {
                        Ok(bytes) if contains(&bytes, expect.as_bytes()) => None,
                        Ok(bytes) => Some(format!(
                            "answer without {expect}: {}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                        )),
                        Err(err) => Some(format!("reading the answer: {err}")),
                    },
                    Ok(response) => Some(format!("HTTP {}", response.status())),
                    Err(err) => Some(format!("{err:#}")),
                };
                match failure {
                    None => outcome.latencies.push(sent.elapsed()),
                    Some(err) => {
                        outcome.errors += 1;
                        outcome.first_error.get_or_insert(err);
                    }
                }
            }
            outcome
        }));
    }
    let mut total = Outcome::default();
    for worker in workers {
        let outcome = worker.await.context("a load worker died")?;
        total.latencies.extend(outcome.latencies);
        total.errors += outcome.errors;
        if total.first_error.is_none() {
            total.first_error = outcome.first_error;
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort();
    Ok(total)
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends each of `bodies` once, over `connections` kept-alive connections;
/// returns how many answers were a 200 containing `expect`.
pub async fn each_once(
    addr: SocketAddr,
    cas: &[&Path],
    connections: usize,
    bodies: Vec<Bytes>,
    expect: &'static str,
) -> anyhow::Result<usize> {
    let url = mutate_url(addr);
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let client = client(addr, cas, true, Duration::from_secs(30))?;
        let (url, queue) = (url.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut passed = 0;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(body) = next else { break };
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if let Ok(response) = sent {
                    if response.status() == 200 {
                        if let Ok(bytes) = response.bytes().await {
                            passed += usize::from(contains(&bytes, expect.as_bytes()));
                        }
                    }
                }
            }
            passed
        }));
    }
    let mut passed = 0;
    for worker in workers {
        passed += worker.await.context("a load worker died")?;
    }
    Ok(passed)
}
