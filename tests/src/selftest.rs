//! Self-tests of the harness against the real registry and skopeo, with no
//! imgate code involved: every variant starts and enforces its auth, images
//! pushed one way read back identically the other way, the proxy counts and
//! misbehaves on demand.

use std::time::{Duration, Instant};

use crate::faultproxy::{FaultProxy, Faults};
use crate::image::sha256_digest;
use crate::proxy::{CountingProxy, ProxyMode};
use crate::push::{PushWith, RawClient};
use crate::registry::{Registry, Variant};
use crate::skopeo::{
    skopeo_inspect_digest, skopeo_inspect_raw, skopeo_platform_digests, skopeo_reported_digest,
};
use crate::ImageBuilder;

#[tokio::test(flavor = "multi_thread")]
async fn every_variant_starts_fast_in_parallel_and_enforces_auth() {
    let started = Instant::now();
    let registries = futures::future::join_all(Variant::ALL.map(Registry::start)).await;
    let elapsed = started.elapsed();
    let registries: Vec<Registry> = registries.into_iter().map(|r| r.unwrap()).collect();
    assert!(
        elapsed < Duration::from_secs(5),
        "4 registries took {elapsed:?}"
    );
    let mut hosts: Vec<&str> = registries.iter().map(|r| r.host()).collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 4, "each registry has its own port");
    for registry in &registries {
        assert!(registry.host().starts_with("127.0.0.1:"));
        let status = registry
            .http_client()
            .unwrap()
            .get(registry.url("/v2/"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let expected = if registry.variant.has_auth() {
            401
        } else {
            200
        };
        assert_eq!(status, expected, "{:?}", registry.variant);
        assert_eq!(registry.ca_file().is_some(), registry.variant.is_tls());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_dies_with_its_handle() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let url = registry.url("/v2/");
    drop(registry);
    let client = reqwest::Client::new();
    assert!(
        client.get(&url).send().await.is_err(),
        "still serving {url}"
    );
}

async fn round_trip(variant: Variant) {
    let registry = Registry::start(variant).await.unwrap();
    let raw = RawClient::new(&registry).unwrap();
    let label = format!("selftest-{variant:?}");

    // An index pushed by skopeo reads back byte for byte with reqwest.
    let index = ImageBuilder::new(&label).index();
    let pushed = index
        .push(&registry, "self/index", "v1", PushWith::Skopeo)
        .await
        .unwrap();
    assert_eq!(
        pushed.reference,
        format!("{}/self/index:v1", registry.host())
    );
    let manifest = raw.get_manifest("self/index", "v1").await.unwrap();
    assert_eq!(sha256_digest(&manifest.bytes), pushed.digest);
    assert_eq!(
        manifest.header_digest.as_deref(),
        Some(pushed.digest.as_str())
    );
    assert_eq!(manifest.media_type, index.top.media_type);
    let platforms = skopeo_platform_digests(&registry, &pushed.reference)
        .await
        .unwrap();
    assert_eq!(platforms.len(), 2);
    for ((platform, arch), (seen_platform, seen_digest)) in index
        .platforms
        .iter()
        .zip(["amd64", "arm64"])
        .zip(&platforms)
    {
        assert_eq!(seen_platform, &format!("linux/{arch}"));
        assert_eq!(seen_digest, &platform.manifest.digest);
        let config = &index.blobs[if arch == "amd64" { 0 } else { 2 }];
        let blob = raw.get_blob("self/index", &config.digest).await.unwrap();
        assert!(String::from_utf8(blob).unwrap().contains(arch));
    }
    assert_eq!(
        skopeo_inspect_digest(&registry, &pushed.reference)
            .await
            .unwrap(),
        pushed.digest
    );
    assert_eq!(
        skopeo_reported_digest(&registry, &pushed.reference)
            .await
            .unwrap(),
        pushed.digest
    );

    // A single image pushed with reqwest reads back with skopeo.
    let image = ImageBuilder::new(&label).layers(2).image();
    let pushed = image
        .push(&registry, "self/image", "v1", PushWith::Http)
        .await
        .unwrap();
    assert!(pushed.platform_digests.is_empty());
    let raw_bytes = skopeo_inspect_raw(&registry, &pushed.reference)
        .await
        .unwrap();
    assert_eq!(raw_bytes, image.top.bytes);
    assert_eq!(raw.list_tags("self/image").await.unwrap(), vec!["v1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_round_trip() {
    round_trip(Variant::Http).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_round_trip() {
    round_trip(Variant::Tls).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_round_trip() {
    round_trip(Variant::BasicAuth).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_round_trip() {
    round_trip(Variant::Token).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_media_types_push_both_ways() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let index = ImageBuilder::new("docker").docker_media_types(true).index();
    let pushed = index
        .push(&registry, "self/docker", "v1", PushWith::Http)
        .await
        .unwrap();
    let raw = RawClient::new(&registry).unwrap();
    let manifest = raw.get_manifest("self/docker", "v1").await.unwrap();
    assert_eq!(
        manifest.media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(
        skopeo_inspect_digest(&registry, &pushed.reference)
            .await
            .unwrap(),
        pushed.digest
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_variants_refuse_wrong_and_missing_credentials() {
    for variant in [Variant::BasicAuth, Variant::Token] {
        let registry = Registry::start(variant).await.unwrap();
        ImageBuilder::new("auth")
            .image()
            .push(&registry, "self/auth", "v1", PushWith::Http)
            .await
            .unwrap();
        let right = RawClient::new(&registry).unwrap();
        assert!(right.get_manifest("self/auth", "v1").await.is_ok());
        let wrong = RawClient::new(&registry)
            .unwrap()
            .with_credentials(Some((crate::registry::USERNAME, "wrong")));
        let err = wrong.get_manifest("self/auth", "v1").await.unwrap_err();
        assert!(format!("{err:#}").contains("401"), "{variant:?}: {err:#}");
        let anonymous = RawClient::new(&registry).unwrap().with_credentials(None);
        assert!(
            anonymous.get_manifest("self/auth", "v1").await.is_err(),
            "{variant:?} served anonymously"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_server_issues_tokens_the_registry_accepts() {
    let registry = Registry::start(Variant::Token).await.unwrap();
    let tokens = registry.token_server().unwrap();
    assert_eq!(tokens.requests(), 0);
    ImageBuilder::new("minted")
        .image()
        .push(&registry, "self/minted", "v1", PushWith::Http)
        .await
        .unwrap();
    assert!(tokens.issued() >= 1);
    // A token minted for another repository does not open this one.
    let client = registry.http_client().unwrap();
    let get = |token: String| {
        client
            .get(registry.url("/v2/self/minted/manifests/v1"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .bearer_auth(token)
            .send()
    };
    let ok = tokens
        .mint("someone", &[("self/minted", &["pull"])])
        .unwrap();
    assert_eq!(get(ok).await.unwrap().status(), 200);
    let other = tokens
        .mint("someone", &[("self/other", &["pull"])])
        .unwrap();
    assert_eq!(get(other).await.unwrap().status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_counts_and_misbehaves_on_demand() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let proxy = CountingProxy::start(&registry).await.unwrap();
    let raw = RawClient::new(&registry).unwrap().with_base(&proxy.url());
    // Pushing through the proxy works: upload Locations point back at it.
    let image = ImageBuilder::new("proxy").image();
    for blob in &image.blobs {
        raw.put_blob("self/proxy", blob).await.unwrap();
    }
    raw.put_manifest("self/proxy", "v1", &image.top.media_type, &image.top.bytes)
        .await
        .unwrap();
    assert_eq!(proxy.count() as u64, raw.request_count());
    assert!(proxy
        .requests()
        .contains(&"PUT /v2/self/proxy/manifests/v1".to_string()));

    proxy.reset();
    raw.get_manifest("self/proxy", "v1").await.unwrap();
    assert_eq!(proxy.requests(), vec!["GET /v2/self/proxy/manifests/v1"]);

    proxy.set_mode(ProxyMode::Fail500);
    let err = raw.get_manifest("self/proxy", "v1").await.unwrap_err();
    assert!(format!("{err:#}").contains("500"), "{err:#}");

    proxy.set_mode(ProxyMode::Hang);
    let url = format!("{}/v2/self/proxy/manifests/v1", proxy.url());
    let hung = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    // A request hanging when the mode changes is released into the new mode.
    let pending = tokio::spawn(
        reqwest::Client::new()
            .get(url)
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    proxy.set_mode(ProxyMode::Pass);
    let released = pending.await.unwrap().unwrap();
    assert_eq!(released.status(), 200);
    assert_eq!(proxy.count(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_proxy_counts_connections_delays_and_injects_faults() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let proxy = FaultProxy::start(&registry.url(""), Faults::default()).unwrap();
    let raw = RawClient::new(&registry).unwrap().with_base(&proxy.url());
    // Pushing through it works: `Host` goes along, so upload Locations point back.
    let image = ImageBuilder::new("fault-proxy").image();
    for blob in &image.blobs {
        raw.put_blob("self/faults", blob).await.unwrap();
    }
    raw.put_manifest("self/faults", "v1", &image.top.media_type, &image.top.bytes)
        .await
        .unwrap();
    assert_eq!(proxy.counts().requests, raw.request_count());

    // One kept-alive client: three requests, one connection, each delayed.
    proxy.reset_counts();
    proxy.set_faults(Faults {
        delay: Duration::from_millis(150),
        ..Faults::default()
    });
    let client = reqwest::Client::new();
    let url = format!("{}/v2/self/faults/manifests/v1", proxy.url());
    let accept = ("accept", image.top.media_type.as_str());
    let started = Instant::now();
    for _ in 0..3 {
        let answer = client
            .get(&url)
            .header(accept.0, accept.1)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.bytes().await.unwrap();
        // The client hands a connection back to its pool on a task of its
        // own after the body ends; let it, or the next request may open a
        // second connection on a busy machine.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    let counts = proxy.counts();
    assert_eq!((counts.requests, counts.connections), (3, 1), "{counts:?}");
    let log = proxy.log();
    assert_eq!(log.len(), 3);
    assert!(log
        .iter()
        .all(|l| l.status == 200 && l.request == "GET /v2/self/faults/manifests/v1"));
    assert!(log[2].end_ms >= 450, "{log:?}");

    // Every request answered 503, then every connection dropped unanswered.
    proxy.set_faults(Faults {
        error_per_mille: 1000,
        ..Faults::default()
    });
    let answer = client.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 503);
    proxy.set_faults(Faults {
        reset_per_mille: 1000,
        ..Faults::default()
    });
    assert!(client.get(&url).send().await.is_err());
    let counts = proxy.counts();
    // (A client may retry a request whose connection closed: at least one.)
    assert_eq!(counts.errors, 1, "{counts:?}");
    assert!(counts.resets >= 1, "{counts:?}");
    assert_eq!(proxy.log().last().map(|l| l.status), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_proxy_in_front_of_a_token_registry() {
    let registry = Registry::start(Variant::Token).await.unwrap();
    let proxy = CountingProxy::start(&registry).await.unwrap();
    assert!(proxy.url().starts_with("https://"));
    let raw = RawClient::new(&registry).unwrap().with_base(&proxy.url());
    let image = ImageBuilder::new("tls-proxy").image();
    for blob in &image.blobs {
        raw.put_blob("self/tls", blob).await.unwrap();
    }
    let digest = raw
        .put_manifest("self/tls", "v1", &image.top.media_type, &image.top.bytes)
        .await
        .unwrap();
    assert_eq!(digest, image.top.digest);
    assert!(proxy.count() >= 4);
    assert!(proxy.cli_args().contains(&"--registry-ca".to_string()));
}

#[test]
fn block_on_works_outside_any_runtime() {
    let registry = crate::block_on(Registry::start(Variant::Http)).unwrap();
    assert!(registry.host().starts_with("127.0.0.1:"));
}

#[test]
fn cli_and_skopeo_flags_match_the_variant() {
    crate::block_on(async {
        let http = Registry::start(Variant::Http).await.unwrap();
        assert_eq!(http.cli_args()[..2], ["--allow-http-registry", http.host()]);
        assert_eq!(http.skopeo_args(), vec!["--tls-verify=false"]);
        let config = http.client_config();
        assert!(config.registries[http.host()].http);
        assert!(!config.use_docker_config);

        let basic = Registry::start(Variant::BasicAuth).await.unwrap();
        let args = basic.cli_args();
        assert_eq!(args[0], "--registry-ca");
        let docker: serde_json::Value =
            serde_json::from_slice(&std::fs::read(basic.docker_config()).unwrap()).unwrap();
        assert!(docker["auths"][basic.host()]["auth"].is_string());
        assert!(basic
            .skopeo_dest_args()
            .contains(&"--dest-creds".to_string()));
        assert_eq!(
            basic.client_config().credentials[basic.host()].username,
            crate::registry::USERNAME
        );
    });
}
