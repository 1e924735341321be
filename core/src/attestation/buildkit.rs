//! BuildKit's attestation manifests inside an image index: entries with
//! `vnd.docker.reference.type: attestation-manifest` (platform
//! `unknown/unknown`) naming the platform manifest they describe in
//! `vnd.docker.reference.digest`. Two forms: an image manifest with an
//! image config (BuildKit before v0.32), and an OCI artifact with an empty
//! config and `subject` (since). Each `application/vnd.in-toto+json` layer
//! is one bare statement.
//!
//! Nothing in them is signed. A statement counts when the attestation
//! manifest's own digest carries a signature (`.sig` or bundle, verified
//! by `crate::signature::verify`) by a signer the attestation accepts,
//! its subject names the platform manifest the index entry says it
//! describes, and that manifest is a member of the index checked.

use futures::StreamExt as _;

use super::collect::{Candidate, Collector};
use super::signers::{Refusal, Signer};
use super::statement::{
    BUILDKIT_ATTESTATION_MANIFEST, BUILDKIT_PREDICATE_ANNOTATION, BUILDKIT_REFERENCE_DIGEST,
    BUILDKIT_REFERENCE_TYPE, IN_TOTO_MEDIA_TYPE,
};
use super::Source;
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};
use crate::signature::{self, Requirements, Verdict, VerifyError, FETCH_CONCURRENCY};

fn annotation<'a>(d: &'a Descriptor, key: &str) -> Option<&'a str> {
    d.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The attestation manifests of `index`, each with the platform manifest
/// it names (`None` when the entry names none or no valid digest).
pub fn attestation_manifests(index: &ImageIndex) -> Vec<(Descriptor, Option<Digest>)> {
    index
        .manifests
        .iter()
        .filter(|d| annotation(d, BUILDKIT_REFERENCE_TYPE) == Some(BUILDKIT_ATTESTATION_MANIFEST))
        .map(|d| {
            let about =
                annotation(d, BUILDKIT_REFERENCE_DIGEST).and_then(|s| Digest::parse(s).ok());
            (d.clone(), about)
        })
        .collect()
}

/// What `imgate sign --attestations` signs besides an image: the
/// attestation manifests of its index (none when it is not an index).
pub fn buildkit_targets(resolved: &crate::registry::Resolved) -> Vec<ImageRef> {
    if !oci::is_index(&resolved.manifest.media_type) {
        return Vec::new();
    }
    serde_json::from_slice::<ImageIndex>(&resolved.manifest.bytes)
        .map(|index| {
            attestation_manifests(&index)
                .into_iter()
                .map(|(d, _)| resolved.pinned.at_digest(d.digest))
                .collect()
        })
        .unwrap_or_default()
}

/// The platform manifests of `index` (its entries that are not attestation manifests).
fn platforms(index: &ImageIndex) -> Vec<Digest> {
    index
        .manifests
        .iter()
        .filter(|d| annotation(d, BUILDKIT_REFERENCE_TYPE) != Some(BUILDKIT_ATTESTATION_MANIFEST))
        .map(|d| d.digest.clone())
        .collect()
}

