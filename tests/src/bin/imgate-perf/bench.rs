//! `imgate-perf bench`: cold admission latency and registry round trips
//! behind a delay proxy, for a new image on a running webhook (over TLS with
//! HTTP/2, and over plain HTTP/1.1 for comparison) and for a fresh webhook's
//! or `imgate verify`'s first contact with the registry, warm throughput
//! against the floor server,
//! CPU per review, and RSS (idle, after 10,000 warm reviews, after 1,000
//! distinct signed images).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use imgate_core::signature::Format;
use imgate_tests::{Faults, Front};
use serde::Serialize;
use serde_json::Value;

use crate::cold::{self, Case, Cold, Expect, Setting};
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
    /// A new image on a running webhook (registry connection open), over
    /// TLS, HTTP/2 by ALPN (what public registries serve).
    cold: Vec<Cold>,
    /// The same over plain HTTP/1.1.
    cold_http1: Vec<Cold>,
    /// A fresh webhook's first review and `imgate verify`, over TLS; the
    /// last CLI row over plain HTTP/1.1.
    first_contact: Vec<Cold>,
    /// `imgate --version`'s wall time (ms), the floor under the CLI cases.
    process_start_ms: f64,
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
    let lab = Lab::start(Front::Tls).await?;
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
    let (unsigned, unsigned_digest) = lab.push("team/unsigned", "v1", None).await?;
    // Reviewed before each running-webhook case, to open the connection.
    let (primer, _) = lab.push("team/primer", "v1", Some(Format::Legacy)).await?;
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

    // Cold: a fresh webhook per review (primed with another image, or not),
    // or a CLI process, the registry `delay` away, through each front.
    let delayed = Faults {
        delay: settings.delay,
        ..Faults::default()
    };
    let Some(plain) = lab.plain.as_ref() else {
        bail!("the lab has no plain-HTTP front");
    };
    for front in [&lab.proxy, plain] {
        front.set_faults(delayed);
    }
    let one = |name, image: &String| Case {
        name,
        images: vec![image.clone()],
        expect: Expect::Allowed,
    };
    let unsigned_case = Case {
        name: "unsigned tag",
        images: vec![unsigned.clone()],
        expect: Expect::Denied(format!("no signatures found for {unsigned_digest}")),
    };
    let pod_case = Case {
        name: "pod of 3 tags",
        images: three.clone(),
        expect: Expect::Allowed,
    };
    let tls_cases = [
        one("legacy-signed tag", &legacy),
        one("bundle-signed tag", &bundle),
        one("digest reference", &by_digest),
        pod_case.clone(),
        unsigned_case.clone(),
    ];
    let tls = Setting {
        lab: &lab,
        front: &lab.proxy,
        policy: &policy,
        certs: &certs,
        repeats: settings.repeats,
        delay: settings.delay,
        primer: Some(&primer),
    };
    let mut cold = Vec::new();
    for case in &tls_cases {
        say(&settings, &format!("cold over TLS (h2): {}", case.name));
        cold.push(cold::review_case(&tls, case).await?);
    }
    // The plain-HTTP/1.1 comparison: the cases where the number of
    // connections can differ.
    let primer_http1 = lab.via(plain, &primer);
    let http1 = Setting {
        front: plain,
        primer: Some(&primer_http1),
        ..tls
    };
    let via = |case: &Case| Case {
        images: case.images.iter().map(|i| lab.via(plain, i)).collect(),
        ..case.clone()
    };
    let mut cold_http1 = Vec::new();
    for case in [&tls_cases[0], &tls_cases[1], &pod_case, &unsigned_case] {
        say(&settings, &format!("cold over HTTP/1.1: {}", case.name));
        cold_http1.push(cold::review_case(&http1, &via(case)).await?);
    }
    // First contact: the same cases with no primer, and the CLI, which is
    // always a new process.
    let first = Setting {
        primer: None,
        ..tls
    };
    let mut first_contact = Vec::new();
    for case in &tls_cases {
        say(
            &settings,
            &format!("first contact over TLS (h2): {}", case.name),
        );
        first_contact.push(cold::review_case(&first, case).await?);
    }
    for (name, image) in [
        ("cli: legacy-signed tag", &legacy),
        ("cli: digest reference", &by_digest),
    ] {
        say(&settings, &format!("first contact over TLS (h2): {name}"));
        first_contact.push(cold::verify_case(&first, name, image).await?);
    }
    say(
        &settings,
        "first contact over HTTP/1.1: cli: legacy-signed tag",
    );
    first_contact
        .push(cold::verify_case(&http1, "cli: legacy-signed tag", &lab.via(plain, &legacy)).await?);
    let process_start_ms = cold::process_start_ms(settings.repeats).await?;
    for front in [&lab.proxy, plain] {
        front.set_faults(Faults::default());
    }

    // Warm: one webhook, the 3-container Pod's verdicts cached.
    let three_refs: Vec<&str> = three.iter().map(String::as_str).collect();
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
            cold::tail(&served.log_text())
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
        cold_http1,
        first_contact,
        process_start_ms,
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
        "cold: a new image on a running webhook (empty caches, registry \
         connection open), over TLS (HTTP/2 by ALPN, as public registries serve):"
    );
    print_cold(&r.cold, trace);
    println!();
    println!("cold: a new image on a running webhook, over plain HTTP/1.1 (for comparison):");
    print_cold(&r.cold_http1, trace);
    println!();
    println!(
        "first contact: a fresh webhook's first review (caches empty, no registry \
         connection); the reviews over TLS only; each CLI row is a new process and \
         includes starting it ({:.1} ms for imgate --version):",
        r.process_start_ms
    );
    print_cold(&r.first_contact, trace);
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

fn print_cold(cases: &[Cold], trace: bool) {
    println!(
        "{:<24} {:<8} {:>6} {:>11} {:>9} {:>12} {:>8} {:>12} {:>5} {:>5}",
        "case",
        "front",
        "images",
        "latency ms",
        "requests",
        "round trips",
        "in turn",
        "connections",
        "h2",
        "used"
    );
    for c in cases {
        // The median run's count, and the range over the repeats if it varied.
        let connections = if c.connections_min == c.connections_max {
            c.connections.to_string()
        } else {
            format!(
                "{} ({}-{})",
                c.connections, c.connections_min, c.connections_max
            )
        };
        println!(
            "{:<24} {:<8} {:>6} {:>11.1} {:>9} {:>12} {:>8} {:>12} {:>5} {:>5}",
            c.case,
            c.front,
            c.images,
            c.latency_ms,
            c.requests,
            c.round_trips,
            c.in_turn,
            connections,
            c.h2_connections,
            c.connections_used
        );
        if trace {
            // Connections numbered from 1 within the case.
            let mut seen: Vec<u64> = Vec::new();
            for logged in &c.trace {
                let number = match seen.iter().position(|id| *id == logged.connection) {
                    Some(at) => at + 1,
                    None => {
                        seen.push(logged.connection);
                        seen.len()
                    }
                };
                println!(
                    "    {:>5}..{:<5} ms  conn {number} {:<8} {} {}",
                    logged.start_ms, logged.end_ms, logged.protocol, logged.status, logged.request
                );
            }
        }
    }
}
