//! Admission review latency: the real webhook router and engine in-process,
//! served over plain HTTP on loopback (JSON in and out, kept-alive
//! connection; TLS is left out) against the real registry (Debian's
//! `docker-registry` on loopback), with a signed multi-arch image.
//!
//! - warm: one engine, the same Pod reviewed again and again (tag and
//!   verified-digest caches hit);
//! - warm, attested: the same under a rule that also requires a signed SLSA
//!   provenance attestation with one CEL condition (the evidence is cached,
//!   the condition runs on every review): the difference is what a cached
//!   review pays for one attestation condition;
//! - cold: a fresh engine (empty caches) for every review, so each one
//!   resolves the tag, fetches the signature and verifies it (the registry
//!   client's connection pool is shared, as in a running webhook).
//!
//! Prints p50/p99 of its own samples, then runs criterion on both.
//! `cargo bench -p imgate-tests --bench admission` (about 30 s).

use std::time::{Duration, Instant};

use criterion::Criterion;
use imgate_core::attestation;
use imgate_core::policy::Policy;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, SignOptions};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::{ImageBuilder, PushWith, Registry, Variant};
use imgate_webhook::admission::Engine;
use imgate_webhook::metrics::Metrics;
use imgate_webhook::server::{admission_router, AppState};
use serde_json::{json, Value};

struct Setup {
    _registry: Registry,
    _dir: tempfile::TempDir,
    policy_path: std::path::PathBuf,
    /// The same rule, also requiring a provenance attestation and a condition.
    attested_policy_path: std::path::PathBuf,
    client: RegistryClient,
    body: Vec<u8>,
}

async fn setup() -> anyhow::Result<Setup> {
    let registry = Registry::start(Variant::Http).await?;
    let pushed = ImageBuilder::new("bench-admission")
        .index()
        .push(&registry, "team/app", "v1", PushWith::Http)
        .await?;
    let client = RegistryClient::new(registry.client_config())?;
    let key = SigningKey::generate();
    let image = ImageRef::parse(&pushed.pinned())?;
    signature::sign(&client, &image, &key, &SignOptions::default()).await?;
    let provenance = json!({"buildDefinition": {"externalParameters": {"workflow": {
        "repository": "https://github.com/example/app", "ref": "refs/heads/main"}}}});
    attestation::attest(
        &client,
        &image,
        &attestation::KeySigner(&key),
        &attestation::AttestOptions {
            predicate_type: "slsaprovenance1".into(),
            predicate: serde_json::to_vec(&provenance)?,
            format: signature::Format::Legacy,
        },
    )
    .await?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("cosign.pub"), key.public_key().to_pem())?;
    let host = registry.host();
    let policy = format!(
        "mode: enforce\ntrustedRegistries: [\"{host}/team/**\"]\n\
         registries:\n  \"{host}\": {{http: true}}\n\
         rules:\n  - name: team\n    images: [\"{host}/team/**\"]\n    keys: [{{file: cosign.pub}}]\n"
    );
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, &policy)?;
    let attested_policy_path = dir.path().join("attested.yaml");
    std::fs::write(
        &attested_policy_path,
        format!(
            "{policy}    attestations:\n      - name: provenance\n        predicateType: slsaprovenance1\n        conditions:\n          - predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/example/app'\n"
        ),
    )?;
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "apps",
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "apps"},
                "spec": {"containers": [{"name": "app", "image": pushed.reference}]}
            }
        }
    }))?;
    Ok(Setup {
        _registry: registry,
        _dir: dir,
        policy_path,
        attested_policy_path,
        client,
        body,
    })
}

/// A webhook (fresh engine, empty caches) on a loopback port; returns its
/// `/mutate` URL and the server task.
async fn webhook(setup: &Setup) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    webhook_with(setup, &setup.policy_path).await
}

/// The same under the policy at `policy_path`.
async fn webhook_with(
    setup: &Setup,
    policy_path: &std::path::Path,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let policy = Policy::load(policy_path)?;
    let metrics = Metrics::new();
    let engine = Engine::builder(policy, setup.client.clone())
        .metrics(metrics.clone())
        .build();
    let router = admission_router(AppState::new(engine, metrics));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mutate", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((url, task))
}

