//! Bundles in the registry: discovering them through the OCI referrers API or,
//! where the registry lacks it, the referrers tag schema (an index at tag
//! `sha256-<hex>`); and attaching a new one.
//!
//! Entries are selected by fetching each referrer manifest and looking at its
//! layer media type: the `artifactType` in referrers indexes is unreliable
//! (empty on ghcr.io, the empty-config type in older cosign 3.x indexes).

use super::bundle::{self, append_referrer, is_bundle_media_type, referrer_descriptor};
use super::check;
use futures::{Stream, StreamExt as _};

use super::collect::{
    fetch_blob, Found, Listing, FETCH_CONCURRENCY, MAX_BUNDLE_SIZE, MAX_REFERRERS,
};
use super::requirements::{SignatureId, Unmet};
use super::tag::{self, TagDocument, TagWriteError};
use super::Format;
use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// The referrers of `digest`: from the API when the registry has it, else the
/// tag-schema index.
pub(crate) async fn index(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Listing<ImageIndex>, RegistryError> {
    match client.referrers_api_known(image) {
        Some(false) => tag_index(client, image, digest).await,
        Some(true) => match client.referrers(image, digest).await? {
            Some(index) => Ok(Listing::Found(index)),
            None => tag_index(client, image, digest).await,
        },
        // Not known yet: ask both at once, so that a registry without the
        // API costs no extra round trip; the API's answer wins and is
        // remembered for the next review.
        None => {
            let (api, tagged) = futures::join!(
                client.referrers(image, digest),
                tag_index(client, image, digest)
            );
            match api? {
                Some(index) => Ok(Listing::Found(index)),
                None => tagged,
            }
        }
    }
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

/// A referrer manifest that carries a Sigstore bundle layer.
#[derive(Debug, Clone)]
pub(crate) struct ReferrerBundle {
    /// The referrer manifest's digest.
    pub(crate) manifest: Digest,
    /// The bundle layer.
    pub(crate) layer: Descriptor,
    /// The referrer manifest's annotations (unsigned).
    pub(crate) annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// The bundle a referrer entry attaches, if it attaches one; `None` for
/// other artifacts (SBOMs, other tools) and for entries that are gone.
pub(crate) async fn referrer_bundle(
    client: &RegistryClient,
    image: &ImageRef,
    entry: &Descriptor,
) -> Result<Option<ReferrerBundle>, RegistryError> {
    if oci::is_index(&entry.media_type) {
        return Ok(None);
    }
    let fetched = match client.get_manifest(image, entry.digest.as_str()).await {
        Ok(f) => f,
        // Listed but gone (garbage-collected) or not what it claims: not a
        // signature we can use; the remaining entries still count.
        Err(err) if content_problem(&err) => {
            tracing::debug!(image = %image, referrer = %entry.digest, error = %err, "skipping unreadable referrer");
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&fetched.bytes) else {
        return Ok(None);
    };
    let annotations = manifest.annotations;
    Ok(manifest
        .layers
        .into_iter()
        .find(|l| is_bundle_media_type(&l.media_type))
        .map(|layer| ReferrerBundle {
            manifest: fetched.digest,
            layer,
            annotations,
        }))
}

/// The cosign signature bundles among the referrers in `index`, each read
/// as the stream is polled (referrer manifest, then bundle blob; at most
/// [`FETCH_CONCURRENCY`] referrers at a time, in index order), numbered in
/// that order. Attestations (other predicate types) and other artifacts are
/// skipped. At most [`MAX_REFERRERS`] are examined; when more are listed, the
/// first value says so.
pub(crate) fn signatures<'a>(
    client: &'a RegistryClient,
    image: &'a ImageRef,
    index: ImageIndex,
) -> (
    Option<Unmet>,
    impl Stream<Item = Result<Found, RegistryError>> + 'a,
) {
    let mut seen = std::collections::BTreeSet::new();
    let entries: Vec<Descriptor> = index
        .manifests
        .into_iter()
        .filter(|e| seen.insert(e.digest.clone()))
        .collect();
    let over = (entries.len() > MAX_REFERRERS).then_some(Unmet::TooManySignatures {
        format: Format::Bundle,
        listed: entries.len(),
        limit: MAX_REFERRERS,
    });
    let fetches = entries
        .into_iter()
        .take(MAX_REFERRERS)
        .map(move |entry| async move {
            let Some(found) = referrer_bundle(client, image, &entry).await? else {
                return Ok(None);
            };
            fetch_blob(client, image, &found.layer, MAX_BUNDLE_SIZE)
                .await
                .map(Some)
        });
    let found = futures::stream::iter(fetches)
        .buffered(FETCH_CONCURRENCY)
        .scan(0usize, |count, fetched| {
            let next = |count: &mut usize| {
                *count += 1;
                SignatureId {
                    index: *count,
                    format: Format::Bundle,
                }
            };
            let item = match fetched {
                Ok(None) => None,
                Ok(Some(Ok(bytes))) if check::is_signature_bundle(&bytes) => {
                    Some(Ok(Found::Bundle {
                        index: next(count).index,
                        bundle: bytes,
                    }))
                }
                Ok(Some(Ok(_))) => None,
                Ok(Some(Err(problem))) => Some(Ok(Found::Unusable(problem.unmet(next(count))))),
                Err(err) => Some(Err(err)),
            };
            futures::future::ready(Some(item))
        })
        .filter_map(futures::future::ready);
    (over, found)
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
    attach_with_predicate(
        client,
        image,
        subject,
        bundle_bytes,
        created,
        bundle::COSIGN_SIGN_PREDICATE,
    )
    .await
}

/// [`attach`] for a bundle whose statement has `predicate_type` (named,
/// unsigned, in the referrer manifest's annotations, as cosign does).
pub(crate) async fn attach_with_predicate(
    client: &RegistryClient,
    image: &ImageRef,
    subject: Descriptor,
    bundle_bytes: &[u8],
    created: &str,
    predicate_type: &str,
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
    let manifest =
        bundle::build_attachment_for(bundle_bytes, subject.clone(), created, predicate_type);
    let bytes =
        serde_json::to_vec(&manifest).map_err(|e| TagWriteError::Malformed(e.to_string()))?;
    let manifest_digest = Digest::sha256(&bytes);
    let blobs = [bundle_bytes.to_vec(), bundle::EMPTY_BLOB.to_vec()];
    tag::push(
        client,
        image,
        manifest_digest.as_str(),
        oci::OCI_MANIFEST,
        &bytes,
        &blobs,
    )
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
        if let Some(found) = referrer_bundle(client, image, entry).await? {
            if found.layer.digest == *bundle_digest {
                return Ok(Some(found.manifest));
            }
        }
    }
    Ok(None)
}

/// A registry error worth treating as "this signature is broken" rather than
/// "the registry failed": content that does not hash right, or is missing.
fn content_problem(err: &RegistryError) -> bool {
    matches!(
        err,
        RegistryError::DigestMismatch { .. } | RegistryError::NotFound { .. }
    )
}
