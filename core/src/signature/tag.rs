//! Reading and appending to a tag that lists signatures: the legacy `.sig`
//! manifest and the referrers tag-schema index share one read and one
//! read-merge-write-reread loop.
//!
//! Registries offer no compare-and-swap on tags, so appending is
//! read-merge-write followed by a re-read: if a concurrent writer replaced
//! ours, merge again (bounded). Entries already there are always kept, never
//! rewritten, and a tag holding something that does not parse is left alone.

use std::time::Duration;

use super::collect::Listing;
use crate::digest::Digest;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};

/// How often a writer merges again after a concurrent write lost its entry.
pub(crate) const MAX_ATTEMPTS: u32 = 8;
/// How long a writer waits after its write before checking that it stuck,
/// so a concurrent writer that read the tag earlier has landed its write:
/// at least this, and at least twice the writer's own read-to-write time
/// (a concurrent writer on the same registry and machine takes about as
/// long, and on a loaded machine a fixed wait lost signatures), at most
/// [`MAX_SETTLE`].
const SETTLE: Duration = Duration::from_millis(150);
/// The longest wait before the re-read.
const MAX_SETTLE: Duration = Duration::from_secs(5);

/// A document kept at a tag (the `.sig` manifest, the tag-schema index) and
/// the one entry a writer adds to it.
pub(crate) trait TagDocument {
    /// The parsed document.
    type Doc;
    /// The tag the document lives at.
    fn tag(&self) -> String;
    /// The media type it is pushed with.
    fn media_type(&self) -> &'static str;
    /// Parses the bytes at the tag; the error says what is wrong.
    fn parse(&self, image: &ImageRef, bytes: &[u8]) -> Result<Self::Doc, String>;
    /// True when `doc` already holds the entry.
    fn contains(&self, doc: &Self::Doc) -> bool;
    /// `existing` (or a new document) with the entry added: the bytes to
    /// push and the blobs they reference that must be uploaded first.
    fn merged(&self, existing: Option<&Self::Doc>) -> Result<(Vec<u8>, Vec<Vec<u8>>), String>;
}

/// Why appending to a tag failed.
#[derive(Debug)]
pub(crate) enum TagWriteError {
    Registry(RegistryError),
    /// The document at the tag does not parse; it is left alone.
    Malformed(String),
    /// Concurrent writers kept replacing the tag.
    Conflict(u32),
}

impl From<RegistryError> for TagWriteError {
    fn from(err: RegistryError) -> Self {
        TagWriteError::Registry(err)
    }
}

/// The document at `doc`'s tag: its digest and the parsed document.
pub(crate) async fn read<D: TagDocument>(
    client: &RegistryClient,
    image: &ImageRef,
    doc: &D,
) -> Result<Listing<(Digest, D::Doc)>, RegistryError> {
    match client.get_manifest(image, &doc.tag()).await {
        Ok(fetched) => Ok(match doc.parse(image, &fetched.bytes) {
            Ok(parsed) => Listing::Found((fetched.digest, parsed)),
            Err(detail) => Listing::Malformed(detail),
        }),
        Err(RegistryError::NotFound { .. }) => Ok(Listing::Absent),
        Err(err) => Err(err),
    }
}

/// How often a manifest push is tried when the registry refuses it with 400.
const PUSH_ATTEMPTS: u32 = 4;

/// Uploads `blobs`, then pushes the manifest `bytes` at `reference`.
///
/// Two signers of one image upload identical blobs (the empty config, the
/// same payload); while one is committing a blob, the registry may refuse
/// the other's manifest with 400 (`MANIFEST_BLOB_UNKNOWN`) although its own
/// upload found the blob present. Uploading again and re-pushing after a
/// short pause resolves it; a manifest that stays refused is an error.
pub(crate) async fn push(
    client: &RegistryClient,
    image: &ImageRef,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    blobs: &[Vec<u8>],
) -> Result<(), RegistryError> {
    let mut attempt = 1;
    loop {
        for blob in blobs {
            client.put_blob(image, blob).await?;
        }
        match client
            .put_manifest(image, reference, media_type, bytes)
            .await
        {
            Err(RegistryError::Status { status: 400, .. }) if attempt < PUSH_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 + jitter_ms(150))).await;
            }
            result => return result.map(|_| ()),
        }
    }
}

/// Adds `doc`'s entry to the document at its tag, keeping every entry
/// already there. Returns the digest of a document at the tag that holds
/// the entry.
pub(crate) async fn append<D: TagDocument>(
    client: &RegistryClient,
    image: &ImageRef,
    doc: &D,
) -> Result<Digest, TagWriteError> {
    let tag = doc.tag();
    for attempt in 1..=MAX_ATTEMPTS {
        let started = std::time::Instant::now();
        let existing = match read(client, image, doc).await? {
            Listing::Found((found, current)) if doc.contains(&current) => {
                // Already there: from an earlier identical write, or merged
                // in by a concurrent writer after ours was replaced.
                return Ok(found);
            }
            Listing::Found((_, current)) => Some(current),
            Listing::Malformed(detail) => return Err(TagWriteError::Malformed(detail)),
            Listing::Absent => None,
        };
        let (bytes, blobs) = doc
            .merged(existing.as_ref())
            .map_err(TagWriteError::Malformed)?;
        push(client, image, &tag, doc.media_type(), &bytes, &blobs).await?;
        tokio::time::sleep((started.elapsed() * 2).clamp(SETTLE, MAX_SETTLE)).await;
        if let Listing::Found((found, after)) = read(client, image, doc).await? {
            if doc.contains(&after) {
                return Ok(found);
            }
        }
        tracing::debug!(image = %image, tag, attempt, "tag replaced by a concurrent writer; merging again");
        tokio::time::sleep(Duration::from_millis(jitter_ms(200))).await;
    }
    Err(TagWriteError::Conflict(MAX_ATTEMPTS))
}

/// Small jitter (0..`max_ms`) for retry loops, so two concurrent writers do
/// not retry in lockstep. Not security relevant, so the clock is random enough.
fn jitter_ms(max_ms: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    let n =
        nanos ^ COUNTER.fetch_add(0x9e37_79b9, Ordering::Relaxed) ^ u64::from(std::process::id());
    n % max_ms.max(1)
}
