//! `imgate-perf bench`: cold admission latency and registry round trips
//! behind a delay proxy, warm throughput against the floor server, CPU per
//! review, and RSS (idle, after 10,000 warm reviews, after 1,000 distinct
//! signed images).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use imgate_core::signature::Format;
use imgate_tests::Faults;
use serde::Serialize;
use serde_json::Value;

use crate::lab::{pod, review, Lab, Served};
use crate::load::{self, Until};
use crate::proc;

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub delay: Duration,
    pub connections: usize,
    pub duration: Duration,
    pub repeats: usize,
    pub distinct: usize,
    pub warm_reviews: u64,
    pub json: bool,
    pub trace: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            delay: Duration::from_millis(25),
            connections: 16,
            duration: Duration::from_secs(8),
            repeats: 3,
            distinct: 1000,
            warm_reviews: 10_000,
            json: false,
            trace: false,
        }
    }
}

#[derive(Debug, Serialize)]
struct Cold {
    case: &'static str,
    images: usize,
    /// Median over the repeats.
    latency_ms: f64,
    requests: u64,
    round_trips: u64,
    connections: u64,
    /// The registry requests of the median run, in the order answered.
    trace: Vec<imgate_tests::Logged>,
}

#[derive(Debug, Serialize)]
struct Throughput {
    reviews: usize,
    errors: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_review: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    binary: String,
    delay_ms: u64,
    connections: usize,
    duration_s: f64,
    cold: Vec<Cold>,
    warm_webhook: Throughput,
    warm_floor: Throughput,
    webhook_to_floor: f64,
    decision_log_lines: usize,
    rss_idle_mib: f64,
    rss_after_warm_mib: f64,
    warm_reviews: u64,
    rss_after_distinct_mib: f64,
    distinct_images: usize,
    distinct_allowed: usize,
    setup_s: f64,
    total_s: f64,
}

