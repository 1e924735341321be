//! The registry client against the fake registry's lies: wrong
//! `Docker-Content-Digest` headers, bodies that do not hash to the digest
//! asked for, truncated blobs, 500s and 429s, hangs, Bearer and Basic auth,
//! an index behind a tag, the referrers API present and absent, uploads with
//! relative `Location`s and oversized manifests. Every test bounds its own
//! run time.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use imgate_core::oci;
use imgate_core::registry::{ClientConfig, RegistryClient, RegistryError, RegistrySettings};
use imgate_core::{Digest, ImageRef};

use crate::fake::{bounded, index_body, start, BLOB, MANIFEST, TOKEN_PASSWORD, TOKEN_USER};

#[tokio::test]
async fn honest_tag_resolves_to_the_hash_of_its_bytes() {
    let s = start().await;
    let r = bounded(s.client().resolve(&s.image("good:v1")))
        .await
        .unwrap();
    let want = Digest::sha256(MANIFEST.as_bytes());
    assert_eq!(r.manifest.digest, want);
    assert_eq!(r.pinned.digest.as_ref(), Some(&want));
    assert_eq!(r.pinned.tag.as_deref(), Some("v1"));
    assert_eq!(r.manifest.media_type, oci::OCI_MANIFEST);
    assert!(r.platforms.is_empty());
    assert_eq!(r.manifest.bytes, MANIFEST.as_bytes());
}

#[tokio::test]
async fn wrong_digest_header_is_a_mismatch_naming_both() {
    let s = start().await;
    let err = bounded(s.client().resolve(&s.image("wrongheader:v1")))
        .await
        .unwrap_err();
    let lie = Digest::sha256(b"something else");
    let truth = Digest::sha256(MANIFEST.as_bytes());
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(lie.as_str()) && msg.contains(truth.as_str()),
        "{msg}"
    );
}

#[tokio::test]
async fn body_not_matching_the_requested_digest_is_a_mismatch() {
    let s = start().await;
    let asked = Digest::sha256(MANIFEST.as_bytes());
    let image = s.image(&format!("badbody@{asked}"));
    let err = bounded(s.client().resolve(&image)).await.unwrap_err();
    let got = Digest::sha256(br#"{"schemaVersion":2,"evil":true}"#);
    match &err {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &asked);
            assert_eq!(actual, &got);
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains(asked.as_str()) && err.to_string().contains(got.as_str()));
    // get_manifest by digest says the same.
    let err = bounded(s.client().get_manifest(&image, asked.as_str()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn blobs_are_checked_and_truncation_is_an_error() {
    let s = start().await;
    let client = s.client();
    let d = Digest::sha256(BLOB);
    assert_eq!(
        bounded(client.get_blob(&s.image("good:x"), &d))
            .await
            .unwrap(),
        BLOB
    );
    let err = bounded(client.get_blob(&s.image("trunc:x"), &d))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("ended early"), "{err}");
    let err = bounded(client.get_blob(&s.image("swapped:x"), &d))
        .await
        .unwrap_err();
    match err {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, d);
            assert_eq!(actual, Digest::sha256(b"other bytes"));
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
}

#[tokio::test]
async fn a_500_is_retried_and_counted() {
    let s = start().await;
    let client = s.client();
    let r = bounded(client.resolve(&s.image("flaky:v1"))).await.unwrap();
    assert_eq!(r.manifest.digest, Digest::sha256(MANIFEST.as_bytes()));
    assert_eq!(s.registry.hits("flaky"), 2);
    assert_eq!(client.request_count(), 2);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = start().await;
    let started = Instant::now();
    bounded(s.client().resolve(&s.image("ratelimited:v1")))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.registry.hits("ratelimited"), 2);
}

#[tokio::test]
async fn retries_give_up_with_the_status() {
    let s = start().await;
    let client = s.client();
    let err = bounded(client.resolve(&s.image("alwaysdown:v1")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 503, .. }),
        "{err}"
    );
    // One try and the configured two retries.
    assert_eq!(s.registry.hits("alwaysdown"), 3);
    assert_eq!(client.request_count(), 3);
}

