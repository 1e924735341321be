//! Signing and verification through the real client against an in-process
//! registry that has the OCI referrers API (Distribution 2.8, used by the
//! scenario tests, lacks it): the API path of bundle discovery, ghcr-style
//! referrer entries without `artifactType`, attestations and other artifacts
//! ignored, a blob that does not hash to its descriptor, and a failing
//! registry that must not read as "verified" or "denied".

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use imgate_keys::SigningKey;

use super::*;
use crate::digest::Digest;
use crate::oci;
use crate::registry::{ClientConfig, RegistryClient, RegistrySettings};

#[derive(Default)]
struct Store {
    manifests: HashMap<String, (String, Vec<u8>)>,
    tags: HashMap<String, String>,
    blobs: HashMap<String, Vec<u8>>,
    fail: bool,
}

type Shared = Arc<Mutex<Store>>;

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// A minimal OCI registry (one namespace: repositories share storage, which
/// is all these tests need) with the referrers API. Entries it lists carry
/// no `artifactType`, as ghcr.io's do.
async fn handle(
    State(store): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = match store.lock() {
        Ok(s) => s,
        Err(_) => return status(StatusCode::INTERNAL_SERVER_ERROR),
    };
    if s.fail {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let path = uri.path().to_string();
    if path == "/v2/" {
        return status(StatusCode::OK);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return status(StatusCode::NOT_FOUND);
    };
    if let Some((_, reference)) = rest.rsplit_once("/manifests/") {
        let digest = if reference.starts_with("sha256:") {
            reference.to_string()
        } else {
            match (s.tags.get(reference), method.clone()) {
                (Some(d), _) => d.clone(),
                (None, Method::PUT) => String::new(),
                (None, _) => return status(StatusCode::NOT_FOUND),
            }
        };
        return match method {
            Method::PUT => {
                let digest = Digest::sha256(&body).to_string();
                let media_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                s.manifests
                    .insert(digest.clone(), (media_type, body.to_vec()));
                if !reference.starts_with("sha256:") {
                    s.tags.insert(reference.to_string(), digest.clone());
                }
                ([("docker-content-digest", digest)], StatusCode::CREATED).into_response()
            }
            _ => match s.manifests.get(&digest) {
                Some((mt, bytes)) => (
                    [
                        ("content-type", mt.clone()),
                        ("docker-content-digest", digest.clone()),
                    ],
                    bytes.clone(),
                )
                    .into_response(),
                None => status(StatusCode::NOT_FOUND),
            },
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/referrers/") {
        let manifests: Vec<serde_json::Value> = s
            .manifests
            .iter()
            .filter_map(|(d, (mt, bytes))| {
                let m: serde_json::Value = serde_json::from_slice(bytes).ok()?;
                (m["subject"]["digest"] == digest)
                    .then(|| serde_json::json!({"mediaType": mt, "digest": d, "size": bytes.len()}))
            })
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": manifests});
        return ([("content-type", oci::OCI_INDEX)], index.to_string()).into_response();
    }
    if rest.ends_with("/blobs/uploads/") && method == Method::POST {
        let location = format!("/v2/{}upload-1", rest);
        return ([("location", location)], StatusCode::ACCEPTED).into_response();
    }
    if rest.contains("/blobs/uploads/") && method == Method::PUT {
        let digest = uri
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("digest=")))
            .unwrap_or_default()
            .replace("%3A", ":");
        s.blobs.insert(digest.clone(), body.to_vec());
        return ([("docker-content-digest", digest)], StatusCode::CREATED).into_response();
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match s.blobs.get(digest) {
            Some(bytes) if method == Method::HEAD => (
                [("content-length", bytes.len().to_string())],
                StatusCode::OK,
            )
                .into_response(),
            Some(bytes) => bytes.clone().into_response(),
            None => status(StatusCode::NOT_FOUND),
        };
    }
    status(StatusCode::NOT_FOUND)
}

struct Fake {
    store: Shared,
    client: RegistryClient,
    host: String,
}

async fn fake() -> Fake {
    let store: Shared = Arc::default();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut config = ClientConfig {
        use_docker_config: false,
        retries: 0,
        ..ClientConfig::default()
    };
    config.registries.insert(
        host.clone(),
        RegistrySettings {
            http: true,
            ca_file: None,
        },
    );
    Fake {
        store,
        client: RegistryClient::new(config).unwrap(),
        host,
    }
}

