//! The cold cases of `imgate-perf bench`: one review of an image new to an
//! `imgate webhook` process (empty caches), or one `imgate verify` process,
//! against the registry behind a fault proxy that adds a fixed delay to every
//! request; what each costs in latency, registry requests, sequential round
//! trips and TCP connections.
//!
//! A review runs on a fresh webhook process in one of two ways: as a *running*
//! webhook, which has already reviewed another image in the same registry and
//! so holds an open connection to it (the usual case in production: a new
//! image rolled out to a long-running webhook), or as *first contact*, where
//! the measured review is the process's first registry request.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use imgate_tests::{in_turn, FaultCounts, FaultProxy, Logged};
use serde::Serialize;
use serde_json::Value;

use crate::lab::{pod, review, Lab, Served};
use crate::load;

/// How long one `imgate verify` may run before the case fails.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// One measured case: the median run of the repeats.
#[derive(Debug, Serialize)]
pub struct Cold {
    pub case: &'static str,
    /// `h2` (TLS, HTTP/2 by ALPN) or `http/1.1` (plain).
    pub front: &'static str,
    pub images: usize,
    /// Median over the repeats.
    pub latency_ms: f64,
    pub requests: u64,
    /// Latency ÷ delay, rounded: the registry requests waited for in turn,
    /// plus the review's own work and the proxy's hop when they add up to
    /// half a delay.
    pub round_trips: u64,
    /// The longest chain of registry requests of the median run in which
    /// each began after the one before was answered (from the trace): the
    /// round trips the review could not overlap, free of its own work.
    pub in_turn: u64,
    /// TCP connections the proxy accepted.
    pub connections: u64,
    /// The fewest and most connections of any repeat (they can differ when
    /// concurrent requests race to connect).
    pub connections_min: u64,
    pub connections_max: u64,
    /// Of those, connections that negotiated HTTP/2.
    pub h2_connections: u64,
    /// Connections that carried at least one request (from the trace): a
    /// client that connects again before its first connection is up opens
    /// connections it then leaves unused.
    pub connections_used: u64,
    /// The registry requests of the median run, in the order answered.
    pub trace: Vec<Logged>,
}

/// What a review must answer.
#[derive(Debug, Clone)]
pub enum Expect {
    Allowed,
    /// Denied with a message containing this text.
    Denied(String),
}

/// A Pod to review.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub images: Vec<String>,
    pub expect: Expect,
}

/// Where and how the cases run.
pub struct Setting<'a> {
    pub lab: &'a Lab,
    /// The proxy the images are named through (and whose counts are taken).
    pub front: &'a FaultProxy,
    pub policy: &'a Path,
    pub certs: &'a Path,
    pub repeats: usize,
    pub delay: Duration,
    /// A running webhook: before each measured review, a Pod of this image
    /// (signed, in the same registry, reached through `front`) is reviewed
    /// and must be allowed, so the registry connection is open and only the
    /// primer's own verdict is cached. `None`: first contact.
    pub primer: Option<&'a str>,
}

impl Setting<'_> {
    fn front_name(&self) -> &'static str {
        if self.front.is_tls() {
            "h2"
        } else {
            "http/1.1"
        }
    }

    /// The median run by latency, as a [`Cold`].
    fn median(
        &self,
        case: &'static str,
        images: usize,
        mut runs: Vec<(Duration, FaultCounts, Vec<Logged>)>,
    ) -> anyhow::Result<Cold> {
        if runs.is_empty() {
            bail!("cold {case}: no run");
        }
        let each = runs.iter().map(|(_, counts, _)| counts.connections);
        let connections_min = each.clone().min().unwrap_or(0);
        let connections_max = each.max().unwrap_or(0);
        runs.sort_by_key(|(latency, _, _)| *latency);
        let (latency, counts, trace) = runs.swap_remove(runs.len() / 2);
        let delay_ms = self.delay.as_secs_f64() * 1e3;
        let latency_ms = latency.as_secs_f64() * 1e3;
        Ok(Cold {
            case,
            front: self.front_name(),
            images,
            latency_ms,
            requests: counts.requests,
            round_trips: if delay_ms > 0.0 {
                (latency_ms / delay_ms).round() as u64
            } else {
                0
            },
            connections: counts.connections,
            connections_min,
            connections_max,
            h2_connections: counts.h2_connections,
            in_turn: in_turn(&trace),
            connections_used: connections_used(&trace),
            trace,
        })
    }
}