#[tokio::test]
async fn a_hanging_registry_times_out() {
    let s = start().await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(500),
        ..s.config()
    };
    let client = RegistryClient::new(config).unwrap();
    let started = Instant::now();
    let err = bounded(client.resolve(&s.image("hang:v1")))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(err.to_string().contains(&s.host), "{err}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    // Bind and drop to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = ClientConfig {
        registries: BTreeMap::from([(
            host.clone(),
            RegistrySettings {
                http: true,
                ca_file: None,
            },
        )]),
        use_docker_config: false,
        retries: 1,
        ..ClientConfig::default()
    };
    let client = RegistryClient::new(config).unwrap();
    let image = ImageRef::parse(&format!("{host}/x:v1")).unwrap();
    let err = bounded(client.resolve(&image)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&host), "{err}");
    assert_eq!(client.request_count(), 2, "one try and one retry");
}

#[tokio::test]
async fn bearer_flow_fetches_one_token_and_reuses_it() {
    let s = start().await;
    let base = s.client();
    let client = base.with_credentials(s.creds(TOKEN_PASSWORD));
    let image = s.image("private:v1");
    let r = bounded(client.resolve(&image)).await.unwrap();
    assert_eq!(r.manifest.digest, Digest::sha256(MANIFEST.as_bytes()));
    // 401, token, retry with the token.
    assert_eq!(client.request_count(), 3);
    bounded(client.resolve(&image)).await.unwrap();
    // The token is cached and sent up front: one request.
    assert_eq!(client.request_count(), 4);
    assert_eq!(s.registry.tokens_issued.load(Ordering::SeqCst), 1);
    assert_eq!(s.registry.hits("private"), 3);
    // Clones share the counter.
    assert_eq!(base.request_count(), 4);

    // Without credentials the token server refuses: Unauthorized, naming the registry.
    let err = bounded(base.resolve(&image)).await.unwrap_err();
    match &err {
        RegistryError::Unauthorized {
            registry, status, ..
        } => {
            assert_eq!(registry, &s.host);
            assert_eq!(*status, 401);
        }
        other => panic!("expected unauthorized, got {other}"),
    }
    // A clone with other credentials does not reuse alice's token.
    let err = bounded(base.with_credentials(s.creds("wrong")).resolve(&image))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert_eq!(s.registry.tokens_issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn basic_auth_with_wrong_credentials_is_unauthorized() {
    let s = start().await;
    let image = s.image("basic:v1");
    let err = bounded(
        s.client()
            .with_credentials(s.creds("wrong"))
            .resolve(&image),
    )
    .await
    .unwrap_err();
    match &err {
        RegistryError::Unauthorized {
            registry,
            status,
            detail,
        } => {
            assert_eq!(registry, &s.host);
            assert_eq!(*status, 401);
            assert!(!detail.contains("wrong"), "the password leaked: {detail}");
        }
        other => panic!("expected unauthorized, got {other}"),
    }
    assert!(
        err.to_string().contains(&s.host) && err.to_string().contains("401"),
        "{err}"
    );
    // No credentials at all: also unauthorized, and says so.
    let err = bounded(s.client().resolve(&image)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    // The right ones work, and later requests send them up front.
    let client = s.client().with_credentials(s.creds(TOKEN_PASSWORD));
    bounded(client.resolve(&image)).await.unwrap();
    assert_eq!(client.request_count(), 2);
    bounded(client.resolve(&image)).await.unwrap();
    assert_eq!(client.request_count(), 3);
}

#[tokio::test]
async fn an_index_stays_an_index() {
    let s = start().await;
    let r = bounded(s.client().resolve(&s.image("multi:v1")))
        .await
        .unwrap();
    let body = index_body();
    assert_eq!(r.manifest.digest, Digest::sha256(body.as_bytes()));
    assert_eq!(r.pinned.digest, Some(Digest::sha256(body.as_bytes())));
    assert!(
        oci::is_index(&r.manifest.media_type),
        "{}",
        r.manifest.media_type
    );
    let platforms: Vec<(String, Digest)> = r
        .platforms
        .iter()
        .map(|(p, d)| (p.as_ref().unwrap().to_string(), d.clone()))
        .collect();
    assert_eq!(
        platforms,
        vec![
            ("linux/amd64".to_string(), Digest::sha256(b"amd64 manifest")),
            (
                "linux/arm64/v8".to_string(),
                Digest::sha256(b"arm64 manifest")
            ),
        ]
    );
}

#[tokio::test]
async fn referrers_absent_and_present() {
    let s = start().await;
    let client = s.client();
    let d = Digest::sha256(MANIFEST.as_bytes());
    assert!(bounded(client.referrers(&s.image("noreferrers:v1"), &d))
        .await
        .unwrap()
        .is_none());
    let index = bounded(client.referrers(&s.image("good:v1"), &d))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(index.manifests[0].digest, d);
    assert_eq!(
        index.manifests[0].artifact_type.as_deref(),
        Some("application/vnd.dev.sigstore.bundle.v0.3+json")
    );
}

#[tokio::test]
async fn oversized_manifests_are_refused() {
    let s = start().await;
    let err = bounded(s.client().resolve(&s.image("huge:v1")))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn uploads_follow_relative_locations_and_skip_existing_blobs() {
    let s = start().await;
    let client = s.client();
    let image = s.image("push:v1");
    let d = bounded(client.put_blob(&image, BLOB)).await.unwrap();
    assert_eq!(d, Digest::sha256(BLOB));
    assert_eq!(
        s.registry
            .store
            .lock()
            .unwrap()
            .blobs
            .get(d.as_str())
            .unwrap(),
        BLOB
    );
    assert_eq!(s.registry.hits("upload-start"), 1);
    // Already there: a HEAD and nothing else.
    let before = client.request_count();
    bounded(client.put_blob(&image, BLOB)).await.unwrap();
    assert_eq!(client.request_count(), before + 1);
    assert_eq!(s.registry.hits("upload-start"), 1);

    let md = bounded(client.put_manifest(&image, "v1", oci::OCI_MANIFEST, MANIFEST.as_bytes()))
        .await
        .unwrap();
    assert_eq!(md, Digest::sha256(MANIFEST.as_bytes()));
    let (ct, bytes) = s.manifest_at("v1").unwrap();
    assert_eq!(ct, oci::OCI_MANIFEST);
    assert_eq!(bytes, MANIFEST.as_bytes());
    // Pushing by a digest the bytes do not have is refused before sending.
    let wrong = Digest::sha256(b"nope");
    let err = bounded(client.put_manifest(
        &image,
        wrong.as_str(),
        oci::OCI_MANIFEST,
        MANIFEST.as_bytes(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn not_found_names_the_tag_and_repository() {
    let s = start().await;
    let err = bounded(s.client().resolve(&s.image("nothere:v9")))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("v9") && msg.contains("nothere"), "{msg}");
}

#[tokio::test]
async fn docker_config_credentials_answer_basic_challenges() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{TOKEN_PASSWORD}"));
    std::fs::write(
        &path,
        format!(
            r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
            s.host
        ),
    )
    .unwrap();
    let config = ClientConfig {
        use_docker_config: true,
        docker_config: Some(path.clone()),
        ..s.config()
    };
    let client = RegistryClient::new(config.clone()).unwrap();
    bounded(client.resolve(&s.image("basic:v1"))).await.unwrap();
    // Explicit credentials win over the docker config.
    let err = bounded(
        client
            .with_credentials(s.creds("wrong"))
            .resolve(&s.image("basic:v1")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    // A malformed file, or a CA file that is not one, fails construction naming the file.
    std::fs::write(&path, "{\"auths\": ").unwrap();
    let err = RegistryClient::new(config.clone()).unwrap_err();
    assert!(matches!(err, RegistryError::Config(_)), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    let bad_ca = dir.path().join("ca.pem");
    std::fs::write(&bad_ca, "nothing here").unwrap();
    let err = RegistryClient::new(ClientConfig {
        extra_ca_files: vec![bad_ca.clone()],
        ..s.config()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(&bad_ca.display().to_string()),
        "{err}"
    );
}
