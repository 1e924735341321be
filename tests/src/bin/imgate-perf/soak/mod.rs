//! `imgate-perf soak`: the webhook at a steady request rate for a fixed
//! time, with a mix of cached, new, unsigned, untrusted and malformed
//! reviews, while the fault proxy in front of the registry injects latency,
//! dropped connections and 503s, the serving certificate files are
//! rewritten (the webhook reloads them) and the policy is rewritten (the
//! webhook reloads it); then SIGTERM.
//!
//! Every answer is checked against what it should be. Under injected
//! registry faults a review of a signed image may be denied by
//! `onRegistryError: deny`; that is counted as "fail-closed", apart from
//! the unexpected answers (transport errors, 5xx, answers later than the
//! deadline plus one second, wrong decisions).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use imgate_tests::Faults;
use serde::Serialize;
use serde_json::Value;

use crate::lab::{pod, review, Lab, Served};
use crate::load;
use crate::proc;

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    pub rate: u32,
    pub deadline: Duration,
    pub json: bool,
}

/// The kinds of review in the mix, with their share in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Cached,
    New,
    Unsigned,
    Untrusted,
    Malformed,
}

const MIX: [(Kind, u64); 5] = [
    (Kind::Cached, 40),
    (Kind::New, 20),
    (Kind::Unsigned, 15),
    (Kind::Untrusted, 10),
    (Kind::Malformed, 15),
];

/// How an answer was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Expected,
    FailClosed,
    Unexpected,
}

#[derive(Debug, Default, Serialize)]
struct Tally {
    sent: usize,
    expected: usize,
    fail_closed: usize,
    unexpected: usize,
    not_sent_backlog: usize,
    by_kind: std::collections::BTreeMap<String, usize>,
    unexpected_examples: Vec<String>,
    fail_closed_examples: Vec<String>,
    #[serde(skip)]
    latencies: Vec<Duration>,
}

#[derive(Debug, Serialize)]
struct Report {
    binary: String,
    duration_s: f64,
    rate: u32,
    deadline_ms: u64,
    tally: Tally,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    rss_mib: Vec<(f64, f64)>,
    rss_max_mib: f64,
    proxy: imgate_tests::FaultCounts,
    cert_rotations: usize,
    policy_reloads: usize,
    reload_metrics: Vec<String>,
    sigterm_exit: String,
    sigterm_exit_ms: f64,
}

/// What every request needs to build and judge its review.
struct Mix {
    cached: Bytes,
    new: Vec<Bytes>,
    next_new: AtomicUsize,
    unsigned: Vec<Bytes>,
    untrusted: Bytes,
    malformed: Vec<Bytes>,
}

