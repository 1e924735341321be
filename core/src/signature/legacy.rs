//! The legacy `.sig` tag: reading its layers and appending one, the way
//! cosign lays it out (OCI manifest, image config, one simple-signing layer
//! per signature, the signature in a layer annotation).
//!
//! Registries offer no compare-and-swap on tags, so appending is
//! read-merge-write followed by a re-read: if a concurrent signer's write
//! replaced ours, merge again (bounded). Layers already there are always
//! kept, never rewritten.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{signature_tag, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE};
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// How often a signer merges again after a concurrent write lost its layer.
pub(crate) const MAX_ATTEMPTS: u32 = 8;
/// How long a signer waits after its write before checking that it stuck,
/// so a concurrent writer that read the tag earlier has landed its write.
const SETTLE: Duration = Duration::from_millis(150);

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

/// The signature annotation of a layer.
pub fn layer_signature(layer: &Descriptor) -> Option<&str> {
    layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        .map(String::as_str)
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

/// The signature manifest of `digest`, if the `.sig` tag exists: its digest
/// and either the parsed manifest or why it does not parse.
pub(crate) async fn read(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Option<(Digest, Result<ImageManifest, String>)>, RegistryError> {
    match client.get_manifest(image, &signature_tag(digest)).await {
        Ok(fetched) => {
            let parsed = serde_json::from_slice::<ImageManifest>(&fetched.bytes).map_err(|err| {
                format!(
                    "signature manifest {}:{} is not an image manifest: {err}",
                    image.name(),
                    signature_tag(digest)
                )
            });
            Ok(Some((fetched.digest, parsed)))
        }
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Why appending a signature layer failed.
#[derive(Debug)]
pub(crate) enum AppendError {
    Registry(RegistryError),
    /// The existing signature manifest does not parse; it is left alone.
    Malformed(String),
    /// Concurrent writers kept replacing the tag.
    Conflict(u32),
}

impl From<RegistryError> for AppendError {
    fn from(err: RegistryError) -> Self {
        AppendError::Registry(err)
    }
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
) -> Result<Digest, AppendError> {
    let tag = signature_tag(digest);
    // Upload the payload before reading the tag, so the window between
    // reading and writing the manifest stays as short as possible.
    client.put_blob(image, payload).await?;
    for attempt in 1..=MAX_ATTEMPTS {
        let current = read(client, image, digest).await?;
        let existing = match &current {
            Some((_, Ok(m))) => Some(m),
            Some((_, Err(detail))) => return Err(AppendError::Malformed(detail.clone())),
            None => None,
        };
        let Some((manifest, config)) = with_layer(existing, layer.clone()) else {
            // Already there: from an earlier identical signing, or merged in by
            // a concurrent signer after our write was replaced.
            if let Some((found, _)) = current {
                return Ok(found);
            }
            continue;
        };
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| AppendError::Malformed(e.to_string()))?;
        client.put_blob(image, &config).await?;
        client
            .put_manifest(image, &tag, oci::OCI_MANIFEST, &bytes)
            .await?;
        tokio::time::sleep(SETTLE).await;
        if let Some((found, Ok(after))) = read(client, image, digest).await? {
            if has_layer(&after, &layer) {
                return Ok(found);
            }
        }
        tracing::debug!(image = %image, attempt, "signature layer replaced by a concurrent writer; merging again");
        tokio::time::sleep(Duration::from_millis(super::jitter_ms(200))).await;
    }
    Err(AppendError::Conflict(MAX_ATTEMPTS))
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