pub async fn run(settings: Settings, floor_exe: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let lab = Lab::start().await?;
    let certs = lab.certs("certs")?;
    let ca = certs.join("ca.crt");
    let policy = lab.write_policy(&lab.policy_text(""))?;
    say(&settings, "pushing and signing the test images");
    let (legacy, _) = lab.push("team/legacy", "v1", Some(Format::Legacy)).await?;
    let (bundle, _) = lab.push("team/bundle", "v1", Some(Format::Bundle)).await?;
    let (by_digest, digest) = lab.push("team/digest", "v1", Some(Format::Legacy)).await?;
    let by_digest = format!(
        "{}@{digest}",
        by_digest
            .rsplit_once(':')
            .map_or(by_digest.as_str(), |(repo, _)| repo)
    );
    let mut three = Vec::new();
    for name in ["a", "b", "c"] {
        three.push(
            lab.push(&format!("team/pod-{name}"), "v1", Some(Format::Legacy))
                .await?
                .0,
        );
    }
    let distinct = lab.push_many("team/many", settings.distinct).await?;
    let setup = started.elapsed();

    // Cold: a fresh webhook per review, the registry `delay` away.
    lab.proxy.set_faults(Faults {
        delay: settings.delay,
        ..Faults::default()
    });
    let three_refs: Vec<&str> = three.iter().map(String::as_str).collect();
    let cases: [(&'static str, Vec<&str>); 4] = [
        ("legacy-signed tag", vec![legacy.as_str()]),
        ("bundle-signed tag", vec![bundle.as_str()]),
        ("digest reference", vec![by_digest.as_str()]),
        ("pod of 3 tags", three_refs.clone()),
    ];
    let mut cold = Vec::new();
    for (case, images) in &cases {
        say(&settings, &format!("cold: {case}"));
        cold.push(cold_case(&lab, &policy, &certs, &settings, case, images).await?);
    }
    lab.proxy.set_faults(Faults::default());

    // Warm: one webhook, the 3-container Pod's verdicts cached.
    say(&settings, "warm: webhook");
    let log = lab.dir.path().join("warm.log");
    let served = Served::start(&policy, &certs, &[], &log)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = proc::rss_mib(served.pid())?;
    let body = Bytes::from(serde_json::to_vec(&review(
        "warm",
        "apps",
        &pod("apps", &three_refs),
    ))?);
    let client = load::client(served.admission, &[&ca], true, Duration::from_secs(30))?;
    let first = client
        .post(load::mutate_url(served.admission))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?
        .bytes()
        .await?;
    let answer: Value = serde_json::from_slice(&first).context("the webhook's first answer")?;
    if answer["response"]["allowed"] != true {
        bail!(
            "the warm Pod was not allowed: {answer}\n{}",
            tail(&served.log_text())
        );
    }
    let fill = load::closed_loop(
        served.admission,
        &[&ca],
        settings.connections,
        body.clone(),
        ALLOWED,
        Until::Count(settings.warm_reviews),
    )
    .await?;
    check_errors("warm fill", &fill)?;
    let rss_after_warm = proc::rss_mib(served.pid())?;
    let ticks = proc::clock_ticks();
    let cpu_before = proc::cpu_seconds(served.pid(), ticks)?;
    let warm = load::closed_loop(
        served.admission,
        &[&ca],
        settings.connections,
        body.clone(),
        ALLOWED,
        Until::Elapsed(settings.duration),
    )
    .await?;
    let cpu = proc::cpu_seconds(served.pid(), ticks)? - cpu_before;
    let warm_webhook = throughput(&warm, cpu);
    // The decision log was on: one JSON line per review.
    let decision_log_lines = served.log_text().lines().count();

    // The floor, answering the webhook's own answer, in the same run.
    say(&settings, "warm: floor server");
    let answer_file = lab.dir.path().join("answer.json");
    std::fs::write(&answer_file, &first)?;
    let (floor, floor_addr) = start_floor(floor_exe, &certs, &answer_file)?;
    let floor_guard = KillOnDrop(floor);
    let ticks_before = proc::cpu_seconds(floor_guard.0.id(), ticks)?;
    let floor_run = load::closed_loop(
        floor_addr,
        &[&ca],
        settings.connections,
        body.clone(),
        ALLOWED,
        Until::Elapsed(settings.duration),
    )
    .await?;
    let floor_cpu = proc::cpu_seconds(floor_guard.0.id(), ticks)? - ticks_before;
    drop(floor_guard);
    let warm_floor = throughput(&floor_run, floor_cpu);

    // Distinct images: each new to the webhook, each verified and cached.
    say(&settings, "rss: distinct images");
    let bodies: Vec<Bytes> = distinct
        .iter()
        .enumerate()
        .map(|(n, image)| {
            serde_json::to_vec(&review(&format!("d{n}"), "apps", &pod("apps", &[image])))
                .map(Bytes::from)
        })
        .collect::<Result<_, _>>()?;
    let distinct_allowed = load::each_once(
        served.admission,
        &[&ca],
        settings.connections,
        bodies,
        ALLOWED,
    )
    .await?;
    let rss_after_distinct = proc::rss_mib(served.pid())?;

    let report = Report {
        binary: imgate_tests::imgate_bin().display().to_string(),
        delay_ms: settings.delay.as_millis() as u64,
        connections: settings.connections,
        duration_s: settings.duration.as_secs_f64(),
        cold,
        webhook_to_floor: warm_webhook.per_second / warm_floor.per_second.max(1e-9),
        warm_webhook,
        warm_floor,
        decision_log_lines,
        rss_idle_mib: rss_idle,
        rss_after_warm_mib: rss_after_warm,
        warm_reviews: settings.warm_reviews + 1,
        rss_after_distinct_mib: rss_after_distinct,
        distinct_images: distinct.len(),
        distinct_allowed,
        setup_s: setup.as_secs_f64(),
        total_s: started.elapsed().as_secs_f64(),
    };
    if settings.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, settings.trace);
    }
    Ok(())
}

/// What an allowed answer contains (the check costs the load generator little).
const ALLOWED: &str = "\"allowed\":true";