impl Fake {
    /// Stores a small image manifest under `repo:tag`; returns the pinned reference.
    async fn image(&self, repo: &str, label: &str) -> ImageRef {
        let config = format!("{{\"label\":\"{label}\"}}");
        let image = ImageRef::parse(&format!("{}/{repo}:{label}", self.host)).unwrap();
        let config_digest = self
            .client
            .put_blob(&image, config.as_bytes())
            .await
            .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": oci::OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = self
            .client
            .put_manifest(&image, label, oci::OCI_MANIFEST, &bytes)
            .await
            .unwrap();
        image.pinned(digest)
    }

    /// Attaches a DSSE bundle over `statement` signed by `key` (as any tool would).
    async fn attach_statement(&self, image: &ImageRef, key: &SigningKey, statement: &[u8]) {
        let sig = key.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, statement));
        let bytes = bundle::build_bundle(statement, &sig, &key.public_key().hint());
        let target = self
            .client
            .get_manifest(image, image.reference().as_str())
            .await
            .unwrap();
        let subject = oci::Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: target.bytes.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        };
        self.client.put_blob(image, &bytes).await.unwrap();
        self.client
            .put_blob(image, bundle::EMPTY_BLOB)
            .await
            .unwrap();
        let m = serde_json::to_vec(&bundle::build_attachment(
            &bytes,
            subject,
            "2025-01-01T00:00:00Z",
        ))
        .unwrap();
        self.client
            .put_manifest(image, Digest::sha256(&m).as_str(), oci::OCI_MANIFEST, &m)
            .await
            .unwrap();
    }
}

fn req(key: &SigningKey) -> Requirements {
    Requirements {
        keys: vec![key.public_key()],
        annotations: BTreeMap::new(),
        match_repository: false,
    }
}

fn bundle_opts() -> SignOptions {
    SignOptions {
        format: Format::Bundle,
        annotations: BTreeMap::from([("env".to_string(), "prod".to_string())]),
    }
}

#[tokio::test]
async fn bundles_go_through_the_referrers_api() {
    let f = fake().await;
    let image = f.image("team/app", "v1").await;
    let (k1, k2) = (SigningKey::generate(), SigningKey::generate());
    let first = sign(&f.client, &image, &k1, &bundle_opts()).await.unwrap();
    // The same signature again is not attached twice.
    assert_eq!(
        sign(&f.client, &image, &k1, &bundle_opts()).await.unwrap(),
        first
    );
    sign(&f.client, &image, &k2, &bundle_opts()).await.unwrap();
    let digest = image.digest.clone().unwrap();
    let listed = f.client.referrers(&image, &digest).await.unwrap().unwrap();
    assert_eq!(listed.manifests.len(), 2);
    assert!(
        listed.manifests.iter().all(|d| d.artifact_type.is_none()),
        "ghcr-style entries"
    );
    // With the API, no tag-schema index is written.
    assert!(!f
        .store
        .lock()
        .unwrap()
        .tags
        .contains_key(&digest.tag_form()));

    for key in [&k1, &k2] {
        let mut r = req(key);
        r.annotations.insert("env".into(), "prod".into());
        match verify(&f.client, &image, &r).await.unwrap() {
            Verdict::Verified(v) => {
                assert_eq!(v.format, Format::Bundle);
                assert_eq!(v.annotations["env"], "prod");
            }
            other => panic!("{other:?}"),
        }
    }
    let stranger = SigningKey::generate();
    let Verdict::Denied { unmet, .. } = verify(&f.client, &image, &req(&stranger)).await.unwrap()
    else {
        panic!("a stranger's key must not verify");
    };
    assert_eq!(unmet.len(), 2, "{unmet:?}");
    assert!(unmet.iter().all(|u| matches!(u, Unmet::WrongKey { .. })));
}

