//! Scenarios: resolve. The real `imgate resolve` against the real registry in
//! every variant (plain HTTP, TLS, basic auth, bearer tokens) agrees with
//! skopeo on the digest of a single image and of a multi-arch index, and bad
//! input (wrong password, malformed reference, unknown or unreachable
//! registry, unreadable docker config) ends with one clear stderr line and
//! exit 2.

// Tests may unwrap and panic (STYLE.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;
use std::time::{Duration, Instant};

use imgate_tests::registry::free_port;
use imgate_tests::{
    run_imgate, skopeo_inspect_digest, skopeo_platform_digests, skopeo_reported_digest, BuiltImage,
    CountingProxy, ImageBuilder, ProxyMode, PushWith, Registry, Variant,
};
use rstest::rstest;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the binary off the async runtime's worker thread.
async fn imgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || run_imgate(&args, &[], None))
        .await
        .unwrap()
        .unwrap()
}

fn resolve_args(registry: &Registry, extra: &[&str], images: &[&str]) -> Vec<String> {
    let mut args = vec!["resolve".to_string()];
    args.extend(registry.cli_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(images.iter().map(|s| s.to_string()));
    args
}

/// Asserts exit 2 with exactly one non-empty line on stderr (no panic, no
/// backtrace) and nothing on stdout; returns that line.
fn assert_one_line_error(output: &Output, what: &str) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{what}: exit {:?}, stderr: {stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got:\n{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "{what}: stdout: {}",
        text(&output.stdout)
    );
    lines[0].to_string()
}

/// The one entry of `imgate resolve --output json` for one image.
fn json_entry(output: &Output) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", text(&output.stdout)));
    match value {
        serde_json::Value::Array(mut entries) => {
            assert_eq!(entries.len(), 1, "{entries:?}");
            entries.remove(0)
        }
        other => other,
    }
}

