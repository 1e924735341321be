//! Sigstore bundles attached as referrers (cosign v3's `attest`, GitHub's
//! `attest-build-provenance` with `push-to-registry`): the referrers
//! listing (API or tag schema, the same listing signatures read), each
//! entry's manifest, its bundle layer, the DSSE envelope inside.
//!
//! The unsigned predicate type annotation (on the listing's entries, as OCI
//! 1.1 copies manifest annotations there, and on the manifest) only decides
//! what is not read: image signatures and unwanted types are skipped
//! without fetching their bundles.

use std::future::Future;

use futures::StreamExt as _;

use super::collect::{Candidate, Collector};
use super::signers;
use super::statement::BUNDLE_PREDICATE_ANNOTATION;
use super::Source;
use crate::oci::{Descriptor, ImageIndex};
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};
use crate::signature::bundle;
use crate::signature::{BlobProblem, Listing, VerifyError, FETCH_CONCURRENCY};

/// Why a blob was not read, in words.
pub(super) fn blob_reason(problem: BlobProblem) -> String {
    match problem {
        BlobProblem::Mismatch(digest) => format!("blob {digest} does not match its descriptor"),
        BlobProblem::Missing(digest) => format!("blob {digest} is missing from the registry"),
        BlobProblem::TooLarge { digest, limit, .. } => {
            format!("blob {digest} is larger than the {limit} bytes announced or allowed")
        }
    }
}

fn claimed(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Option<String> {
    annotations
        .and_then(|a| a.get(BUNDLE_PREDICATE_ANNOTATION))
        .cloned()
}

/// Reads the bundles listed as referrers and judges each.
pub(super) async fn collect(
    col: &Collector<'_>,
    client: &RegistryClient,
    image: &ImageRef,
    listing: impl Future<Output = Result<Listing<ImageIndex>, RegistryError>>,
) -> Result<(), VerifyError> {
    let index = match listing.await? {
        Listing::Absent => return Ok(()),
        Listing::Malformed(detail) => {
            let c = Candidate {
                source: Source::Referrers,
                claimed: None,
                size: 0,
            };
            col.problem(&c, None, detail);
            return Ok(());
        }
        Listing::Found(index) => index,
    };
    let mut seen = std::collections::BTreeSet::new();
    let entries: Vec<Descriptor> = index
        .manifests
        .into_iter()
        .filter(|e| seen.insert(e.digest.clone()))
        .filter(|e| claimed(e.annotations.as_ref()).is_none_or(|t| col.wanted.wants(&t)))
        .collect();
    // Each entry costs a manifest request before any cap on statements can
    // apply: more entries than statements may be read is itself over it.
    if col.listing_over_cap(entries.len()) {
        return Ok(());
    }
    let limit = usize::try_from(col.wanted.limits.max_statement_bytes).unwrap_or(usize::MAX);
    let mut fetches = futures::stream::iter(entries.into_iter().map(|entry| async move {
        let Some(found) = crate::signature::referrer_bundle(client, image, &entry).await? else {
            return Ok(None);
        };
        let c = Candidate {
            source: Source::Bundle {
                referrer: found.manifest.clone(),
            },
            claimed: claimed(found.annotations.as_ref()),
            size: found.layer.size,
        };
        let Some((c, ())) = col.admit(vec![(c, ())]).pop() else {
            return Ok(None);
        };
        let blob = crate::signature::fetch_blob(client, image, &found.layer, limit).await?;
        Ok::<_, RegistryError>(Some((c, blob)))
    }))
    .buffered(FETCH_CONCURRENCY);
    while let Some(item) = fetches.next().await {
        match item? {
            None => {}
            Some((c, Ok(bytes))) => judge(col, &c, &bytes),
            Some((c, Err(problem))) => col.problem(&c, None, blob_reason(problem)),
        }
    }
    Ok(())
}

fn judge(col: &Collector<'_>, c: &Candidate, bytes: &[u8]) {
    let parsed = match bundle::parse_bundle(bytes) {
        Ok(b) => b,
        Err(reason) => return col.problem(c, None, reason),
    };
    let Some(envelope) = &parsed.dsse_envelope else {
        // A message-signature bundle signs a blob, not a statement.
        if c.claimed.is_some() {
            col.problem(c, None, "the bundle holds no DSSE envelope".to_string());
        }
        return;
    };
    let payload = match envelope.in_toto_payload() {
        Ok(p) => p,
        Err(reason) => return col.problem(c, None, reason),
    };
    let digest = col.digest.clone();
    col.consider(c, payload, &digest, |req| {
        signers::bundle_signer(bytes, &parsed, envelope, &digest, req)
    });
}