#[tokio::test]
async fn attestations_and_other_artifacts_are_not_signatures() {
    let f = fake().await;
    let image = f.image("team/app", "att").await;
    let key = SigningKey::generate();
    let hex = image.digest.as_ref().unwrap().hex().to_string();
    let provenance = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{}}}}"#
    );
    f.attach_statement(&image, &key, provenance.as_bytes())
        .await;
    // An SBOM-like referrer: a layer of another media type.
    let sbom = b"{\"spdxVersion\":\"SPDX-2.3\"}";
    f.client.put_blob(&image, sbom).await.unwrap();
    let mut m = bundle::build_attachment(
        sbom,
        oci::Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest: image.digest.clone().unwrap(),
            size: 1,
            artifact_type: None,
            platform: None,
            annotations: None,
        },
        "2025-01-01T00:00:00Z",
    );
    m.layers[0].media_type = "application/spdx+json".into();
    m.artifact_type = Some("application/spdx+json".into());
    let bytes = serde_json::to_vec(&m).unwrap();
    f.client
        .put_manifest(
            &image,
            Digest::sha256(&bytes).as_str(),
            oci::OCI_MANIFEST,
            &bytes,
        )
        .await
        .unwrap();

    let Verdict::Denied { unmet, digest } = verify(&f.client, &image, &req(&key)).await.unwrap()
    else {
        panic!("an attestation is not a signature");
    };
    assert_eq!(unmet, vec![Unmet::NoSignatures { digest }]);

    // A cosign signature statement by the same key does count.
    let signature = String::from_utf8(bundle::build_statement(
        image.digest.as_ref().unwrap(),
        &BTreeMap::new(),
    ))
    .unwrap();
    f.attach_statement(&image, &key, signature.as_bytes()).await;
    assert!(verify(&f.client, &image, &req(&key))
        .await
        .unwrap()
        .is_verified());
}

#[tokio::test]
async fn legacy_signatures_and_a_lying_blob() {
    let f = fake().await;
    let image = f.image("team/app", "legacy").await;
    let (k1, k2) = (SigningKey::generate(), SigningKey::generate());
    let opts = SignOptions::default();
    sign(&f.client, &image, &k1, &opts).await.unwrap();
    // Another payload (an annotation), so the two layers have distinct blobs.
    let opts2 = SignOptions {
        format: Format::Legacy,
        annotations: BTreeMap::from([("by".to_string(), "k2".to_string())]),
    };
    let sig_digest = sign(&f.client, &image, &k2, &opts2).await.unwrap();
    let tag = signature_tag(image.digest.as_ref().unwrap());
    let fetched = f.client.get_manifest(&image, &tag).await.unwrap();
    assert_eq!(fetched.digest, sig_digest);
    let m: oci::ImageManifest = serde_json::from_slice(&fetched.bytes).unwrap();
    assert_eq!(m.layers.len(), 2);
    assert!(verify(&f.client, &image, &req(&k2))
        .await
        .unwrap()
        .is_verified());

    // The registry now serves other bytes for k2's payload: that signature is
    // unusable (blob mismatch); k1's still verifies with k1.
    let lied = m.layers[1].digest.to_string();
    f.store
        .lock()
        .unwrap()
        .blobs
        .insert(lied.clone(), b"{\"critical\":{}}".to_vec());
    let Verdict::Denied { unmet, .. } = verify(&f.client, &image, &req(&k2)).await.unwrap() else {
        panic!("a lying blob must not verify");
    };
    assert!(
        unmet
            .iter()
            .any(|u| matches!(u, Unmet::BlobMismatch { digest, .. } if digest.as_str() == lied)),
        "{unmet:?}"
    );
    assert!(verify(&f.client, &image, &req(&k1))
        .await
        .unwrap()
        .is_verified());
}

#[tokio::test]
async fn a_failing_registry_is_an_error_not_a_verdict() {
    let f = fake().await;
    let image = f.image("team/app", "down").await;
    f.store.lock().unwrap().fail = true;
    let key = SigningKey::generate();
    assert!(matches!(
        verify(&f.client, &image, &req(&key)).await,
        Err(VerifyError::Registry(_))
    ));
    assert!(matches!(
        sign(&f.client, &image, &key, &SignOptions::default()).await,
        Err(SignError::Registry { .. })
    ));
    // An unpinned reference and a digest the registry lacks are refused.
    f.store.lock().unwrap().fail = false;
    let unpinned = ImageRef::parse(&format!("{}/team/app:down", f.host)).unwrap();
    assert!(matches!(
        verify(&f.client, &unpinned, &req(&key)).await,
        Err(VerifyError::NotPinned { .. })
    ));
    let missing = unpinned.pinned(Digest::sha256(b"nothing"));
    assert!(matches!(
        sign(&f.client, &missing, &key, &SignOptions::default()).await,
        Err(SignError::ImageNotFound { .. })
    ));
}