/// One review; checks it was allowed and pinned.
async fn review(http: &reqwest::Client, url: &str, body: &[u8]) -> anyhow::Result<()> {
    let answer: Value = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await?
        .json()
        .await?;
    if answer["response"]["allowed"] != true || answer["response"]["patch"].is_null() {
        anyhow::bail!("review not allowed and pinned: {answer}");
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "admission {name}: n={} p50={:.3}ms p99={:.3}ms max={:.3}ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// This process's CPU time so far (user + system), from /proc.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces).
            let rest = stat.rsplit_once(')')?.1.to_string();
            let fields: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        })
        .unwrap_or(0);
    // Linux reports clock ticks of 1/100 s.
    Duration::from_millis(ticks * 10)
}

/// 2,000 warm reviews under `policy_path`: latency percentiles and the CPU
/// per review of this process (client and server together).
async fn warm_samples(
    setup: &Setup,
    http: &reqwest::Client,
    name: &str,
    policy_path: &std::path::Path,
) -> anyhow::Result<()> {
    let (warm, task) = webhook_with(setup, policy_path).await?;
    review(http, &warm, &setup.body).await?;
    let mut durations = Vec::new();
    let cpu = cpu_time();
    for _ in 0..2000 {
        let started = Instant::now();
        review(http, &warm, &setup.body).await?;
        durations.push(started.elapsed());
    }
    let per_review = (cpu_time() - cpu) / 2000;
    task.abort();
    report(name, durations);
    println!(
        "admission {name}: CPU {:.1}us per review (in-process client and server)",
        per_review.as_secs_f64() * 1e6
    );
    Ok(())
}

async fn samples(setup: &Setup, http: &reqwest::Client) -> anyhow::Result<()> {
    warm_samples(setup, http, "warm cache", &setup.policy_path).await?;
    warm_samples(
        setup,
        http,
        "warm cache, one attestation condition",
        &setup.attested_policy_path,
    )
    .await?;

    let mut durations = Vec::new();
    for _ in 0..100 {
        let (cold, task) = webhook(setup).await?;
        let started = Instant::now();
        review(http, &cold, &setup.body).await?;
        durations.push(started.elapsed());
        task.abort();
    }
    report("cold cache", durations);
    Ok(())
}

fn main() {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("admission bench: no runtime: {err}");
            return;
        }
    };
    let setup = match runtime.block_on(setup()) {
        Ok(setup) => setup,
        Err(err) => {
            eprintln!("admission bench: setup failed (is docker-registry installed?): {err:#}");
            return;
        }
    };
    let http = reqwest::Client::new();
    if let Err(err) = runtime.block_on(samples(&setup, &http)) {
        eprintln!("admission bench: {err:#}");
        return;
    }

    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let (warm, _task) = match runtime.block_on(webhook(&setup)) {
        Ok(served) => served,
        Err(err) => {
            eprintln!("admission bench: {err:#}");
            return;
        }
    };
    criterion.bench_function("admission/warm", |b| {
        b.to_async(&runtime).iter(|| async {
            if let Err(err) = review(&http, &warm, &setup.body).await {
                eprintln!("{err:#}");
            }
        })
    });
    let (attested, _attested_task) =
        match runtime.block_on(webhook_with(&setup, &setup.attested_policy_path)) {
            Ok(served) => served,
            Err(err) => {
                eprintln!("admission bench: {err:#}");
                return;
            }
        };
    criterion.bench_function("admission/warm-attested", |b| {
        b.to_async(&runtime).iter(|| async {
            if let Err(err) = review(&http, &attested, &setup.body).await {
                eprintln!("{err:#}");
            }
        })
    });
    // Criterion times the whole iteration, so here cold includes starting
    // the (tiny) server; the p50/p99 printed above exclude it.
    criterion.bench_function("admission/cold", |b| {
        b.to_async(&runtime).iter(|| async {
            match webhook(&setup).await {
                Ok((cold, task)) => {
                    if let Err(err) = review(&http, &cold, &setup.body).await {
                        eprintln!("{err:#}");
                    }
                    task.abort();
                }
                Err(err) => eprintln!("{err:#}"),
            }
        })
    });
    criterion.final_summary();
}