/// Reviews `case`'s Pod on a fresh webhook `repeats` times (primed first
/// when the setting has a primer); the median.
pub async fn review_case(setting: &Setting<'_>, case: &Case) -> anyhow::Result<Cold> {
    let lab = setting.lab;
    let ca = setting.certs.join("ca.crt");
    let images: Vec<&str> = case.images.iter().map(String::as_str).collect();
    let body = serde_json::to_vec(&review("cold", "apps", &pod("apps", &images)))?;
    // An excluded namespace: answered without the registry, it opens the
    // TLS connection to the webhook before the clock starts.
    let opener = serde_json::to_vec(&review("open", "kube-system", &pod("kube-system", &images)))?;
    let primer = match setting.primer {
        Some(image) => Some(serde_json::to_vec(&review(
            "primer",
            "apps",
            &pod("apps", &[image]),
        ))?),
        None => None,
    };
    let primer_case = Case {
        name: "primer",
        images: setting.primer.iter().map(|i| i.to_string()).collect(),
        expect: Expect::Allowed,
    };
    let mut runs = Vec::new();
    for repeat in 0..setting.repeats.max(1) {
        let log = lab.dir.path().join(format!("cold-{repeat}.log"));
        let served = Served::start(setting.policy, setting.certs, &[], &log)?;
        let client = load::client(served.admission, &[&ca], true, Duration::from_secs(30))?;
        let url = load::mutate_url(served.admission);
        let post = |body: Vec<u8>| {
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        post(opener.clone()).await?.bytes().await?;
        if let Some(primer) = &primer {
            let answer = post(primer.clone()).await?.bytes().await?;
            let answer: Value = serde_json::from_slice(&answer).with_context(|| {
                format!("cold {}: the webhook's answer to the primer", case.name)
            })?;
            check_answer(&primer_case, &answer, &served.log_text())?;
        }
        setting.front.reset_counts();
        let sent = Instant::now();
        let answer = post(body.clone()).await?.bytes().await?;
        let latency = sent.elapsed();
        let counts = setting.front.counts();
        let trace = setting.front.log();
        let answer: Value = serde_json::from_slice(&answer)
            .with_context(|| format!("cold {}: the webhook's answer", case.name))?;
        check_answer(case, &answer, &served.log_text())?;
        // A review answered without the registry (a verdict cached by the
        // primer, say) would measure nothing.
        if counts.requests == 0 {
            bail!(
                "cold {}: the review made no registry request\n{}",
                case.name,
                tail(&served.log_text())
            );
        }
        runs.push((latency, counts, trace));
    }
    setting.median(case.name, images.len(), runs)
}

fn check_answer(case: &Case, answer: &Value, log: &str) -> anyhow::Result<()> {
    let response = &answer["response"];
    let message = response["status"]["message"].as_str().unwrap_or("");
    match &case.expect {
        Expect::Allowed if response["allowed"] == true => Ok(()),
        Expect::Denied(text) if response["allowed"] == false && message.contains(text) => Ok(()),
        Expect::Allowed => bail!("cold {}: not allowed: {answer}\n{}", case.name, tail(log)),
        Expect::Denied(text) => bail!(
            "cold {}: expected a denial saying {text:?}, got: {answer}\n{}",
            case.name,
            tail(log)
        ),
    }
}

/// Runs `imgate verify --key KEY IMAGE` through the front `repeats` times;
/// the median wall time (process start included) with that run's counts.
pub async fn verify_case(
    setting: &Setting<'_>,
    case: &'static str,
    image: &str,
) -> anyhow::Result<Cold> {
    let lab = setting.lab;
    let mut runs = Vec::new();
    for _ in 0..setting.repeats.max(1) {
        let mut command = imgate_command();
        command
            .arg("verify")
            .arg("--key")
            .arg(lab.key_file())
            .args(setting.front.cli_args())
            .arg("--docker-config")
            .arg(lab.docker_config())
            .arg(image);
        setting.front.reset_counts();
        let (latency, output) = timed(command).await?;
        let counts = setting.front.counts();
        let trace = setting.front.log();
        if !output.status.success() {
            bail!(
                "cold {case}: imgate verify {image} exited with {}:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        runs.push((latency, counts, trace));
    }
    setting.median(case, 1, runs)
}

/// The median wall time of `imgate --version` over `repeats` runs (ms): what
/// starting the process costs, the floor under the CLI cases.
pub async fn process_start_ms(repeats: usize) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let mut command = imgate_command();
        command.arg("--version");
        let (latency, output) = timed(command).await?;
        if !output.status.success() {
            bail!("imgate --version exited with {}", output.status);
        }
        times.push(latency);
    }
    times.sort();
    Ok(times[times.len() / 2].as_secs_f64() * 1e3)
}

/// `imgate` with none of the caller's `IMGATE_*` or `DOCKER_CONFIG`.
fn imgate_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(imgate_tests::imgate_bin());
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("IMGATE_") || name == "DOCKER_CONFIG" {
            command.env_remove(&key);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` to its end (at most [`VERIFY_TIMEOUT`]); the wall time
/// from spawn to exit.
async fn timed(
    mut command: tokio::process::Command,
) -> anyhow::Result<(Duration, std::process::Output)> {
    let started = Instant::now();
    let child = command.spawn().context("starting imgate")?;
    let output = tokio::time::timeout(VERIFY_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("imgate did not finish within {VERIFY_TIMEOUT:?}"))??;
    Ok((started.elapsed(), output))
}

/// How many distinct connections the requests of `trace` came on.
fn connections_used(trace: &[Logged]) -> u64 {
    let mut ids: Vec<u64> = trace.iter().map(|l| l.connection).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len() as u64
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
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
    fn connections_used_counts_distinct_connections() {
        let trace = [logged(0, 1, 7), logged(0, 1, 9), logged(2, 3, 7)];
        assert_eq!(connections_used(&trace), 2);
    }
}
