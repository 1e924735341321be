//! The legacy `.sig` tag: reading its layers and appending one, the way
//! cosign lays it out (OCI manifest, image config, one simple-signing layer
//! per signature, the signature in a layer annotation).
//!
//! Appending goes through the tag helper (`tag.rs`): layers already there
//! are always kept, never rewritten.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt as _};

use super::collect::{
    fetch_blob, Found, LayerAnnotations, Listing, FETCH_CONCURRENCY, MAX_PAYLOAD_SIZE,
    MAX_SIGNATURE_LAYERS,
};
use super::requirements::{SignatureId, Unmet};
use super::tag::{self, TagDocument, TagWriteError};
use super::{signature_tag, Format, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};
use crate::sigstore::LegacyEvidence;

/// The descriptor of a signature layer: `payload` with its base64 signature.
pub fn signature_layer(payload: &[u8], signature_b64: &str) -> Descriptor {
    Descriptor {
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.to_string(),
        digest: Digest::sha256(payload),
        size: payload.len() as u64,
        artifact_type: None,
        platform: None,
        annotations: Some(BTreeMap::from([(
            SIGNATURE_ANNOTATION.to_string(),
            signature_b64.to_string(),
        )])),
    }
}

/// The descriptor of a signature layer carrying Sigstore evidence: the
/// signature, and where present the certificate, its chain, the Rekor entry
/// and the RFC 3161 timestamp, in cosign's annotations.
pub fn evidence_layer(payload: &[u8], evidence: &LegacyEvidence) -> Descriptor {
    let mut layer = signature_layer(payload, &evidence.signature_b64);
    let extra = [
        (CERTIFICATE_ANNOTATION, &evidence.certificate_pem),
        (CHAIN_ANNOTATION, &evidence.chain_pem),
        (REKOR_BUNDLE_ANNOTATION, &evidence.rekor_bundle),
        (RFC3161_ANNOTATION, &evidence.rfc3161_timestamp),
    ];
    if let Some(annotations) = layer.annotations.as_mut() {
        for (key, value) in extra {
            if let Some(value) = value {
                annotations.insert(key.to_string(), value.clone());
            }
        }
    }
    layer
}

/// The signature annotation of a layer.
pub fn layer_signature(layer: &Descriptor) -> Option<&str> {
    layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .map(String::as_str)
}

/// Layer annotation holding a keyless signature's Fulcio certificate (PEM).
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Layer annotation holding the certificate's chain (PEM, not trusted).
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// Layer annotation holding the Rekor entry with its SET (JSON).
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// Layer annotation holding an RFC 3161 timestamp of the signature (JSON,
/// `{"SignedRFC3161Timestamp": base64}`).
pub const RFC3161_ANNOTATION: &str = "dev.sigstore.cosign/rfc3161timestamp";

/// The annotations of `layer` that verification reads.
pub fn layer_annotations(layer: &Descriptor) -> LayerAnnotations {
    let get = |key: &str| layer.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    LayerAnnotations {
        signature: get(SIGNATURE_ANNOTATION),
        certificate: get(CERTIFICATE_ANNOTATION),
        chain: get(CHAIN_ANNOTATION),
        rekor_bundle: get(REKOR_BUNDLE_ANNOTATION),
    }
}

/// True when `manifest` already holds this payload with this signature.
pub fn has_layer(manifest: &ImageManifest, layer: &Descriptor) -> bool {
    manifest
        .layers
        .iter()
        .any(|l| l.digest == layer.digest && layer_signature(l) == layer_signature(layer))
}

/// The image config cosign writes for a signature manifest (what
/// go-containerregistry's `mutate.Append` on an empty image produces): one
/// history entry and one diff id per layer.
pub fn config_for(layers: &[Descriptor]) -> Vec<u8> {
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let config = serde_json::json!({
        "architecture": "",
        "created": ZERO_TIME,
        "history": layers.iter().map(|_| serde_json::json!({"created": ZERO_TIME})).collect::<Vec<_>>(),
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
        },
        "config": {},
    });
    serde_json::to_vec(&config).unwrap_or_default()
}

/// The manifest `existing` (or a new one) with `layer` appended and the
/// config rebuilt for the new layer list; `None` when `layer` is already there.
/// Returns the manifest and its config blob.
pub fn with_layer(
    existing: Option<&ImageManifest>,
    layer: Descriptor,
) -> Option<(ImageManifest, Vec<u8>)> {
    if existing.is_some_and(|m| has_layer(m, &layer)) {
        return None;
    }
    let mut layers = existing.map(|m| m.layers.clone()).unwrap_or_default();
    layers.push(layer);
    let config = config_for(&layers);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(oci::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor {
            media_type: oci::OCI_CONFIG.to_string(),
            digest: Digest::sha256(&config),
            size: config.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        },
        layers,
        subject: None,
        annotations: existing.and_then(|m| m.annotations.clone()),
    };
    Some((manifest, config))
}

/// The `.sig` manifest of a digest as a tag document, with the layer a
/// signer adds to it.
pub(crate) struct SignatureTag<'a> {
    pub(crate) digest: &'a Digest,
    pub(crate) layer: Option<Descriptor>,
}

