//! cosign's legacy `.att` tag: an image manifest at `sha256-<hex>.att` with
//! one DSSE envelope layer per attestation; the layer's annotations carry
//! an empty `dev.cosignproject.cosign/signature`, the unsigned
//! `predicateType`, and for keyless attestations the certificate, chain and
//! Rekor entry, as on `.sig` layers. Reading its layers into candidates,
//! and appending one (never dropping what is there).

use std::collections::BTreeMap;

use futures::StreamExt as _;

use super::collect::{Candidate, Collector};
use super::signers;
use super::statement::{DSSE_MEDIA_TYPE, LEGACY_PREDICATE_ANNOTATION};
use super::Source;
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::RegistryClient;
use crate::signature::bundle::Envelope;
use crate::signature::tag::{self, TagDocument, TagWriteError};
use crate::signature::{legacy, Listing, VerifyError, FETCH_CONCURRENCY, SIGNATURE_ANNOTATION};

/// The tag of the legacy attestation manifest of `digest`: `sha256-<hex>.att`.
pub fn attestation_tag(digest: &Digest) -> String {
    format!("{}.att", digest.tag_form())
}

/// The `.att` manifest of a digest as a tag document, with the layer a
/// writer adds to it.
pub(super) struct AttestationTag<'a> {
    pub(super) digest: &'a Digest,
    pub(super) layer: Option<Descriptor>,
}

impl TagDocument for AttestationTag<'_> {
    type Doc = ImageManifest;

    fn tag(&self) -> String {
        attestation_tag(self.digest)
    }

    fn media_type(&self) -> &'static str {
        oci::OCI_MANIFEST
    }

    fn parse(&self, image: &ImageRef, bytes: &[u8]) -> Result<ImageManifest, String> {
        serde_json::from_slice::<ImageManifest>(bytes).map_err(|err| {
            format!(
                "attestation manifest {}:{} is not an image manifest: {err}",
                image.name(),
                self.tag()
            )
        })
    }

    fn contains(&self, doc: &ImageManifest) -> bool {
        self.layer
            .as_ref()
            .is_some_and(|l| legacy::has_layer(doc, l))
    }

    fn merged(&self, existing: Option<&ImageManifest>) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let layer = self
            .layer
            .clone()
            .ok_or_else(|| "no attestation layer to add".to_string())?;
        let (manifest, config) = legacy::with_layer(existing, layer)
            .ok_or_else(|| "the attestation layer is already there".to_string())?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        Ok((bytes, vec![config]))
    }
}

/// The layer descriptor of an envelope: cosign's media type and
/// annotations (an empty signature annotation: the signature is inside the
/// envelope), plus `extra` (a keyless signer's certificate and log entry).
pub(super) fn attestation_layer(
    envelope: &[u8],
    predicate_type: &str,
    extra: &BTreeMap<String, String>,
) -> Descriptor {
    let mut annotations = extra.clone();
    annotations.insert(SIGNATURE_ANNOTATION.to_string(), String::new());
    annotations.insert(
        LEGACY_PREDICATE_ANNOTATION.to_string(),
        predicate_type.to_string(),
    );
    Descriptor {
        media_type: DSSE_MEDIA_TYPE.to_string(),
        digest: Digest::sha256(envelope),
        size: envelope.len() as u64,
        artifact_type: None,
        platform: None,
        annotations: Some(annotations),
    }
}

/// Appends the envelope as a layer of `digest`'s `.att` manifest.
pub(super) async fn append(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
    envelope: &[u8],
    layer: Descriptor,
) -> Result<Digest, TagWriteError> {
    client.put_blob(image, envelope).await?;
    let doc = AttestationTag {
        digest,
        layer: Some(layer),
    };
    tag::append(client, image, &doc).await
}

/// Reads the `.att` manifest and judges each of its envelopes.
pub(super) async fn collect(
    col: &Collector<'_>,
    client: &RegistryClient,
    image: &ImageRef,
) -> Result<(), VerifyError> {
    let doc = AttestationTag {
        digest: &col.digest,
        layer: None,
    };
    let manifest = match tag::read(client, image, &doc).await? {
        Listing::Absent => return Ok(()),
        Listing::Malformed(detail) => {
            let c = Candidate {
                source: Source::Legacy { layer: 0 },
                claimed: None,
                size: 0,
            };
            col.problem(&c, None, detail);
            return Ok(());
        }
        Listing::Found((_, manifest)) => manifest,
    };
    let limit = usize::try_from(col.wanted.limits.max_statement_bytes).unwrap_or(usize::MAX);
    let admitted: Vec<(Candidate, Descriptor)> = manifest
        .layers
        .into_iter()
        .enumerate()
        .filter(|(_, l)| l.media_type == DSSE_MEDIA_TYPE)
        .map(|(i, layer)| {
            let claimed = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_PREDICATE_ANNOTATION))
                .cloned();
            let c = Candidate {
                source: Source::Legacy { layer: i + 1 },
                claimed,
                size: layer.size,
            };
            (c, layer)
        })
        .collect();
    let admitted = col.admit(admitted);
    let mut fetches = futures::stream::iter(admitted.into_iter().map(|(c, layer)| async move {
        let blob = crate::signature::fetch_blob(client, image, &layer, limit).await;
        (c, layer, blob)
    }))
    .buffered(FETCH_CONCURRENCY);
    while let Some((c, layer, blob)) = fetches.next().await {
        match blob? {
            Ok(bytes) => judge(col, &c, &layer, &bytes),
            Err(problem) => col.problem(&c, None, super::bundles::blob_reason(problem)),
        }
    }
    Ok(())
}

fn judge(col: &Collector<'_>, c: &Candidate, layer: &Descriptor, bytes: &[u8]) {
    let envelope: Envelope = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(err) => {
            return col.problem(c, None, format!("the layer is not a DSSE envelope: {err}"))
        }
    };
    let payload = match envelope.in_toto_payload() {
        Ok(p) => p,
        Err(reason) => return col.problem(c, None, reason),
    };
    let annotations = legacy::layer_annotations(layer);
    let digest = col.digest.clone();
    col.consider(c, payload, &digest, |req| {
        signers::legacy_signer(bytes, &envelope, &annotations, &digest, req)
    });
}