#[rstest]
#[case::http(Variant::Http)]
#[case::tls(Variant::Tls)]
#[case::basic_auth(Variant::BasicAuth)]
#[case::token(Variant::Token)]
#[tokio::test(flavor = "multi_thread")]
async fn resolve_agrees_with_skopeo(#[case] variant: Variant) {
    let registry = Registry::start(variant).await.unwrap();
    let label = format!("resolve-{variant:?}");
    // One push each way, so neither pusher alone decides what is stored.
    let single = ImageBuilder::new(&label)
        .image()
        .push(&registry, "team/single", "v1", PushWith::Skopeo)
        .await
        .unwrap();
    let index = ImageBuilder::new(&label)
        .index()
        .push(&registry, "team/multi", "v2", PushWith::Http)
        .await
        .unwrap();

    let single_digest = skopeo_inspect_digest(&registry, &single.reference)
        .await
        .unwrap();
    let index_digest = skopeo_inspect_digest(&registry, &index.reference)
        .await
        .unwrap();
    // skopeo's own report of the tag agrees with the hash of its raw bytes.
    assert_eq!(
        skopeo_reported_digest(&registry, &index.reference)
            .await
            .unwrap(),
        index_digest
    );
    assert_ne!(single_digest, index_digest);

    // Text: one pinned reference per line, in argument order.
    let output = imgate(resolve_args(
        &registry,
        &[],
        &[&single.reference, &index.reference],
    ))
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{variant:?}: {}",
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{}@{single_digest}", single.reference),
            format!("{}@{index_digest}", index.reference),
        ],
        "{variant:?}"
    );

    // JSON: the index digest at the top, each platform's digest as skopeo sees it.
    let output = imgate(resolve_args(
        &registry,
        &["--output", "json"],
        &[&index.reference],
    ))
    .await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{variant:?}: {}",
        text(&output.stderr)
    );
    let entry = json_entry(&output);
    assert_eq!(entry["digest"], index_digest.as_str(), "{entry}");
    assert_eq!(
        entry["reference"],
        format!("{}@{index_digest}", index.reference).as_str()
    );
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let listed: Vec<(String, String)> = entry["platforms"]
        .as_array()
        .unwrap_or_else(|| panic!("no platforms in {entry}"))
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap_or_default().to_string(),
                p["digest"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = skopeo_platform_digests(&registry, &index.reference)
        .await
        .unwrap();
    assert_eq!(listed, expected, "{variant:?}");
    assert_eq!(
        expected.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        index.platform_digests
    );

    // The library client with the harness's config agrees too.
    let client = imgate_core::registry::RegistryClient::new(registry.client_config()).unwrap();
    let image = imgate_core::ImageRef::parse(&index.reference).unwrap();
    let resolved = client.resolve(&image).await.unwrap();
    assert_eq!(resolved.manifest.digest.to_string(), index_digest);
    let platforms: Vec<String> = resolved
        .platforms
        .iter()
        .map(|(_, digest)| digest.to_string())
        .collect();
    assert_eq!(platforms, index.platform_digests);

    // A single image has no platform list.
    let output = imgate(resolve_args(
        &registry,
        &["--output", "json"],
        &[&single.reference],
    ))
    .await;
    let entry = json_entry(&output);
    assert_eq!(entry["digest"], single_digest.as_str());
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(
        entry["platforms"]
            .as_array()
            .is_none_or(|platforms| platforms.is_empty()),
        "{entry}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_resolves_to_the_new_digest() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let first = ImageBuilder::new("first")
        .image()
        .push(&registry, "team/moving", "latest", PushWith::Http)
        .await
        .unwrap();
    let output = imgate(resolve_args(&registry, &[], &[&first.reference])).await;
    assert_eq!(text(&output.stdout).trim(), first.pinned());
    let second = ImageBuilder::new("second")
        .index()
        .push(&registry, "team/moving", "latest", PushWith::Skopeo)
        .await
        .unwrap();
    assert_ne!(first.digest, second.digest);
    let output = imgate(resolve_args(&registry, &[], &[&second.reference])).await;
    assert_eq!(text(&output.stdout).trim(), second.pinned());
    assert_eq!(
        skopeo_inspect_digest(&registry, &second.reference)
            .await
            .unwrap(),
        second.digest
    );
}

#[rstest]
#[case::basic_auth(Variant::BasicAuth)]
#[case::token(Variant::Token)]
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_one_line_and_exit_2(#[case] variant: Variant) {
    let registry = Registry::start(variant).await.unwrap();
    let pushed = ImageBuilder::new("wrong-password")
        .image()
        .push(&registry, "team/private", "v1", PushWith::Http)
        .await
        .unwrap();
    let wrong = registry.scratch_dir().join("wrong-config.json");
    let (user, _) = registry.credentials().unwrap();
    registry
        .write_docker_config(&wrong, user, "not-the-password")
        .unwrap();
    let mut args = vec!["resolve".to_string()];
    args.extend(registry.cli_args());
    // A later --docker-config would be ambiguous; replace the harness's own.
    let at = args.iter().position(|a| a == "--docker-config").unwrap();
    args[at + 1] = wrong.display().to_string();
    args.push(pushed.reference.clone());
    let output = imgate(args).await;
    let line = assert_one_line_error(&output, "wrong password");
    assert!(
        line.contains("401") || line.contains("refused"),
        "{variant:?}: {line}"
    );
    assert!(line.contains(registry.host()), "{variant:?}: {line}");
    assert!(
        !line.contains("not-the-password"),
        "password leaked: {line}"
    );
}

#[rstest]
#[case::uppercase_repository("127.0.0.1:5000/Team/App:v1")]
#[case::bad_tag("registry.example.com/app:bad tag")]
#[case::empty("")]
#[case::short_digest("registry.example.com/app@sha256:abc")]
#[case::double_colon("registry.example.com/app::v1")]
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_reference_is_one_line_and_exit_2(#[case] reference: &str) {
    let output = imgate(vec!["resolve".to_string(), reference.to_string()]).await;
    let line = assert_one_line_error(&output, reference);
    assert!(line.starts_with("imgate: "), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_registry_fails_fast() {
    // A loopback port nobody listens on: connection refused. (An unknown host
    // name takes the same path, but its lookup would leave loopback.)
    let host = format!("127.0.0.1:{}", free_port().unwrap());
    let started = Instant::now();
    let output = imgate(vec![
        "resolve".to_string(),
        "--allow-http-registry".to_string(),
        host.clone(),
        "--registry-timeout".to_string(),
        "5".to_string(),
        format!("{host}/x:1"),
    ])
    .await;
    let elapsed = started.elapsed();
    let line = assert_one_line_error(&output, "unreachable registry");
    assert!(line.contains(&host), "{line}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_tag_is_one_line_and_exit_2() {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let reference = format!("{}/team/absent:v1", registry.host());
    let output = imgate(resolve_args(&registry, &[], &[&reference])).await;
    let line = assert_one_line_error(&output, "missing tag");
    assert!(line.contains("team/absent"), "{line}");
}

#[rstest]
#[case::directory(true)]
#[case::garbage(false)]
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_docker_config_is_named(#[case] directory: bool) {
    let registry = Registry::start(Variant::BasicAuth).await.unwrap();
    let pushed = ImageBuilder::new("config")
        .image()
        .push(&registry, "team/config", "v1", PushWith::Http)
        .await
        .unwrap();
    let config = registry.scratch_dir().join("broken-docker-config.json");
    if directory {
        std::fs::create_dir(&config).unwrap();
    } else {
        std::fs::write(&config, b"{\"auths\": {not json").unwrap();
    }
    let mut args = vec![
        "resolve".to_string(),
        "--registry-ca".to_string(),
        registry.ca_file().unwrap().display().to_string(),
        "--docker-config".to_string(),
        config.display().to_string(),
    ];
    args.push(pushed.reference.clone());
    let output = imgate(args).await;
    let line = assert_one_line_error(&output, "unreadable docker config");
    assert!(
        line.contains(&config.display().to_string()),
        "the error should name {}: {line}",
        config.display()
    );
}

fn proxied_args(proxy: &CountingProxy, extra: &[&str], images: &[String]) -> Vec<String> {
    let mut args = vec!["resolve".to_string()];
    args.extend(proxy.cli_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(images.iter().cloned());
    args
}

/// `image` pushed to `REPO:v1` on a registry of `variant`, with a counting
/// proxy in front; `reference` names the image through the proxy.
struct Proxied {
    _registry: Registry,
    proxy: CountingProxy,
    digest: String,
    reference: String,
}

async fn behind_proxy(variant: Variant, image: BuiltImage, repo: &str) -> Proxied {
    let registry = Registry::start(variant).await.unwrap();
    let proxy = CountingProxy::start(&registry).await.unwrap();
    let pushed = image
        .push(&registry, repo, "v1", PushWith::Http)
        .await
        .unwrap();
    let reference = pushed.reference.replace(registry.host(), &proxy.host());
    Proxied {
        _registry: registry,
        proxy,
        digest: pushed.digest,
        reference,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_image_named_thrice_is_fetched_once() {
    let served = behind_proxy(
        Variant::Token,
        ImageBuilder::new("thrice").index(),
        "team/thrice",
    )
    .await;
    let (proxy, through_proxy) = (&served.proxy, served.reference.clone());

    let once = imgate(proxied_args(
        proxy,
        &[],
        std::slice::from_ref(&through_proxy),
    ))
    .await;
    assert_eq!(once.status.code(), Some(0), "{}", text(&once.stderr));
    let manifest_requests = |requests: Vec<String>| {
        requests
            .into_iter()
            .filter(|r| r.contains("/manifests/"))
            .count()
    };
    let cost_once = manifest_requests(proxy.requests());
    assert!(cost_once >= 1, "{:?}", proxy.requests());

    proxy.reset();
    let thrice = imgate(proxied_args(
        proxy,
        &[],
        &[
            through_proxy.clone(),
            through_proxy.clone(),
            through_proxy.clone(),
        ],
    ))
    .await;
    assert_eq!(thrice.status.code(), Some(0), "{}", text(&thrice.stderr));
    let lines: Vec<String> = text(&thrice.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines, vec![format!("{through_proxy}@{}", served.digest); 3]);
    assert_eq!(
        manifest_requests(proxy.requests()),
        cost_once,
        "{:?}",
        proxy.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_registry_is_one_line_and_exit_2() {
    let served = behind_proxy(
        Variant::Http,
        ImageBuilder::new("failing").image(),
        "team/failing",
    )
    .await;
    let (proxy, through_proxy) = (&served.proxy, served.reference.clone());
    proxy.set_mode(ProxyMode::Fail500);
    let output = imgate(proxied_args(proxy, &[], &[through_proxy])).await;
    let line = assert_one_line_error(&output, "registry answering 500");
    assert!(line.contains("500"), "{line}");
    assert!(proxy.count() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_registry_times_out_instead_of_hanging() {
    let served = behind_proxy(
        Variant::Http,
        ImageBuilder::new("hanging").image(),
        "team/hanging",
    )
    .await;
    let (proxy, through_proxy) = (&served.proxy, served.reference.clone());
    proxy.set_mode(ProxyMode::Hang);
    let started = Instant::now();
    let output = imgate(proxied_args(
        proxy,
        &["--registry-timeout", "1"],
        &[through_proxy],
    ))
    .await;
    let elapsed = started.elapsed();
    let line = assert_one_line_error(&output, "hanging registry");
    assert!(line.contains(&proxy.host()), "{line}");
    // One-second requests, a few retries with backoff: well under a minute.
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert!(proxy.count() >= 1);
}
