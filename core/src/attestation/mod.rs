//! in-toto attestations: reading them from the three places they live,
//! verifying who signed them, gating on CEL conditions over them, and
//! writing them (`imgate attest`).
//!
//! # Where attestations live
//!
//! - cosign's legacy tag `sha256-<hex>.att`: an image manifest with one DSSE
//!   envelope layer (`application/vnd.dsse.envelope.v1+json`) per
//!   attestation, keyless material in the layer annotations as on `.sig`
//!   layers (`legacy`).
//! - Sigstore bundles (cosign v3, GitHub's `attest-build-provenance`) whose
//!   content is a DSSE envelope, attached as OCI referrers of the image (or
//!   listed at the referrers tag schema's `sha256-<hex>`) (`bundles`).
//! - BuildKit's attestation manifests inside the image index
//!   (`vnd.docker.reference.type: attestation-manifest`), image-config and
//!   OCI-artifact forms, one bare statement per `application/vnd.in-toto+json`
//!   layer (`buildkit`). They carry no signature of their own: their
//!   statements count only when the attestation manifest's digest carries a
//!   signature the attestation's signers accept (`imgate sign --attestations`).
//!
//! All three read into one [`Evidence`] per image digest: the statements
//! that verified (with their signer and where they came from) and, for
//! reports, why each other candidate did not count. What counts is decided
//! by the signed payload: its `predicateType` (never the unsigned
//! annotations, which only let imgate skip reading what no requirement
//! wants) and its subjects, one of which must name the digest checked (for
//! BuildKit, the platform manifest of the index that the attestation
//! manifest is about). in-toto Statement v0.1 and v1 are both read.
//!
//! # The API the admission engine calls
//!
//! Two steps, split so that the expensive one can be cached and the one
//! that must follow policy changes and time cannot be:
//!
//! 1. **Digest level, cacheable**: [`collect`] (or [`verify_with_signature`],
//!    which also verifies the image's signature and asks the registry for
//!    the `.sig` tag, the `.att` tag, the referrers and the image's own
//!    manifest all at once, sharing the referrers listing) answers
//!    [`Evidence`] for an image digest under [`Wanted`]: which predicate
//!    types to look for and who may sign each. It depends only on the
//!    digest, the predicate types and signer sets (see
//!    [`Wanted::fingerprint`]), and the registry: cache it by those.
//!    Registry failures are a [`crate::signature::VerifyError`] the caller
//!    maps through `onRegistryError`, as for signatures.
//! 2. **Per review, cheap, never cached**: [`evaluate`] applies a rule's
//!    [`Requirement`]s (name, predicate type, CEL conditions; index `i`
//!    goes with `Wanted::attestations[i]`) to that evidence at a given
//!    time and answers the [`Unmet`] ones, each naming the attestation, the
//!    condition and the value it saw. Conditions run on CEL values built
//!    once per statement at collection; each evaluation has a cost budget
//!    (see [`cel`]).
//!
//! ```no_run
//! # async fn demo(client: &imgate_core::registry::RegistryClient, image: &imgate_core::ImageRef,
//! #   wanted: &imgate_core::attestation::Wanted, requirements: &[imgate_core::attestation::Requirement]) {
//! use imgate_core::attestation::{self, cel::Now};
//! let evidence = attestation::collect(client, image, wanted).await.unwrap(); // cache this
//! let budget = wanted.limits.condition_budget;
//! let unmet = attestation::evaluate(requirements, &evidence, &Now::current(), budget); // every review
//! for u in &unmet { println!("{u}"); }
//! # }
//! ```
//!
//! # Bounds
//!
//! [`Limits`]: bytes per statement, statements per image, bytes per image
//! (each configurable in the policy). Candidates beyond them are not read,
//! and going over is an [`Unmet::Cap`] naming the cap: a denial, never a
//! pass. Retained per verified statement: its payload bytes and its CEL
//! values ([`Evidence::retained_bytes`] estimates both for a cache's
//! weigher).

pub mod cel;
pub mod statement;

mod buildkit;
mod bundles;
mod collect;
mod evaluate;
mod legacy;
mod signers;
mod write;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::digest::Digest;
use crate::signature::Requirements;

pub use buildkit::{attestation_manifests, buildkit_targets};
pub use collect::{collect, verify_with_signature};
pub use evaluate::{evaluate, satisfying, Check, Requirement, Store, Unmet};
pub use legacy::attestation_tag;
pub use signers::Signer;
pub use write::{
    attest, AttestError, AttestOptions, Attested, EnvelopeSigner, KeySigner, SignedEnvelope,
    SignerError,
};