/// Reads the image's index (if it is one) and judges the statements of
/// each attestation manifest.
pub(super) async fn collect(
    col: &Collector<'_>,
    client: &RegistryClient,
    image: &ImageRef,
) -> Result<(), VerifyError> {
    let fetched = match client.get_manifest(image, col.digest.as_str()).await {
        Ok(f) => f,
        // The signature side reports a missing image; here nothing is found.
        Err(RegistryError::NotFound { .. }) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    if !oci::is_index(&fetched.media_type) {
        return Ok(());
    }
    let Ok(index) = serde_json::from_slice::<ImageIndex>(&fetched.bytes) else {
        // resolve and the admission engine report a malformed index.
        return Ok(());
    };
    let members = platforms(&index);
    col.set_platforms(members.clone());
    let manifests = attestation_manifests(&index);
    if col.listing_over_cap(manifests.len()) {
        return Ok(());
    }
    let members = &members;
    let mut each = futures::stream::iter(manifests.into_iter().map(|(entry, about)| async move {
        read_one(col, client, image, &entry, about, members).await
    }))
    .buffered(FETCH_CONCURRENCY);
    while let Some(done) = each.next().await {
        done?;
    }
    Ok(())
}

/// Who signed the attestation manifest `manifest`, under each signer set.
async fn signers(
    col: &Collector<'_>,
    client: &RegistryClient,
    image: &ImageRef,
    manifest: &Digest,
) -> Result<Vec<(std::sync::Arc<Requirements>, Result<Signer, Refusal>)>, VerifyError> {
    let target = image.at_digest(manifest.clone());
    let sets = col.signer_sets(None);
    let verdicts = futures::future::join_all(
        sets.iter()
            .map(|(set, _)| signature::verify(client, &target, set)),
    )
    .await;
    let mut out = Vec::with_capacity(sets.len());
    for ((set, _), verdict) in sets.into_iter().zip(verdicts) {
        let judged = match verdict? {
            Verdict::Verified(v) => Ok(Signer::from_verdict_name(&v.key, &set)),
            Verdict::Denied { unmet, .. } => Err(format!(
                "the BuildKit attestation manifest {manifest} carries no signature an allowed signer made ({})",
                unmet
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        };
        out.push((set, judged));
    }
    Ok(out)
}

async fn read_one(
    col: &Collector<'_>,
    client: &RegistryClient,
    image: &ImageRef,
    entry: &Descriptor,
    about: Option<Digest>,
    members: &[Digest],
) -> Result<(), VerifyError> {
    let manifest_digest = &entry.digest;
    let whole = Candidate {
        source: Source::Buildkit {
            manifest: manifest_digest.clone(),
            layer: 0,
        },
        claimed: None,
        size: 0,
    };
    let Some(about) = about.filter(|a| members.contains(a)) else {
        col.problem(
            &whole,
            None,
            format!("the index entry names no platform manifest of the index in {BUILDKIT_REFERENCE_DIGEST}"),
        );
        return Ok(());
    };
    let (signed, fetched) = futures::join!(
        signers(col, client, image, manifest_digest),
        client.get_manifest(image, manifest_digest.as_str())
    );
    let signed = signed?;
    let fetched = match fetched {
        Ok(f) => f,
        Err(err)
            if matches!(
                err,
                RegistryError::NotFound { .. } | RegistryError::DigestMismatch { .. }
            ) =>
        {
            col.problem(&whole, None, err.to_string());
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    let manifest: ImageManifest = match serde_json::from_slice(&fetched.bytes) {
        Ok(m) => m,
        Err(err) => {
            col.problem(&whole, None, format!("not an image manifest: {err}"));
            return Ok(());
        }
    };
    if let Some(subject) = &manifest.subject {
        if subject.digest != about {
            col.problem(
                &whole,
                None,
                format!(
                    "its subject is {}, but the index says it describes {about}",
                    subject.digest
                ),
            );
            return Ok(());
        }
    }
    let limit = usize::try_from(col.wanted.limits.max_statement_bytes).unwrap_or(usize::MAX);
    let admitted: Vec<(Candidate, Descriptor)> = manifest
        .layers
        .into_iter()
        .enumerate()
        .filter(|(_, l)| l.media_type == IN_TOTO_MEDIA_TYPE)
        .map(|(i, layer)| {
            let c = Candidate {
                source: Source::Buildkit {
                    manifest: manifest_digest.clone(),
                    layer: i + 1,
                },
                claimed: annotation(&layer, BUILDKIT_PREDICATE_ANNOTATION).map(str::to_string),
                size: layer.size,
            };
            (c, layer)
        })
        .collect();
    let admitted = col.admit(admitted);
    let signed = &signed;
    let about = &about;
    let mut fetches = futures::stream::iter(admitted.into_iter().map(|(c, layer)| async move {
        let blob = crate::signature::fetch_blob(client, image, &layer, limit).await;
        (c, blob)
    }))
    .buffered(FETCH_CONCURRENCY);
    while let Some((c, blob)) = fetches.next().await {
        match blob? {
            Ok(bytes) => col.consider(&c, bytes, about, |req| {
                signed
                    .iter()
                    .find(|(set, _)| std::ptr::eq(std::sync::Arc::as_ptr(set), req))
                    .map(|(_, judged)| judged.clone())
                    .unwrap_or_else(|| Err("no signer set".to_string()))
            }),
            Err(problem) => col.problem(&c, None, super::bundles::blob_reason(problem)),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const INDEX: &[u8] = include_bytes!("../../../fixtures/buildkit/image-index.json");

    #[test]
    fn finds_the_attestation_manifest_of_buildkits_index() {
        let index: ImageIndex = serde_json::from_slice(INDEX).unwrap();
        let found = attestation_manifests(&index);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].0.digest.as_str(),
            "sha256:02cb9aa7600e73fcf41ee9f0f19cc03122b2d8be43d41ce4b21335118f5dd943"
        );
        assert_eq!(
            found[0].1.as_ref().unwrap().as_str(),
            "sha256:23678f31b3b3586c4fb318aecfe64a96a1f0916ba8faf9b2be2abee63fa9e827"
        );
        assert_eq!(
            platforms(&index),
            vec![Digest::parse(
                "sha256:23678f31b3b3586c4fb318aecfe64a96a1f0916ba8faf9b2be2abee63fa9e827"
            )
            .unwrap()]
        );
    }

    #[test]
    fn reads_both_forms_of_the_attestation_manifest() {
        for bytes in [
            &include_bytes!("../../../fixtures/buildkit/attestation-manifest.json")[..],
            &include_bytes!("../../../fixtures/buildkit/legacy-attestation-manifest.json")[..],
        ] {
            let m: ImageManifest = serde_json::from_slice(bytes).unwrap();
            let layer = &m.layers[0];
            assert_eq!(layer.media_type, IN_TOTO_MEDIA_TYPE);
            assert_eq!(
                annotation(layer, BUILDKIT_PREDICATE_ANNOTATION),
                Some("https://spdx.dev/Document")
            );
        }
    }
}
