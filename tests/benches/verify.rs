//! How long one `verify` of one image takes against the real registry with a
//! warm client (connections pooled), and how many registry requests it
//! makes, for each signature format.
//!
//! `cargo bench -p imgate-tests --bench verify` (needs `docker-registry`).

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Format, Requirements, SignOptions};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::{CountingProxy, ImageBuilder, PushWith, Registry, Variant};

/// One image signed in `format`, reached through a counting proxy.
struct Setup {
    client: RegistryClient,
    image: ImageRef,
    req: Requirements,
}

async fn setup(
    registry: &Registry,
    proxy: &CountingProxy,
    format: Format,
) -> anyhow::Result<Setup> {
    let label = format!("bench-{format}");
    let pushed = ImageBuilder::new(&label)
        .image()
        .push(registry, "bench/app", &label, PushWith::Http)
        .await?;
    let client = RegistryClient::new(proxy.client_config())?;
    let image = ImageRef::parse(&format!("{}/bench/app@{}", proxy.host(), pushed.digest))?;
    let key = SigningKey::generate();
    let opts = SignOptions {
        format,
        annotations: BTreeMap::from([("env".to_string(), "prod".to_string())]),
    };
    signature::sign(&client, &image, &key, &opts).await?;
    let req = Requirements {
        keys: vec![key.public_key()],
        annotations: opts.annotations.clone(),
        match_repository: true,
        ..Default::default()
    };
    Ok(Setup { client, image, req })
}

fn bench_verify(c: &mut Criterion) {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("verify bench: no runtime: {err}");
            return;
        }
    };
    let started = runtime.block_on(async {
        let registry = Registry::start(Variant::Http).await?;
        let proxy = CountingProxy::start(&registry).await?;
        anyhow::Ok((registry, proxy))
    });
    let (registry, proxy) = match started {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!("verify bench skipped: {err:#}");
            return;
        }
    };
    let mut group = c.benchmark_group("verify");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for format in [Format::Legacy, Format::Bundle] {
        let setup = match runtime.block_on(setup(&registry, &proxy, format)) {
            Ok(s) => s,
            Err(err) => {
                eprintln!("verify bench ({format}) skipped: {err:#}");
                continue;
            }
        };
        // One verify to warm the connection (and any token), then count one more.
        let verify_once = || async {
            let verdict = signature::verify(&setup.client, &setup.image, &setup.req).await;
            assert!(
                matches!(verdict, Ok(ref v) if v.is_verified()),
                "bench image must verify: {verdict:?}"
            );
        };
        runtime.block_on(verify_once());
        proxy.reset();
        let before = setup.client.request_count();
        runtime.block_on(verify_once());
        let by_client = setup.client.request_count() - before;
        println!(
            "verify ({format}): {by_client} registry requests per verification (proxy saw {}: {:?})",
            proxy.count(),
            proxy.requests()
        );
        group.bench_function(format!("{format} signature, warm client"), |b| {
            b.to_async(&runtime).iter(verify_once)
        });
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
