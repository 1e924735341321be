//! [`collect`] and [`verify_with_signature`]: the three stores read at
//! once into one [`Evidence`], each candidate statement judged the same way
//! (`Collector::consider`), the caps kept across stores.
//!
//! Fail closed: a candidate whose blob is missing, does not hash to its
//! descriptor, does not parse, is signed by nobody allowed or is about
//! another digest is a [`Problem`], never a statement; a registry failure
//! is an error the caller maps through its `onRegistryError`.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt as _;

use super::signers::{Refusal, Signer};
use super::statement::{self, Header};
use super::{
    buildkit, bundles, legacy, Cap, CapExceeded, Evidence, Problem, Source, VerifiedStatement,
    Wanted,
};
use crate::digest::Digest;
use crate::oci::ImageIndex;
use crate::reference::ImageRef;
use crate::registry::{RegistryClient, RegistryError};
use crate::signature::{self, Requirements, Verdict, VerifyError};

/// A statement found in a store, before it is read.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) source: Source,
    /// The predicate type its unsigned annotation claims.
    pub(crate) claimed: Option<String>,
    /// Its size as its descriptor announces it.
    pub(crate) size: u64,
}

/// The state one collection shares across the stores it reads at once.
pub(crate) struct Collector<'a> {
    pub(crate) digest: Digest,
    pub(crate) wanted: &'a Wanted,
    evidence: Mutex<Evidence>,
    counted: Mutex<(u64, u64)>,
}