impl TagDocument for SignatureTag<'_> {
    type Doc = ImageManifest;

    fn tag(&self) -> String {
        signature_tag(self.digest)
    }

    fn media_type(&self) -> &'static str {
        oci::OCI_MANIFEST
    }

    fn parse(&self, image: &ImageRef, bytes: &[u8]) -> Result<ImageManifest, String> {
        serde_json::from_slice::<ImageManifest>(bytes).map_err(|err| {
            format!(
                "signature manifest {}:{} is not an image manifest: {err}",
                image.name(),
                self.tag()
            )
        })
    }

    fn contains(&self, doc: &ImageManifest) -> bool {
        self.layer.as_ref().is_some_and(|l| has_layer(doc, l))
    }

    fn merged(&self, existing: Option<&ImageManifest>) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let layer = self
            .layer
            .clone()
            .ok_or_else(|| "no signature layer to add".to_string())?;
        let (manifest, config) = with_layer(existing, layer)
            .ok_or_else(|| "the signature layer is already there".to_string())?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        Ok((bytes, vec![config]))
    }
}

/// The signature manifest of `digest`, if the `.sig` tag exists.
pub(crate) async fn read(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Listing<ImageManifest>, RegistryError> {
    let doc = SignatureTag {
        digest,
        layer: None,
    };
    Ok(tag::read(client, image, &doc).await?.map(|(_, m)| m))
}

/// Appends `layer` (whose blob is `payload`) to the `.sig` manifest of
/// `digest`, keeping every layer already there. Returns the digest of a
/// signature manifest that contains the layer.
pub(crate) async fn append(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
    payload: &[u8],
    layer: Descriptor,
) -> Result<Digest, TagWriteError> {
    // Upload the payload before reading the tag, so the window between
    // reading and writing the manifest stays as short as possible.
    client.put_blob(image, payload).await?;
    let doc = SignatureTag {
        digest,
        layer: Some(layer),
    };
    tag::append(client, image, &doc).await
}

/// The legacy signatures of a `.sig` manifest, each read as the stream is
/// polled (at most [`FETCH_CONCURRENCY`] at a time, in layer order), so the
/// caller checks each as it arrives and stops at the first that satisfies.
/// At most [`MAX_SIGNATURE_LAYERS`] layers are read; when the manifest lists
/// more, the first value says so (it must be reported: an unread signature
/// is never a pass).
pub(crate) fn signatures<'a>(
    client: &'a RegistryClient,
    image: &'a ImageRef,
    manifest: ImageManifest,
) -> (
    Option<Unmet>,
    impl Stream<Item = Result<Found, RegistryError>> + 'a,
) {
    let layers: Vec<Descriptor> = manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .collect();
    let over = (layers.len() > MAX_SIGNATURE_LAYERS).then_some(Unmet::TooManySignatures {
        format: Format::Legacy,
        listed: layers.len(),
        limit: MAX_SIGNATURE_LAYERS,
    });
    let fetches = layers
        .into_iter()
        .take(MAX_SIGNATURE_LAYERS)
        .enumerate()
        .map(move |(i, layer)| async move {
            let id = SignatureId {
                index: i + 1,
                format: Format::Legacy,
            };
            Ok(
                match fetch_blob(client, image, &layer, MAX_PAYLOAD_SIZE).await? {
                    Ok(payload) => Found::Legacy {
                        index: id.index,
                        payload,
                        annotations: layer_annotations(&layer),
                    },
                    Err(problem) => Found::Unusable(problem.unmet(id)),
                },
            )
        });
    (
        over,
        futures::stream::iter(fetches).buffered(FETCH_CONCURRENCY),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_never_drops_layers() {
        let a = signature_layer(b"payload-a", "c2lnLWE=");
        let b = signature_layer(b"payload-b", "c2lnLWI=");
        let (m1, c1) = with_layer(None, a.clone()).unwrap();
        assert_eq!(m1.layers, vec![a.clone()]);
        assert_eq!(m1.config.digest, Digest::sha256(&c1));
        assert_eq!(m1.config.media_type, oci::OCI_CONFIG);
        let (m2, c2) = with_layer(Some(&m1), b.clone()).unwrap();
        assert_eq!(m2.layers, vec![a.clone(), b.clone()]);
        let config: serde_json::Value = serde_json::from_slice(&c2).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        // The same payload and signature again: nothing to do.
        assert!(with_layer(Some(&m2), a.clone()).is_none());
        // The same payload signed by another key is another signature.
        let a2 = signature_layer(b"payload-a", "b3RoZXI=");
        assert_eq!(with_layer(Some(&m2), a2).unwrap().0.layers.len(), 3);
    }

    #[test]
    fn layer_has_cosign_media_type_and_annotation() {
        let l = signature_layer(b"p", "c2ln");
        assert_eq!(l.media_type, SIMPLE_SIGNING_MEDIA_TYPE);
        assert_eq!(layer_signature(&l), Some("c2ln"));
        assert_eq!(l.size, 1);
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["annotations"][SIGNATURE_ANNOTATION], "c2ln");
    }
}
