//! A fresh process's first requests to an HTTPS registry: requests started
//! together before any connection is up (a digest's signature lookups, a
//! Pod's tag lookups) must not each open their own. The registry is reached
//! through the fault proxy's TLS front, which offers HTTP/2 by ALPN as
//! public registries do and counts the TCP connections it accepts.

use std::collections::BTreeMap;
use std::time::Duration;

use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Format, SignOptions};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::{
    run_imgate, FaultProxy, Faults, Front, ImageBuilder, PushWith, Registry, Variant,
};

use crate::common::Run;

/// Latency added to each request, so requests started together overlap.
const DELAY: Duration = Duration::from_millis(20);

struct Lab {
    _registry: Registry,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
    /// `PROXY/team/first:vN` and their digests, legacy-signed by `key.pub`.
    images: Vec<(String, String)>,
}

async fn lab(count: usize) -> Lab {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let key = SigningKey::generate();
    let direct = RegistryClient::new(registry.client_config()).unwrap();
    let proxy = FaultProxy::start_with(
        &registry.url(""),
        Faults {
            delay: DELAY,
            ..Faults::default()
        },
        Front::Tls,
    )
    .unwrap();
    let mut images = Vec::new();
    for n in 0..count {
        let tag = format!("v{n}");
        let pushed = ImageBuilder::new(&format!("first contact {n}"))
            .image()
            .push(&registry, "team/first", &tag, PushWith::Http)
            .await
            .unwrap();
        let image = ImageRef::parse(&pushed.pinned()).unwrap();
        let opts = SignOptions {
            format: Format::Legacy,
            annotations: BTreeMap::new(),
        };
        signature::sign(&direct, &image, &key, &opts).await.unwrap();
        images.push((format!("{}/team/first:{tag}", proxy.host()), pushed.digest));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pub"), key.public_key().to_pem()).unwrap();
    Lab {
        _registry: registry,
        proxy,
        dir,
        images,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_is_verified_over_one_connection() {
    let lab = lab(1).await;
    let (tag, digest) = &lab.images[0];
    let pinned = format!("{}@{digest}", tag.rsplit_once(':').unwrap().0);
    // Repeated: whether concurrent connects race is a matter of timing.
    for _ in 0..3 {
        lab.proxy.reset_counts();
        let key = lab.dir.path().join("key.pub");
        let mut args = vec![
            "verify".to_string(),
            "--key".to_string(),
            key.display().to_string(),
            pinned.clone(),
        ];
        args.extend(lab.proxy.cli_args());
        let run = Run::from_output(&run_imgate(&args, &[], None).unwrap());
        assert_eq!(run.code, 0, "{run:?}");
        let counts = lab.proxy.counts();
        // The `.sig` lookup, both referrers lookups and the payload blob.
        assert_eq!(counts.requests, 4, "{counts:?}");
        assert_eq!(counts.connections, 1, "{counts:?}");
        assert_eq!(counts.h2_connections, 1, "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_of_three_tags_is_admitted_over_one_connection() {
    let lab = lab(3).await;
    let containers: Vec<serde_json::Value> = lab
        .images
        .iter()
        .enumerate()
        .map(|(n, (image, _))| serde_json::json!({"name": format!("c{n}"), "image": image}))
        .collect();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "three", "namespace": "apps"},
        "spec": {"containers": containers}
    });
    let manifest = lab.dir.path().join("pod.yaml");
    std::fs::write(&manifest, serde_yaml::to_string(&pod).unwrap()).unwrap();
    let host = lab.proxy.host();
    let ca = lab.proxy.ca_file().unwrap().display().to_string();
    let key = lab.dir.path().join("key.pub").display().to_string();
    let policy = lab.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "mode: enforce\n\
             trustedRegistries: [\"{host}/team/**\"]\n\
             registries:\n  \"{host}\": {{caFile: {ca}}}\n\
             rules:\n  - name: team\n    images: [\"{host}/team/**\"]\n    keys: [{{file: {key}}}]\n"
        ),
    )
    .unwrap();
    let args = [
        "admit",
        "--policy",
        &policy.display().to_string(),
        "-f",
        &manifest.display().to_string(),
    ]
    .map(str::to_string);
    let run = Run::from_output(&run_imgate(&args, &[], None).unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    for (_, digest) in &lab.images {
        assert!(run.stdout.contains(digest.as_str()), "{run:?}");
    }
    let counts = lab.proxy.counts();
    // Per image: the tag, the `.sig` lookup and the blob, and the referrers
    // lookups until the answer for the repository is remembered.
    assert!((9..=15).contains(&counts.requests), "{counts:?}");
    assert_eq!(counts.connections, 1, "{counts:?}");
    assert_eq!(counts.h2_connections, 1, "{counts:?}");
}