/// Default cap on one statement's bytes: SBOMs of large images reach a few
/// MiB.
pub const DEFAULT_MAX_STATEMENT_BYTES: u64 = 8 << 20;
/// Default cap on the statements read per image (all stores together).
pub const DEFAULT_MAX_STATEMENTS: usize = 32;
/// Default cap on the bytes of statements read per image.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 32 << 20;

/// The caps on what an image's attestations may make imgate read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest statement (or envelope, or bundle) read.
    pub max_statement_bytes: u64,
    /// Most statements read per image.
    pub max_statements: usize,
    /// Most bytes of statements read per image.
    pub max_total_bytes: u64,
    /// Cost units one condition evaluation may spend (see [`cel`]).
    pub condition_budget: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_statement_bytes: DEFAULT_MAX_STATEMENT_BYTES,
            max_statements: DEFAULT_MAX_STATEMENTS,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            condition_budget: cel::DEFAULT_BUDGET,
        }
    }
}

/// One predicate type to look for, and who may sign it.
#[derive(Debug, Clone)]
pub struct WantedType {
    /// The predicate type URI (matched exactly against the signed payload's).
    pub predicate_type: String,
    /// Who may sign it.
    pub signers: Arc<Requirements>,
}

/// What [`collect`] looks for.
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// The predicate types, in the order of the rule's attestations.
    pub attestations: Vec<WantedType>,
    /// The caps.
    pub limits: Limits,
}

impl Wanted {
    /// Whether `predicate_type` is wanted at all.
    pub(crate) fn wants(&self, predicate_type: &str) -> bool {
        self.attestations
            .iter()
            .any(|w| w.predicate_type == predicate_type)
    }

    /// A hash of everything that changes what [`collect`] answers (types,
    /// signer keys and identities, trust roots, tlog modes, caps), for
    /// cache keys. Conditions are not in it: they never reach the cache.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest as _, Sha256};
        let mut hash = Sha256::new();
        for w in &self.attestations {
            let s = &w.signers;
            hash.update(w.predicate_type.as_bytes());
            hash.update([0]);
            for key in &s.keys {
                hash.update(key.to_spki_der());
            }
            for a in &s.keyless {
                hash.update(format!("{}|{}", a.identity.subject, a.identity.issuer));
                for (name, m) in &a.identity.extensions {
                    hash.update(format!("{name}={m}"));
                }
                if let Some(root) = &a.trust_root {
                    hash.update(root.fingerprint());
                }
            }
            if let Some(root) = &s.trust_root {
                hash.update(root.fingerprint());
            }
            hash.update(format!("{:?}", s.tlog));
            hash.update([1]);
        }
        hash.update(format!("{:?}", self.limits));
        hex::encode(hash.finalize())
    }
}

/// Where a statement was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "store", rename_all = "snake_case")]
pub enum Source {
    /// Layer `layer` (from 1) of the `.att` manifest; 0 is the manifest itself.
    Legacy {
        /// 1-based layer position.
        layer: usize,
    },
    /// The referrers listing itself (API or tag schema).
    Referrers,
    /// The Sigstore bundle attached by the referrer manifest `referrer`.
    Bundle {
        /// The referrer manifest's digest.
        referrer: Digest,
    },
    /// Layer `layer` (from 1) of the BuildKit attestation manifest
    /// `manifest`; 0 is the manifest itself.
    Buildkit {
        /// The attestation manifest's digest.
        manifest: Digest,
        /// 1-based layer position.
        layer: usize,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Legacy { layer: 0 } => f.write_str(".att manifest"),
            Source::Legacy { layer } => write!(f, ".att layer {layer}"),
            Source::Referrers => f.write_str("referrers listing"),
            Source::Bundle { referrer } => write!(f, "bundle {referrer}"),
            Source::Buildkit { manifest, layer: 0 } => {
                write!(f, "BuildKit attestation manifest {manifest}")
            }
            Source::Buildkit { manifest, layer } => {
                write!(f, "BuildKit attestation {manifest} layer {layer}")
            }
        }
    }
}

