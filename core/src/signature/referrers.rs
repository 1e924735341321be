//! Bundles in the registry: discovering them through the OCI referrers API or,
//! where the registry lacks it, the referrers tag schema (an index at tag
//! `sha256-<hex>`); and attaching a new one.
//!
//! Entries are selected by fetching each referrer manifest and looking at its
//! layer media type: the `artifactType` in referrers indexes is unreliable
//! (empty on ghcr.io, the empty-config type in older cosign 3.x indexes).

use std::time::Duration;

use super::bundle::{self, append_referrer, is_bundle_media_type, referrer_descriptor};
use super::check;
use super::requirements::SignatureId;
use super::verify::{fetch_blob, Collection, Found};
use super::Format;
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// How long a writer of the tag-schema index waits before checking that its
/// entry stuck (see `legacy.rs` for why).
const SETTLE: Duration = Duration::from_millis(150);

/// The referrers of `digest`: from the API when the registry has it, else the
/// tag-schema index (`None` when neither exists). `Err(String)`: the tag
/// holds something that is not an index.
async fn referrer_index(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Result<Option<ImageIndex>, String>, RegistryError> {
    if let Some(index) = client.referrers(image, digest).await? {
        return Ok(Ok(Some(index)));
    }
    tag_index(client, image, digest).await
}

/// The index at the tag-schema tag `sha256-<hex>`.
async fn tag_index(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Result<Option<ImageIndex>, String>, RegistryError> {
    match client.get_manifest(image, &digest.tag_form()).await {
        Ok(fetched) => Ok(serde_json::from_slice::<ImageIndex>(&fetched.bytes)
            .map(Some)
            .map_err(|err| {
                format!(
                    "referrers tag {}:{} is not an image index: {err}",
                    image.name(),
                    digest.tag_form()
                )
            })),
        Err(RegistryError::NotFound { .. }) => Ok(Ok(None)),
        Err(err) => Err(err),
    }
}

/// A referrer manifest that carries a bundle layer: the manifest's digest and
/// the layer descriptor. `None` for other artifacts (SBOMs, other tools).
async fn bundle_layer(
    client: &RegistryClient,
    image: &ImageRef,
    entry: &Descriptor,
) -> Result<Option<(Digest, Descriptor)>, RegistryError> {
    if oci::is_index(&entry.media_type) {
        return Ok(None);
    }
    let fetched = match client.get_manifest(image, entry.digest.as_str()).await {
        Ok(f) => f,
        // Listed but gone (garbage-collected) or not what it claims: not a
        // signature we can use; the remaining entries still count.
        Err(err) if super::content_problem(&err) => {
            tracing::debug!(image = %image, referrer = %entry.digest, error = %err, "skipping unreadable referrer");
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&fetched.bytes) else {
        return Ok(None);
    };
    Ok(manifest
        .layers
        .into_iter()
        .find(|l| is_bundle_media_type(&l.media_type))
        .map(|l| (fetched.digest, l)))
}

/// Collects the cosign signature bundles attached to `digest`. Attestations
/// (other predicate types) are skipped.
pub(crate) async fn collect(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Collection {
    let lookup = referrer_index(client, image, digest).await;
    let index = match Collection::from_listing(lookup.map(Result::transpose)) {
        Ok(index) => index,
        Err(done) => return done,
    };
    let mut out = Collection::default();
    let mut seen = std::collections::BTreeSet::new();
    for entry in index
        .manifests
        .iter()
        .filter(|e| seen.insert(e.digest.clone()))
    {
        let layer = match bundle_layer(client, image, entry).await {
            Ok(Some((_, layer))) => layer,
            Ok(None) => continue,
            Err(err) => {
                out.error = Some(err);
                break;
            }
        };
        let id = SignatureId {
            index: out.found.len() + 1,
            format: Format::Bundle,
        };
        match fetch_blob(client, image, &layer.digest, id).await {
            Ok(Ok(bytes)) if check::is_signature_bundle(&bytes) => out.found.push(Found::Bundle {
                index: id.index,
                bundle: bytes,
            }),
            Ok(Ok(_)) => {}
            Ok(Err(unmet)) => out.found.push(Found::Unusable(unmet)),
            Err(err) => {
                out.error = Some(err);
                break;
            }
        }
    }
    out
}

/// Why attaching a bundle failed.
#[derive(Debug)]
pub(crate) enum AttachError {
    Registry(RegistryError),
    /// The tag-schema tag holds something that is not an index; left alone.
    Malformed(String),
    /// Concurrent writers kept replacing the tag-schema index.
    Conflict(u32),
}

impl From<RegistryError> for AttachError {
    fn from(err: RegistryError) -> Self {
        AttachError::Registry(err)
    }
}

/// Attaches `bundle_bytes` to `subject` (the image's descriptor): pushes the
/// blobs and the artifact manifest by digest, then, when the registry has no
/// referrers API, adds it to the tag-schema index. An identical bundle
/// already attached is not attached again. Returns the artifact manifest digest.
pub(crate) async fn attach(
    client: &RegistryClient,
    image: &ImageRef,
    subject: Descriptor,
    bundle_bytes: &[u8],
    created: &str,
) -> Result<Digest, AttachError> {
    let bundle_digest = Digest::sha256(bundle_bytes);
    let supports_api = match client.referrers(image, &subject.digest).await? {
        Some(index) => {
            if let Some(found) = find_bundle(client, image, &index, &bundle_digest).await? {
                return Ok(found);
            }
            true
        }
        None => false,
    };
    if !supports_api {
        if let Ok(Some(index)) = tag_index(client, image, &subject.digest).await? {
            if let Some(found) = find_bundle(client, image, &index, &bundle_digest).await? {
                return Ok(found);
            }
        }
    }
    client.put_blob(image, bundle_bytes).await?;
    client.put_blob(image, bundle::EMPTY_BLOB).await?;
    let manifest = bundle::build_attachment(bundle_bytes, subject.clone(), created);
    let bytes = serde_json::to_vec(&manifest).map_err(|e| AttachError::Malformed(e.to_string()))?;
    let manifest_digest = Digest::sha256(&bytes);
    client
        .put_manifest(image, manifest_digest.as_str(), oci::OCI_MANIFEST, &bytes)
        .await?;
    if supports_api {
        // The registry indexes the subject itself.
        return Ok(manifest_digest);
    }
    add_to_tag_index(
        client,
        image,
        &subject.digest,
        referrer_descriptor(&manifest, &bytes),
    )
    .await?;
    Ok(manifest_digest)
}

/// The referrer in `index` whose bundle layer is `bundle_digest`, if any.
async fn find_bundle(
    client: &RegistryClient,
    image: &ImageRef,
    index: &ImageIndex,
    bundle_digest: &Digest,
) -> Result<Option<Digest>, RegistryError> {
    for entry in &index.manifests {
        if let Some((manifest_digest, layer)) = bundle_layer(client, image, entry).await? {
            if layer.digest == *bundle_digest {
                return Ok(Some(manifest_digest));
            }
        }
    }
    Ok(None)
}

/// Appends `entry` to the tag-schema index of `subject`, keeping every entry
/// already there, re-reading to survive concurrent writers.
async fn add_to_tag_index(
    client: &RegistryClient,
    image: &ImageRef,
    subject: &Digest,
    entry: Descriptor,
) -> Result<(), AttachError> {
    let tag = subject.tag_form();
    for attempt in 1..=super::legacy::MAX_ATTEMPTS {
        let current = tag_index(client, image, subject)
            .await?
            .map_err(AttachError::Malformed)?;
        let Some(index) = append_referrer(current, entry.clone()) else {
            return Ok(());
        };
        let bytes =
            serde_json::to_vec(&index).map_err(|e| AttachError::Malformed(e.to_string()))?;
        client
            .put_manifest(image, &tag, oci::OCI_INDEX, &bytes)
            .await?;
        tokio::time::sleep(SETTLE).await;
        if let Ok(Some(after)) = tag_index(client, image, subject).await? {
            if after.manifests.iter().any(|d| d.digest == entry.digest) {
                return Ok(());
            }
        }
        tracing::debug!(image = %image, attempt, "referrers index replaced by a concurrent writer; merging again");
        tokio::time::sleep(Duration::from_millis(super::jitter_ms(200))).await;
    }
    Err(AttachError::Conflict(super::legacy::MAX_ATTEMPTS))
}
