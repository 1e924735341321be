//! Signing and verification through the real client against the fake
//! registry with the OCI referrers API (Distribution 2.8, used by the
//! scenario tests, lacks it): the API path of bundle discovery, ghcr-style
//! referrer entries without `artifactType`, attestations and other artifacts
//! ignored, a blob that does not hash to its descriptor, and a failing
//! registry that must not read as "verified" or "denied".

use std::collections::BTreeMap;

use imgate_core::oci;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{
    bundle, sign, signature_tag, verify, Format, Requirements, SignError, SignOptions, Unmet,
    Verdict, VerifyError,
};
use imgate_core::{Digest, ImageRef};
use imgate_keys::SigningKey;

use crate::fake::{start, Server};

/// The fake registry and a client for it that does not retry (so a failing
/// registry fails at once).
pub struct Fake {
    pub server: Server,
    pub client: RegistryClient,
}

impl Fake {
    pub async fn start() -> Fake {
        let server = start().await;
        let client = RegistryClient::new(imgate_core::registry::ClientConfig {
            retries: 0,
            ..server.config()
        })
        .unwrap();
        Fake { server, client }
    }

    /// Stores a small image manifest under `repo:tag`; returns the pinned reference.
    pub async fn image(&self, repo: &str, label: &str) -> ImageRef {
        let config = format!("{{\"label\":\"{label}\"}}");
        let image = ImageRef::parse(&format!("{}/{repo}:{label}", self.server.host)).unwrap();
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

    /// [`Fake::image`], signed (legacy format) with a fresh key.
    pub async fn signed_image(&self, repo: &str, label: &str) -> (ImageRef, SigningKey) {
        let image = self.image(repo, label).await;
        let key = SigningKey::generate();
        sign(&self.client, &image, &key, &SignOptions::default())
            .await
            .unwrap();
        (image, key)
    }

    /// Attaches a DSSE bundle over `statement` signed by `key` (as any tool would).
    pub async fn attach_statement(&self, image: &ImageRef, key: &SigningKey, statement: &[u8]) {
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

pub fn req(key: &SigningKey) -> Requirements {
    Requirements {
        keys: vec![key.public_key()],
        annotations: BTreeMap::new(),
        match_repository: false,
        ..Default::default()
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
    let f = Fake::start().await;
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
    assert!(f.server.manifest_at(&digest.tag_form()).is_none());

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
async fn bundles_go_through_the_tag_schema_without_the_api() {
    let f = Fake::start().await;
    f.server.registry.set_referrers_api(false);
    let image = f.image("team/app", "schema").await;
    let (k1, k2) = (SigningKey::generate(), SigningKey::generate());
    sign(&f.client, &image, &k1, &bundle_opts()).await.unwrap();
    sign(&f.client, &image, &k2, &bundle_opts()).await.unwrap();
    let digest = image.digest.clone().unwrap();
    let (media_type, bytes) = f.server.manifest_at(&digest.tag_form()).unwrap();
    assert_eq!(media_type, oci::OCI_INDEX);
    let index: oci::ImageIndex = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(index.manifests.len(), 2, "both signers kept");
    for key in [&k1, &k2] {
        assert!(verify(&f.client, &image, &req(key))
            .await
            .unwrap()
            .is_verified());
    }
}

#[tokio::test]
async fn attestations_and_other_artifacts_are_not_signatures() {
    let f = Fake::start().await;
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
    let f = Fake::start().await;
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
    f.server
        .registry
        .store
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
    let f = Fake::start().await;
    let image = f.image("team/app", "down").await;
    f.server.registry.set_fail(true);
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
    f.server.registry.set_fail(false);
    let unpinned = ImageRef::parse(&format!("{}/team/app:down", f.server.host)).unwrap();
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