/// A statement that verified: signed by an allowed signer, its subject
/// naming the digest checked.
#[derive(Debug, Clone)]
pub struct VerifiedStatement {
    /// Where it was found.
    pub source: Source,
    /// The predicate type inside the signed payload.
    pub predicate_type: String,
    /// The digest its subject names: the image's, or (BuildKit) a platform
    /// manifest of the image's index.
    pub about: Digest,
    /// Who signed it.
    pub signer: Signer,
    /// Which of [`Wanted::attestations`] accept it (indices).
    pub accepted: Vec<usize>,
    /// The subject naming [`VerifiedStatement::about`].
    pub subject: statement::Subject,
    /// The statement exactly as signed (JSON).
    pub payload: Arc<[u8]>,
    /// Its CEL values, built when a condition first needs them (a
    /// requirement without conditions never pays for them), then shared by
    /// every clone of the evidence.
    inputs: Arc<std::sync::OnceLock<Result<cel::Inputs, String>>>,
}

impl VerifiedStatement {
    /// The statement's CEL values, built on first use.
    pub(crate) fn inputs(&self) -> Result<&cel::Inputs, &str> {
        self.inputs
            .get_or_init(|| {
                cel::Inputs::new(
                    &self.payload,
                    &self.predicate_type,
                    &self.subject,
                    &self.signer,
                )
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Why a candidate statement does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where it was found.
    pub source: Source,
    /// The predicate type its unsigned annotation claims, if any.
    pub claimed: Option<String>,
    /// The predicate type inside its payload, when it could be read.
    pub predicate_type: Option<String>,
    /// Why it does not count.
    pub reason: String,
}

impl Problem {
    /// Whether the problem concerns `predicate_type` (by payload or claim;
    /// a candidate whose type is unknown concerns every type).
    pub(crate) fn concerns(&self, predicate_type: &str) -> bool {
        match (&self.predicate_type, &self.claimed) {
            (None, None) => true,
            (found, claimed) => {
                found.as_deref() == Some(predicate_type)
                    || claimed.as_deref() == Some(predicate_type)
            }
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

/// A cap on what attestations may make imgate read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    /// [`Limits::max_statement_bytes`].
    StatementBytes,
    /// [`Limits::max_statements`].
    Statements,
    /// [`Limits::max_total_bytes`].
    TotalBytes,
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cap::StatementBytes => "maxStatementBytes",
            Cap::Statements => "maxStatements",
            Cap::TotalBytes => "maxTotalBytes",
        })
    }
}

/// A cap the image's attestations went over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapExceeded {
    /// Which cap.
    pub cap: Cap,
    /// Its value.
    pub limit: u64,
    /// What was found (a size, a count, or the total so far), at least.
    pub found: u64,
    /// The statement concerned, for a per-statement cap.
    pub source: Option<Source>,
}

impl fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.cap, &self.source) {
            (Cap::StatementBytes, Some(source)) => write!(
                f,
                "{source} is {} bytes, over the attestation cap {} ({} bytes)",
                self.found, self.cap, self.limit
            ),
            (Cap::Statements, _) => write!(
                f,
                "{} candidate statements, over the attestation cap {} ({})",
                self.found, self.cap, self.limit
            ),
            _ => write!(
                f,
                "reading {} bytes of statements would go over the attestation cap {} ({} bytes)",
                self.found, self.cap, self.limit
            ),
        }
    }
}

/// What [`collect`] found for one image digest. Cacheable: it depends only
/// on the digest, the [`Wanted`] and the registry's content.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The digest checked.
    pub digest: Digest,
    /// For an index: its platform manifests (not its attestation
    /// manifests); BuildKit statements are about these.
    pub platforms: Vec<Digest>,
    /// The statements that verified.
    pub statements: Vec<VerifiedStatement>,
    /// Candidates that did not count, and why.
    pub problems: Vec<Problem>,
    /// Caps gone over (any is a denial for a rule that wants attestations).
    pub over_caps: Vec<CapExceeded>,
}

impl Evidence {
    /// Nothing found for `digest`.
    pub fn empty(digest: Digest) -> Evidence {
        Evidence {
            digest,
            platforms: Vec::new(),
            statements: Vec::new(),
            problems: Vec::new(),
            over_caps: Vec::new(),
        }
    }

    /// An estimate of the memory this evidence holds, for a cache's
    /// weigher: the payloads, and their CEL values once built (a tree of
    /// boxed values, counted at eight times the JSON's bytes; measured in
    /// the attestation scenarios' peak RSS).
    pub fn retained_bytes(&self) -> usize {
        self.statements
            .iter()
            .map(|s| {
                let cel = if s.inputs.get().is_some() { 8 } else { 0 };
                s.payload.len() * (1 + cel) + 256
            })
            .sum::<usize>()
            + self.problems.len() * 256
    }
}
