//! Bundles in the registry: discovering them through the OCI referrers API or,
//! where the registry lacks it, the referrers tag schema (an index at tag
//! `sha256-<hex>`); and attaching a new one.
//!
//! Entries are selected by fetching each referrer manifest and looking at its
//! layer media type: the `artifactType` in referrers indexes is unreliable
//! (empty on ghcr.io, the empty-config type in older cosign 3.x indexes).

use super::bundle::{self, append_referrer, is_bundle_media_type, referrer_descriptor};
use super::check;
use super::collect::{fetch_blob, Collection, Found, Listing};
use super::requirements::SignatureId;
use super::tag::{self, TagDocument, TagWriteError};
use super::Format;
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// The referrers of `digest`: from the API when the registry has it, else the
/// tag-schema index.
async fn referrer_index(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Listing<ImageIndex>, RegistryError> {
    if let Some(index) = client.referrers(image, digest).await? {
        return Ok(Listing::Found(index));
    }
    tag_index(client, image, digest).await
}

/// The tag-schema index of a subject (`sha256-<hex>`) as a tag document,
/// with the referrer a writer adds to it.
struct IndexTag<'a> {
    subject: &'a Digest,
    entry: Option<Descriptor>,
}

impl TagDocument for IndexTag<'_> {
    type Doc = ImageIndex;

    fn tag(&self) -> String {
        self.subject.tag_form()
    }

    fn media_type(&self) -> &'static str {
        oci::OCI_INDEX
    }

    fn parse(&self, image: &ImageRef, bytes: &[u8]) -> Result<ImageIndex, String> {
        serde_json::from_slice::<ImageIndex>(bytes).map_err(|err| {
            format!(
                "referrers tag {}:{} is not an image index: {err}",
                image.name(),
                self.tag()
            )
        })
    }

    fn contains(&self, doc: &ImageIndex) -> bool {
        self.entry
            .as_ref()
            .is_some_and(|e| doc.manifests.iter().any(|d| d.digest == e.digest))
    }

    fn merged(&self, existing: Option<&ImageIndex>) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        let entry = self
            .entry
            .clone()
            .ok_or_else(|| "no referrer to add".to_string())?;
        let index = append_referrer(existing.cloned(), entry)
            .ok_or_else(|| "the referrer is already listed".to_string())?;
        let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
        Ok((bytes, Vec::new()))
    }
}

/// The index at the tag-schema tag `sha256-<hex>`.
async fn tag_index(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Listing<ImageIndex>, RegistryError> {
    let doc = IndexTag {
        subject: digest,
        entry: None,
    };
    Ok(tag::read(client, image, &doc)
        .await?
        .map(|(_, index)| index))
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
    let index = match Collection::from_listing(referrer_index(client, image, digest).await) {
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
) -> Result<Digest, TagWriteError> {
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
        if let Listing::Found(index) = tag_index(client, image, &subject.digest).await? {
            if let Some(found) = find_bundle(client, image, &index, &bundle_digest).await? {
                return Ok(found);
            }
        }
    }
    client.put_blob(image, bundle_bytes).await?;
    client.put_blob(image, bundle::EMPTY_BLOB).await?;
    let manifest = bundle::build_attachment(bundle_bytes, subject.clone(), created);
    let bytes =
        serde_json::to_vec(&manifest).map_err(|e| TagWriteError::Malformed(e.to_string()))?;
    let manifest_digest = Digest::sha256(&bytes);
    client
        .put_manifest(image, manifest_digest.as_str(), oci::OCI_MANIFEST, &bytes)
        .await?;
    if supports_api {
        // The registry indexes the subject itself.
        return Ok(manifest_digest);
    }
    let doc = IndexTag {
        subject: &subject.digest,
        entry: Some(referrer_descriptor(&manifest, &bytes)),
    };
    tag::append(client, image, &doc).await?;
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