impl Mix {
    fn pick(&self, n: u64) -> (Kind, Bytes) {
        let roll = imgate_tests::faultproxy::splitmix64(n) % 100;
        let mut bound = 0;
        let mut kind = Kind::Cached;
        for (candidate, share) in MIX {
            bound += share;
            if roll < bound {
                kind = candidate;
                break;
            }
        }
        let index = imgate_tests::faultproxy::splitmix64(n ^ 0xA5A5) as usize;
        let body = match kind {
            Kind::Cached => self.cached.clone(),
            Kind::New => {
                let at = self.next_new.fetch_add(1, Ordering::SeqCst);
                self.new[at % self.new.len()].clone()
            }
            Kind::Unsigned => self.unsigned[index % self.unsigned.len()].clone(),
            Kind::Untrusted => self.untrusted.clone(),
            Kind::Malformed => self.malformed[index % self.malformed.len()].clone(),
        };
        (kind, body)
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<bool> {
    let lab = Lab::start(imgate_tests::Front::Plain).await?;
    let say = |text: &str| {
        if !settings.json {
            eprintln!("imgate-perf soak: {text}");
        }
    };
    say("pushing and signing the test images");
    let mut cached = Vec::new();
    for name in ["a", "b", "c"] {
        let signed = lab
            .push(
                &format!("team/cached-{name}"),
                "v1",
                Some(imgate_core::signature::Format::Legacy),
            )
            .await?;
        cached.push(signed.0);
    }
    let expected_new = (settings.rate as f64 * settings.duration.as_secs_f64() * 0.2) as usize;
    let new_images = lab
        .push_many("team/new", expected_new.clamp(10, 400))
        .await?;
    let mut unsigned = Vec::new();
    for n in 0..4 {
        unsigned.push(lab.push(&format!("team/unsigned-{n}"), "v1", None).await?.0);
    }
    let as_body = |uid: &str, images: &[&str]| -> anyhow::Result<Bytes> {
        Ok(Bytes::from(serde_json::to_vec(&review(
            uid,
            "apps",
            &pod("apps", images),
        ))?))
    };
    let cached_refs: Vec<&str> = cached.iter().map(String::as_str).collect();
    let mix = Arc::new(Mix {
        cached: as_body("cached", &cached_refs)?,
        new: new_images
            .iter()
            .map(|image| as_body("new", &[image]))
            .collect::<anyhow::Result<_>>()?,
        next_new: AtomicUsize::new(0),
        unsigned: unsigned
            .iter()
            .map(|image| as_body("unsigned", &[image]))
            .collect::<anyhow::Result<_>>()?,
        untrusted: as_body("untrusted", &["untrusted.example/app:v1"])?,
        malformed: vec![
            Bytes::from_static(b"<xml/>"),
            Bytes::from_static(br#"{"apiVersion":"v1","kind":"AdmissionReview","request":{}}"#),
            Bytes::from_static(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#),
        ],
    });

    // Certificates: one set per rotation, all CAs trusted by the client
    // (an operator's caBundle holds both during a rotation).
    let rotations = 3;
    let sets: Vec<PathBuf> = (0..=rotations)
        .map(|n| lab.certs(&format!("rotation-{n}")))
        .collect::<anyhow::Result<_>>()?;
    let serving = lab.dir.path().join("serving");
    std::fs::create_dir_all(&serving)?;
    install_certs(&sets[0], &serving)?;
    let cas: Vec<PathBuf> = sets.iter().map(|set| set.join("ca.crt")).collect();
    let ca_refs: Vec<&Path> = cas.iter().map(PathBuf::as_path).collect();
    let policy = lab.write_policy(&lab.policy_text(""))?;

    let deadline_arg = format!("{}ms", settings.deadline.as_millis());
    let log = lab.dir.path().join("soak.log");
    let mut served = Served::start(
        &policy,
        &serving,
        &["--deadline", &deadline_arg, "--reload-interval", "1s"],
        &log,
    )?;
    let pid = served.pid();
    let limit = settings.deadline + Duration::from_secs(1);
    let pooled = load::client(
        served.admission,
        &ca_refs,
        true,
        limit + Duration::from_secs(4),
    )?;
    let fresh = load::client(
        served.admission,
        &ca_refs,
        false,
        limit + Duration::from_secs(4),
    )?;
    let url = load::mutate_url(served.admission);

    lab.proxy.set_faults(Faults {
        delay: Duration::from_millis(2),
        slow_per_mille: 50,
        slow: Duration::from_millis(500),
        reset_per_mille: 20,
        error_per_mille: 30,
    });
    lab.proxy.reset_counts();
    say(&format!(
        "{} reviews/s for {:?} with registry faults, {rotations} certificate rotations, policy reloads",
        settings.rate, settings.duration
    ));

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(settings.rate.max(1)),
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rss = vec![(0.0, proc::rss_mib(pid)?)];
    let mut last_sample = Instant::now();
    let (mut rotated, mut reloads) = (0, 0);
    let mut n: u64 = 0;
    while started.elapsed() < settings.duration {
        ticker.tick().await;
        let elapsed = started.elapsed();
        let fraction = elapsed.as_secs_f64() / settings.duration.as_secs_f64();
        if rotated < rotations && fraction >= (rotated + 1) as f64 / (rotations + 1) as f64 {
            rotated += 1;
            install_certs(&sets[rotated], &serving)?;
        }
        let reload_every = (settings.duration / 6).max(Duration::from_secs(2));
        if elapsed >= reload_every * (reloads + 1) as u32 {
            reloads += 1;
            lab.write_policy(&lab.policy_text(&no_op_rule(&lab.proxy.host(), reloads)))?;
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            rss.push((elapsed.as_secs_f64(), proc::rss_mib(pid)?));
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            if let Ok(mut t) = tally.lock() {
                t.not_sent_backlog += 1;
            }
            continue;
        };
        n += 1;
        let (kind, body) = mix.pick(n);
        // One review in ten on a new TLS connection, so rotations are seen.
        let client = if n % 10 == 0 {
            fresh.clone()
        } else {
            pooled.clone()
        };
        let (url, tally) = (url.clone(), tally.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let result = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let answer = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    response
                        .bytes()
                        .await
                        .map(|bytes| (status, bytes))
                        .map_err(|err| format!("reading the answer: {err}"))
                }
                Err(err) => Err(format!("{err:#}")),
            };
            let took = sent.elapsed();
            let (verdict, why) = judge(kind, answer, took, limit);
            if let Ok(mut t) = tally.lock() {
                t.sent += 1;
                *t.by_kind
                    .entry(format!("{kind:?}").to_lowercase())
                    .or_default() += 1;
                t.latencies.push(took);
                match verdict {
                    Verdict::Expected => t.expected += 1,
                    Verdict::FailClosed => {
                        t.fail_closed += 1;
                        if t.fail_closed_examples.len() < 3 {
                            t.fail_closed_examples.push(format!("{kind:?}: {why}"));
                        }
                    }
                    Verdict::Unexpected => {
                        t.unexpected += 1;
                        if t.unexpected_examples.len() < 10 {
                            t.unexpected_examples.push(format!("{kind:?}: {why}"));
                        }
                    }
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Let in-flight reviews finish (each is bounded by the client timeout).
    while tasks.join_next().await.is_some() {}
    rss.push((started.elapsed().as_secs_f64(), proc::rss_mib(pid)?));
    let proxy = lab.proxy.counts();
    lab.proxy.set_faults(Faults::default());
    // Two reload intervals, so the last rewrite is picked up before counting.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let metrics = served.metrics_text().await.unwrap_or_default();
    let reload_metrics = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains("reload"))
        .map(str::to_string)
        .collect();
    let (status, took) = served
        .terminate(Duration::from_secs(30))
        .context("SIGTERM at the end of the soak")?;

    let mut tally = std::mem::take(
        &mut *tally
            .lock()
            .map_err(|_| anyhow::anyhow!("tally lock poisoned"))?,
    );
    tally.latencies.sort();
    let rss_max = rss.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    let report = Report {
        binary: imgate_tests::imgate_bin().display().to_string(),
        duration_s: settings.duration.as_secs_f64(),
        rate: settings.rate,
        deadline_ms: settings.deadline.as_millis() as u64,
        p50_ms: load::percentile_ms(&tally.latencies, 0.50),
        p99_ms: load::percentile_ms(&tally.latencies, 0.99),
        max_ms: load::percentile_ms(&tally.latencies, 1.0),
        tally,
        rss_max_mib: rss_max,
        rss_mib: rss,
        proxy,
        cert_rotations: rotated,
        policy_reloads: reloads,
        reload_metrics,
        sigterm_exit: status.to_string(),
        sigterm_exit_ms: took.as_secs_f64() * 1e3,
    };
    let reloaded = |name: &str| {
        metric(&metrics, &format!("{name}{{result=\"success\"}}")).unwrap_or(0.0) as usize
    };
    let (tls_seen, policy_seen) = (
        reloaded("imgate_tls_reloads_total"),
        reloaded("imgate_policy_reloads_total"),
    );
    if tls_seen < rotated || policy_seen < reloads {
        eprintln!(
            "imgate-perf soak: reloads seen: certificate {tls_seen} of {rotated}, policy {policy_seen} of {reloads}"
        );
    }
    let passed = tls_seen >= rotated
        && policy_seen >= reloads
        && report.tally.unexpected == 0
        && report.tally.not_sent_backlog == 0
        && report.rss_max_mib < 256.0
        && status.success();
    if settings.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, passed);
    }
    if !passed {
        eprintln!(
            "imgate-perf soak: webhook log kept at {}",
            keep_log(&served)?.display()
        );
    }
    Ok(passed)
}

/// The value of the sample `name` (with its labels) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
}

/// Copies a certificate set's key and certificate over the served files,
/// each by a rename (the two files change one after the other, as a
/// careless rotation would do them).
fn install_certs(set: &Path, serving: &Path) -> anyhow::Result<()> {
    for name in ["tls.key", "tls.crt", "ca.crt"] {
        let tmp = serving.join(format!(".{name}.tmp"));
        std::fs::copy(set.join(name), &tmp)?;
        std::fs::rename(&tmp, serving.join(name))?;
    }
    Ok(())
}

/// A rule that matches no image the soak sends: the policy changes, the
/// decisions must not.
fn no_op_rule(proxy: &str, n: usize) -> String {
    format!("  - name: reload-{n}\n    images: [\"{proxy}/nothing-{n}/**\"]\n    verify: none\n")
}

/// Judges one answer against what `kind` should get.
fn judge(
    kind: Kind,
    answer: Result<(u16, Bytes), String>,
    took: Duration,
    limit: Duration,
) -> (Verdict, String) {
    let (status, bytes) = match answer {
        Ok(pair) => pair,
        Err(err) => {
            return (
                Verdict::Unexpected,
                format!("transport: {err} after {took:?}"),
            )
        }
    };
    if took > limit {
        return (
            Verdict::Unexpected,
            format!("answered after {took:?}, past the deadline"),
        );
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).to_string();
    if kind == Kind::Malformed {
        return if status == 400 {
            (Verdict::Expected, String::new())
        } else {
            (
                Verdict::Unexpected,
                format!("malformed review got HTTP {status}: {text}"),
            )
        };
    }
    if status != 200 {
        return (Verdict::Unexpected, format!("HTTP {status}: {text}"));
    }
    let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
        return (Verdict::Unexpected, format!("answer is not JSON: {text}"));
    };
    // Each kind's reviews carry the kind's name as their uid, echoed back.
    let uid = format!("{kind:?}").to_lowercase();
    if value["response"]["uid"] != uid.as_str() {
        return (
            Verdict::Unexpected,
            format!("uid not echoed (want {uid}): {text}"),
        );
    }
    let allowed = value["response"]["allowed"] == true;
    let message = value["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    match (kind, allowed) {
        (Kind::Cached | Kind::New, true) | (Kind::Unsigned | Kind::Untrusted, false) => {
            (Verdict::Expected, String::new())
        }
        (Kind::Cached | Kind::New, false) if registry_unavailable(message) => {
            (Verdict::FailClosed, message.to_string())
        }
        _ => (
            Verdict::Unexpected,
            format!("wrong decision (allowed={allowed}): {message}"),
        ),
    }
}

/// Whether a denial says the registry could not be reached (the policy's
/// `onRegistryError: deny`), rather than that a signature is missing.
fn registry_unavailable(message: &str) -> bool {
    let message = message.to_lowercase();
    [
        "unavailable",
        "onregistryerror",
        "deadline",
        "timed out",
        "registry error",
    ]
    .iter()
    .any(|marker| message.contains(marker))
}

fn keep_log(served: &Served) -> anyhow::Result<PathBuf> {
    let kept = std::env::temp_dir().join(format!("imgate-soak-{}.log", std::process::id()));
    std::fs::write(&kept, served.log_text())?;
    Ok(kept)
}

fn print_report(r: &Report, passed: bool) {
    let t = &r.tally;
    println!("imgate soak: {}", r.binary);
    println!(
        "{:.0}s at {} reviews/s, deadline {} ms; mix {:?}",
        r.duration_s, r.rate, r.deadline_ms, t.by_kind
    );
    println!(
        "requests {}  expected {}  fail-closed under faults {}  unexpected {}  not sent (backlog) {}",
        t.sent, t.expected, t.fail_closed, t.unexpected, t.not_sent_backlog
    );
    for example in &t.unexpected_examples {
        println!("  unexpected: {example}");
    }
    for example in &t.fail_closed_examples {
        println!("  fail-closed: {example}");
    }
    println!(
        "latency p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.p50_ms, r.p99_ms, r.max_ms
    );
    println!(
        "registry proxy: {} requests over {} connections; injected {} slow, {} resets, {} 503",
        r.proxy.requests, r.proxy.connections, r.proxy.slowed, r.proxy.resets, r.proxy.errors
    );
    println!(
        "certificate rotations {}, policy rewrites {}; metrics: {}",
        r.cert_rotations,
        r.policy_reloads,
        r.reload_metrics.join("; ")
    );
    let step = (r.rss_mib.len() / 10).max(1);
    let series: Vec<String> = r
        .rss_mib
        .iter()
        .step_by(step)
        .chain(r.rss_mib.last())
        .map(|(t, m)| format!("{t:.0}s:{m:.1}"))
        .collect();
    println!(
        "RSS MiB over time: {}  (max {:.1})",
        series.join(" "),
        r.rss_max_mib
    );
    println!(
        "SIGTERM: {} after {:.0} ms",
        r.sigterm_exit, r.sigterm_exit_ms
    );
    println!("{}", if passed { "soak PASSED" } else { "soak FAILED" });
}

#[cfg(test)]
mod tests;