fn say(settings: &Settings, text: &str) {
    if !settings.json {
        eprintln!("imgate-perf: {text}");
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn check_errors(phase: &str, outcome: &load::Outcome) -> anyhow::Result<()> {
    if outcome.errors > 0 {
        bail!(
            "{phase}: {} of {} reviews failed; first: {}",
            outcome.errors,
            outcome.errors as usize + outcome.latencies.len(),
            outcome.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

fn throughput(outcome: &load::Outcome, cpu_seconds: f64) -> Throughput {
    let reviews = outcome.latencies.len();
    Throughput {
        reviews,
        errors: outcome.errors,
        per_second: outcome.rate(),
        p50_ms: outcome.percentile_ms(0.50),
        p99_ms: outcome.percentile_ms(0.99),
        cpu_us_per_review: cpu_seconds * 1e6 / (reviews.max(1) as f64),
    }
}

/// Reviews `images` on a fresh webhook `settings.repeats` times; the median
/// latency, with the counts of that run.
async fn cold_case(
    lab: &Lab,
    policy: &Path,
    certs: &Path,
    settings: &Settings,
    case: &'static str,
    images: &[&str],
) -> anyhow::Result<Cold> {
    let ca = certs.join("ca.crt");
    let body = serde_json::to_vec(&review("cold", "apps", &pod("apps", images)))?;
    // An excluded namespace: answered without the registry, it opens the
    // TLS connection before the clock starts.
    let opener = serde_json::to_vec(&review("open", "kube-system", &pod("kube-system", images)))?;
    let mut runs = Vec::new();
    for repeat in 0..settings.repeats.max(1) {
        let log = lab.dir.path().join(format!("cold-{repeat}.log"));
        let served = Served::start(policy, certs, &[], &log)?;
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
        lab.proxy.reset_counts();
        let sent = Instant::now();
        let answer = post(body.clone()).await?.bytes().await?;
        let latency = sent.elapsed();
        let counts = lab.proxy.counts();
        let trace = lab.proxy.log();
        let answer: Value = serde_json::from_slice(&answer)?;
        if answer["response"]["allowed"] != true {
            bail!(
                "cold {case}: not allowed: {answer}\n{}",
                tail(&served.log_text())
            );
        }
        runs.push((latency, counts, trace));
    }
    runs.sort_by_key(|(latency, _, _)| *latency);
    let (latency, counts, trace) = runs.swap_remove(runs.len() / 2);
    let delay_ms = settings.delay.as_secs_f64() * 1e3;
    let latency_ms = latency.as_secs_f64() * 1e3;
    Ok(Cold {
        case,
        images: images.len(),
        latency_ms,
        requests: counts.requests,
        round_trips: if delay_ms > 0.0 {
            (latency_ms / delay_ms).round() as u64
        } else {
            0
        },
        connections: counts.connections,
        trace,
    })
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_floor(
    exe: &Path,
    certs: &Path,
    answer: &Path,
) -> anyhow::Result<(std::process::Child, std::net::SocketAddr)> {
    use std::io::BufRead;
    let mut child = Command::new(exe)
        .arg("floor")
        .arg("--cert")
        .arg(certs.join("tls.crt"))
        .arg("--key")
        .arg(certs.join("tls.key"))
        .arg("--body")
        .arg(answer)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the floor server")?;
    let Some(stdout) = child.stdout.take() else {
        bail!("the floor server has no stdout");
    };
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Ok((child, addr)),
        None => {
            let _ = child.kill();
            bail!("the floor server said {line:?} instead of 'listening ADDR'")
        }
    }
}

fn print_table(r: &Report, trace: bool) {
    println!("imgate benchmark: {}", r.binary);
    println!(
        "setup {:.1}s, total {:.1}s; registry delay {} ms per request",
        r.setup_s, r.total_s, r.delay_ms
    );
    println!();
    println!(
        "{:<20} {:>6} {:>12} {:>9} {:>12} {:>12}",
        "cold case", "images", "latency ms", "requests", "round trips", "connections"
    );
    for c in &r.cold {
        println!(
            "{:<20} {:>6} {:>12.1} {:>9} {:>12} {:>12}",
            c.case, c.images, c.latency_ms, c.requests, c.round_trips, c.connections
        );
        if trace {
            for logged in &c.trace {
                println!(
                    "    {:>5}..{:<5} ms  {} {}",
                    logged.start_ms, logged.end_ms, logged.status, logged.request
                );
            }
        }
    }
    println!();
    println!(
        "warm, {} connections, {:.0}s each, 3-container Pod (cached):",
        r.connections, r.duration_s
    );
    println!(
        "{:<10} {:>10} {:>8} {:>10} {:>9} {:>9} {:>14}",
        "server", "reviews", "errors", "per sec", "p50 ms", "p99 ms", "CPU us/review"
    );
    for (name, t) in [("webhook", &r.warm_webhook), ("floor", &r.warm_floor)] {
        println!(
            "{:<10} {:>10} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>14.0}",
            name, t.reviews, t.errors, t.per_second, t.p50_ms, t.p99_ms, t.cpu_us_per_review
        );
    }
    println!("webhook / floor throughput: {:.2}", r.webhook_to_floor);
    println!(
        "webhook log (JSON, default level): {} lines",
        r.decision_log_lines
    );
    println!();
    println!(
        "RSS idle:                                  {:>7.1} MiB",
        r.rss_idle_mib
    );
    println!(
        "RSS after {:>6} warm reviews:             {:>7.1} MiB",
        r.warm_reviews, r.rss_after_warm_mib
    );
    println!(
        "RSS after {:>6} distinct signed images:   {:>7.1} MiB ({} allowed)",
        r.distinct_images, r.rss_after_distinct_mib, r.distinct_allowed
    );
}