impl<'a> Collector<'a> {
    fn new(digest: Digest, wanted: &'a Wanted) -> Collector<'a> {
        Collector {
            evidence: Mutex::new(Evidence::empty(digest.clone())),
            digest,
            wanted,
            counted: Mutex::new((0, 0)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Evidence) -> T) -> T {
        // A poisoned lock means a panic elsewhere in this collection; the
        // evidence it guards is still consistent (each push is atomic).
        let mut guard = self
            .evidence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn set_platforms(&self, platforms: Vec<Digest>) {
        self.with(|e| e.platforms = platforms);
    }

    pub(crate) fn problem(&self, c: &Candidate, predicate_type: Option<String>, reason: String) {
        let problem = Problem {
            source: c.source.clone(),
            claimed: c.claimed.clone(),
            predicate_type,
            reason,
        };
        self.with(|e| e.problems.push(problem));
    }

    pub(crate) fn over_cap(&self, cap: Cap, limit: u64, found: u64, source: Option<Source>) {
        self.with(|e| {
            // One report per cap is enough (per statement for sizes).
            if !e
                .over_caps
                .iter()
                .any(|o| o.cap == cap && (cap != Cap::StatementBytes || o.source == source))
            {
                e.over_caps.push(CapExceeded {
                    cap,
                    limit,
                    found,
                    source,
                });
            }
        });
    }

    /// Whether a listing of `listed` entries, each a request before any
    /// statement is read, is already over the statements cap (recorded
    /// when it is).
    pub(crate) fn listing_over_cap(&self, listed: usize) -> bool {
        let max = self.wanted.limits.max_statements;
        if listed <= max {
            return false;
        }
        self.over_cap(Cap::Statements, max as u64, listed as u64, None);
        true
    }

    /// The candidates of one listing to read: not those whose annotation
    /// claims a type no requirement wants (the claim may lie; skipping only
    /// ever loses a statement), and none when the listing holds more than
    /// the statements an image may have, or when reading one would go over
    /// a cap (each recorded, and a denial).
    pub(crate) fn admit<T>(&self, listed: Vec<(Candidate, T)>) -> Vec<(Candidate, T)> {
        let limits = &self.wanted.limits;
        let wanted: Vec<(Candidate, T)> = listed
            .into_iter()
            .filter(|(c, _)| c.claimed.as_deref().is_none_or(|t| self.wanted.wants(t)))
            .collect();
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let statements = counted.0 + wanted.len() as u64;
        if statements > limits.max_statements as u64 {
            drop(counted);
            self.over_cap(
                Cap::Statements,
                limits.max_statements as u64,
                statements,
                None,
            );
            return Vec::new();
        }
        counted.0 = statements;
        let mut admitted = Vec::with_capacity(wanted.len());
        let mut over = Vec::new();
        for (c, item) in wanted {
            if c.size > limits.max_statement_bytes {
                over.push((
                    Cap::StatementBytes,
                    limits.max_statement_bytes,
                    c.size,
                    Some(c.source.clone()),
                ));
                continue;
            }
            let bytes = counted.1 + c.size;
            if bytes > limits.max_total_bytes {
                over.push((Cap::TotalBytes, limits.max_total_bytes, bytes, None));
                continue;
            }
            counted.1 = bytes;
            admitted.push((c, item));
        }
        drop(counted);
        for (cap, limit, found, source) in over {
            self.over_cap(cap, limit, found, source);
        }
        admitted
    }

    /// The distinct signer sets of the requirements wanting `predicate_type`,
    /// each with the indices it serves.
    pub(crate) fn signer_sets(
        &self,
        predicate_type: Option<&str>,
    ) -> Vec<(Arc<Requirements>, Vec<usize>)> {
        let mut sets: Vec<(Arc<Requirements>, Vec<usize>)> = Vec::new();
        for (i, w) in self.wanted.attestations.iter().enumerate() {
            if predicate_type.is_some_and(|t| t != w.predicate_type) {
                continue;
            }
            match sets.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &w.signers)) {
                Some((_, indices)) => indices.push(i),
                None => sets.push((Arc::clone(&w.signers), vec![i])),
            }
        }
        sets
    }

    /// Judges one statement: `payload` is the statement as signed, `about`
    /// the digest its subject must name, `verify` answers who signed it
    /// under a signer set (or why nobody allowed did).
    pub(crate) fn consider(
        &self,
        c: &Candidate,
        payload: Vec<u8>,
        about: &Digest,
        verify: impl Fn(&Requirements) -> Result<Signer, Refusal>,
    ) {
        let header = match statement::header(&payload) {
            Ok(h) => h,
            Err(reason) => return self.problem(c, None, reason),
        };
        let found = Some(header.predicate_type.clone());
        let sets = self.signer_sets(Some(&header.predicate_type));
        if sets.is_empty() {
            if let Some(claimed) = &c.claimed {
                self.problem(
                    c,
                    found,
                    format!(
                        "its annotation claims predicate type {claimed}, but the statement inside is {}",
                        header.predicate_type
                    ),
                );
            }
            return;
        }
        let mut accepted = Vec::new();
        let mut signer = None;
        let mut refusals = Vec::new();
        for (set, indices) in &sets {
            match verify(set) {
                Ok(s) => {
                    accepted.extend(indices.iter().copied());
                    signer.get_or_insert(s);
                }
                Err(reason) => {
                    if !refusals.contains(&reason) {
                        refusals.push(reason);
                    }
                }
            }
        }
        let Some(signer) = signer else {
            return self.problem(c, found, refusals.join("; "));
        };
        self.accept(c, header, payload, about, signer, accepted);
    }

    fn accept(
        &self,
        c: &Candidate,
        header: Header,
        payload: Vec<u8>,
        about: &Digest,
        signer: Signer,
        mut accepted: Vec<usize>,
    ) {
        let found = Some(header.predicate_type.clone());
        let Some(subject) = header.subject_naming(about) else {
            return self.problem(
                c,
                found,
                format!(
                    "the statement is about {}, not {about}",
                    header.subject_digests()
                ),
            );
        };
        let subject = subject.clone();
        accepted.sort_unstable();
        let verified = VerifiedStatement {
            source: c.source.clone(),
            predicate_type: header.predicate_type,
            about: about.clone(),
            signer,
            accepted,
            subject,
            payload: payload.into(),
            inputs: Arc::default(),
        };
        self.with(|e| e.statements.push(verified));
    }

    fn finish(self) -> Evidence {
        let mut evidence = self
            .evidence
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The stores answer concurrently; a stable order makes reports and
        // "the first statement that satisfies" reproducible.
        let order = |s: &Source| match s {
            Source::Legacy { layer } => (0, String::new(), *layer),
            Source::Referrers => (1, String::new(), 0),
            Source::Bundle { referrer } => (1, referrer.to_string(), 0),
            Source::Buildkit { manifest, layer } => (2, manifest.to_string(), *layer),
        };
        evidence.statements.sort_by_key(|s| order(&s.source));
        evidence.problems.sort_by_key(|p| order(&p.source));
        evidence
    }
}

/// The sha256 digest `image` is pinned to, or why there is nothing to read.
fn pinned(image: &ImageRef) -> Result<Result<Digest, Evidence>, VerifyError> {
    let Some(digest) = image.digest.clone() else {
        return Err(VerifyError::NotPinned {
            image: image.to_string(),
        });
    };
    if digest.algorithm() != "sha256" {
        // The stores are keyed by sha256 tags; nothing can be found, which
        // is an answer (no statements), not a failure.
        return Ok(Err(Evidence::empty(digest)));
    }
    Ok(Ok(digest))
}

/// The attestations of `image` (pinned by digest) that `wanted` looks for,
/// read from all three stores at once. See the module docs of
/// `crate::attestation` for what counts.
pub async fn collect(
    client: &RegistryClient,
    image: &ImageRef,
    wanted: &Wanted,
) -> Result<Evidence, VerifyError> {
    let digest = match pinned(image)? {
        Ok(d) => d,
        Err(nothing) => return Ok(nothing),
    };
    if wanted.attestations.is_empty() {
        return Ok(Evidence::empty(digest));
    }
    let referrers = crate::signature::referrers_index(client, image, &digest);
    gather(client, image, digest.clone(), wanted, referrers).await
}

/// The image's signature verdict under `req` and its attestations under
/// `wanted`, from one round of registry requests: the `.sig` tag, the
/// `.att` tag, the referrers listing (asked once, shared by both) and the
/// image's manifest (for BuildKit's attestations) are all asked for at once.
pub async fn verify_with_signature(
    client: &RegistryClient,
    image: &ImageRef,
    req: &Requirements,
    wanted: &Wanted,
) -> Result<(Verdict, Evidence), VerifyError> {
    let digest = match pinned(image)? {
        Ok(d) => d,
        Err(nothing) => return Ok((signature::verify(client, image, req).await?, nothing)),
    };
    if wanted.attestations.is_empty() {
        let verdict = signature::verify(client, image, req).await?;
        return Ok((verdict, Evidence::empty(digest)));
    }
    let listing = crate::signature::referrers_index(client, image, &digest)
        .boxed()
        .shared();
    let (verdict, evidence) = futures::join!(
        crate::signature::verify_listed(client, image, &digest, req, listing.clone()),
        gather(client, image, digest.clone(), wanted, listing)
    );
    Ok((verdict?, evidence?))
}

async fn gather(
    client: &RegistryClient,
    image: &ImageRef,
    digest: Digest,
    wanted: &Wanted,
    referrers: impl Future<Output = Result<crate::signature::Listing<ImageIndex>, RegistryError>>,
) -> Result<Evidence, VerifyError> {
    let collector = Collector::new(digest, wanted);
    let (a, b, c) = futures::join!(
        legacy::collect(&collector, client, image),
        bundles::collect(&collector, client, image, referrers),
        buildkit::collect(&collector, client, image),
    );
    a?;
    b?;
    c?;
    Ok(collector.finish())
}
