//! What a signature must satisfy ([`Requirements`]), and the answer:
//! a [`Verdict`] that is either the signature that satisfied everything or
//! the list of [`Unmet`] requirements, each naming the signature it concerns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::Format;
use crate::digest::Digest;
use crate::sigstore::{IdentityPolicy, SigstoreError, TlogMode, TrustRoot};

/// One allowed keyless signer: who, and (optionally) the trust root its
/// certificates chain to, when it is not the requirements' own.
#[derive(Debug, Clone)]
pub struct KeylessAuthority {
    /// Subject, issuer and extension matchers.
    pub identity: IdentityPolicy,
    /// This authority's trust root; `None` is [`Requirements::root`].
    pub trust_root: Option<Arc<TrustRoot>>,
}

impl From<IdentityPolicy> for KeylessAuthority {
    fn from(identity: IdentityPolicy) -> Self {
        KeylessAuthority {
            identity,
            trust_root: None,
        }
    }
}

/// What at least one signature of an image must satisfy.
#[derive(Default)]
pub struct Requirements {
    /// Allowed keys: any one of them may have signed.
    pub keys: Vec<imgate_keys::PublicKey>,
    /// Allowed keyless signers (Fulcio certificate identities): any one of
    /// them may have signed. A keyless signature always needs a verified
    /// signing time: a transparency-log entry, or (for a bundle, unless
    /// [`Requirements::tlog`] is `Required`) a trusted RFC 3161 timestamp.
    pub keyless: Vec<KeylessAuthority>,
    /// The Sigstore trust root keyless signatures and log entries are
    /// verified against, unless an authority names its own; `None` is the
    /// embedded public-good root.
    pub trust_root: Option<Arc<TrustRoot>>,
    /// What a signature must show of the transparency log (default:
    /// verified when present). For keyless bundles, `Required` demands a
    /// log entry where the others accept a trusted timestamp instead.
    pub tlog: TlogMode,
    /// Annotations the signature must carry (legacy: `optional`; bundle: the subject's annotations).
    pub annotations: BTreeMap<String, String>,
    /// Also require the legacy payload's `docker-reference` to name the image's
    /// repository. Off by default, as in cosign, so mirrored images keep verifying.
    /// A bundle names no repository, so under this requirement it can never
    /// qualify ([`Unmet::NoRepository`]): only legacy signatures can.
    pub match_repository: bool,
}

impl fmt::Debug for Requirements {
    // Keys print by name only: the point is which keys, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requirements")
            .field("keys", &self.key_names())
            .field("keyless", &self.keyless_names())
            .field("trust_root", &self.trust_root)
            .field("tlog", &self.tlog)
            .field("annotations", &self.annotations)
            .field("match_repository", &self.match_repository)
            .finish()
    }
}

impl Requirements {
    /// Whether a key signature's log evidence must be verified: when it
    /// carries some (unless ignored), or when the rule requires it.
    pub(crate) fn tlog_applies(&self, has_evidence: bool) -> bool {
        match self.tlog {
            TlogMode::Required => true,
            TlogMode::IfPresent => has_evidence,
            TlogMode::Ignore => false,
        }
    }

    /// The names of the allowed keys, for messages.
    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.name().to_string()).collect()
    }

    /// The allowed keyless signers, for messages.
    pub fn keyless_names(&self) -> Vec<String> {
        self.keyless
            .iter()
            .map(|a| format!("{} from {}", a.identity.subject, a.identity.issuer))
            .collect()
    }

    /// The trust root to verify against: the configured one, or the embedded
    /// public-good root (parsed once per process).
    pub fn root(&self) -> Result<Arc<TrustRoot>, SigstoreError> {
        static EMBEDDED: OnceLock<Arc<TrustRoot>> = OnceLock::new();
        if let Some(root) = &self.trust_root {
            return Ok(Arc::clone(root));
        }
        if let Some(root) = EMBEDDED.get() {
            return Ok(Arc::clone(root));
        }
        let root = Arc::new(TrustRoot::embedded()?);
        Ok(Arc::clone(EMBEDDED.get_or_init(|| root)))
    }
}

/// Which signature an [`Unmet`] concerns: its position (from 1) among the
/// signatures of its format found for the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SignatureId {
    /// 1-based position among the signatures of this format.
    pub index: usize,
    /// The format it was found in.
    pub format: Format,
}

impl fmt::Display for SignatureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signature {} ({})", self.index, self.format)
    }
}

/// One requirement a signature did not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unmet {
    /// Neither a `.sig` tag nor a cosign bundle exists for the digest.
    NoSignatures {
        /// The image digest looked up.
        digest: Digest,
    },
    /// The signature does not verify with any allowed key.
    WrongKey {
        /// Which signature.
        signature: SignatureId,
        /// The allowed keys' names.
        keys: Vec<String>,
    },
    /// A certificate-signed (keyless) signature whose signer is not an
    /// allowed identity, or whose certificate, log entry or timestamp does
    /// not verify against the trust root; `reason` names the identity found
    /// and the one wanted.
    Keyless {
        /// Which signature.
        signature: SignatureId,
        /// Why, in the verifier's words.
        reason: String,
    },
    /// A key signature's transparency-log entry is missing (when required)
    /// or does not verify.
    Tlog {
        /// Which signature.
        signature: SignatureId,
        /// Why.
        reason: String,
    },
    /// The signed payload names another image digest (e.g. a signature copied from another image).
    DigestMismatch {
        /// Which signature.
        signature: SignatureId,
        /// What the payload names.
        found: String,
        /// The digest being verified.
        want: Digest,
    },
    /// `--match-repository`: the payload names another repository.
    RepositoryMismatch {
        /// Which signature.
        signature: SignatureId,
        /// The payload's `docker-reference`.
        found: String,
        /// The image's repository.
        want: String,
    },
    /// `matchRepository`: the signature is a bundle, whose statement names
    /// only a digest, so it cannot show which repository it was made for.
    NoRepository {
        /// Which signature.
        signature: SignatureId,
        /// The image's repository.
        want: String,
    },
    /// The payload is not an image signature (`critical.type` or predicateType).
    WrongType {
        /// Which signature.
        signature: SignatureId,
        /// The type found.
        found: String,
    },
    /// A required annotation is absent or has another value.
    MissingAnnotation {
        /// Which signature.
        signature: SignatureId,
        /// Annotation key.
        key: String,
        /// Required value.
        want: String,
        /// Value found, if any.
        found: Option<String>,
    },
    /// A layer blob does not hash to its descriptor's digest.
    BlobMismatch {
        /// Which signature.
        signature: SignatureId,
        /// The descriptor's digest.
        digest: Digest,
    },
    /// The digest's algorithm has no cosign signature tag (cosign derives
    /// `sha256-<hex>.sig` and the referrers tag from sha256 digests only),
    /// so the image cannot be verified.
    UnsupportedDigest {
        /// The image digest.
        digest: Digest,
    },
    /// A signature blob is larger than a signature of its kind may be; it
    /// was not read (or reading stopped at the cap).
    TooLarge {
        /// Which signature.
        signature: SignatureId,
        /// The blob's digest.
        digest: Digest,
        /// Its size, when the descriptor or registry announced one.
        size: Option<u64>,
        /// The cap.
        limit: u64,
    },
    /// More signatures are listed than imgate reads for one image; those past
    /// the cap were not checked.
    TooManySignatures {
        /// Where they are listed.
        format: Format,
        /// How many are listed.
        listed: usize,
        /// How many were read.
        limit: usize,
    },
    /// The signature or its manifest cannot be read (bad JSON, base64, missing blob).
    Malformed {
        /// Which signature, when the problem is in one signature rather than the manifest holding them.
        signature: Option<SignatureId>,
        /// What is wrong.
        detail: String,
    },
}

impl Unmet {
    /// The signature this concerns, if any.
    pub fn signature(&self) -> Option<SignatureId> {
        match self {
            Unmet::NoSignatures { .. }
            | Unmet::UnsupportedDigest { .. }
            | Unmet::TooManySignatures { .. } => None,
            Unmet::WrongKey { signature, .. }
            | Unmet::Keyless { signature, .. }
            | Unmet::Tlog { signature, .. }
            | Unmet::DigestMismatch { signature, .. }
            | Unmet::RepositoryMismatch { signature, .. }
            | Unmet::NoRepository { signature, .. }
            | Unmet::WrongType { signature, .. }
            | Unmet::MissingAnnotation { signature, .. }
            | Unmet::BlobMismatch { signature, .. }
            | Unmet::TooLarge { signature, .. } => Some(*signature),
            Unmet::Malformed { signature, .. } => *signature,
        }
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(signature) = self.signature() {
            write!(f, "{signature}: ")?;
        }
        match self {
            Unmet::NoSignatures { digest } => write!(f, "no signatures found for {digest}"),
            Unmet::WrongKey { keys, .. } => write!(
                f,
                "not signed by any of the allowed keys ({})",
                keys.join(", ")
            ),
            Unmet::Keyless { reason, .. } => write!(f, "keyless: {reason}"),
            Unmet::Tlog { reason, .. } => write!(f, "transparency log: {reason}"),
            Unmet::DigestMismatch { found, want, .. } => {
                write!(f, "payload names digest {found} not {want}")
            }
            Unmet::RepositoryMismatch { found, want, .. } => {
                write!(f, "payload names repository {found} not {want}")
            }
            Unmet::NoRepository { want, .. } => write!(
                f,
                "matchRepository: a bundle names no repository, so it cannot show it was \
                 signed for {want} (only a legacy signature can)"
            ),
            Unmet::WrongType { found, .. } => {
                write!(f, "not an image signature (type {found:?})")
            }
            Unmet::MissingAnnotation {
                key, want, found, ..
            } => match found {
                Some(found) => write!(f, "annotation {key}: want {want}, found {found}"),
                None => write!(f, "annotation {key}: want {want}, found none"),
            },
            Unmet::BlobMismatch { digest, .. } => {
                write!(f, "layer {digest} does not match its descriptor")
            }
            Unmet::UnsupportedDigest { digest } => write!(
                f,
                "{digest} cannot be verified: {} digests have no cosign signature tag",
                digest.algorithm()
            ),
            Unmet::TooLarge {
                digest,
                size,
                limit,
                ..
            } => match size {
                Some(size) => write!(
                    f,
                    "layer {digest} is {size} bytes, more than the {limit} a signature may have"
                ),
                None => write!(
                    f,
                    "layer {digest} is more than the {limit} bytes a signature may have"
                ),
            },
            Unmet::TooManySignatures {
                format,
                listed,
                limit,
            } => write!(
                f,
                "{listed} entries list {format} signatures; only the first {limit} were checked"
            ),
            Unmet::Malformed { detail, .. } => f.write_str(detail),
        }
    }
}

/// The signature that satisfied every requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The image digest verified.
    pub digest: Digest,
    /// The format of the signature that satisfied the requirements.
    pub format: Format,
    /// The name of the key that verified it; for a keyless signature, the
    /// certificate's identity and issuer (`SUBJECT from ISSUER`).
    pub key: String,
    /// The annotations the signature carries.
    pub annotations: BTreeMap<String, String>,
}

/// The answer of [`super::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    /// At least one signature satisfied every requirement.
    Verified(Verified),
    /// None did; `unmet` says why, signature by signature.
    Denied {
        /// The image digest checked.
        digest: Digest,
        /// Every unmet requirement (deduplicated).
        unmet: Vec<Unmet>,
    },
}

impl Verdict {
    /// True for [`Verdict::Verified`].
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified(_))
    }

    /// The digest checked.
    pub fn digest(&self) -> &Digest {
        match self {
            Verdict::Verified(v) => &v.digest,
            Verdict::Denied { digest, .. } => digest,
        }
    }
}

/// Adds `unmet` unless an equal one is already listed.
pub(crate) fn push_unique(list: &mut Vec<Unmet>, unmet: Unmet) {
    if !list.contains(&unmet) {
        list.push(unmet);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn id(index: usize, format: Format) -> SignatureId {
        SignatureId { index, format }
    }

    #[test]
    fn messages_name_the_signature_and_the_requirement() {
        let d = Digest::sha256(b"a");
        let e = Digest::sha256(b"b");
        assert_eq!(
            Unmet::NoSignatures { digest: d.clone() }.to_string(),
            format!("no signatures found for {d}")
        );
        assert_eq!(
            Unmet::WrongKey {
                signature: id(1, Format::Legacy),
                keys: vec!["ci.pub".into()]
            }
            .to_string(),
            "signature 1 (legacy): not signed by any of the allowed keys (ci.pub)"
        );
        assert_eq!(
            Unmet::DigestMismatch {
                signature: id(2, Format::Bundle),
                found: e.to_string(),
                want: d.clone()
            }
            .to_string(),
            format!("signature 2 (bundle): payload names digest {e} not {d}")
        );
        assert_eq!(
            Unmet::MissingAnnotation {
                signature: id(1, Format::Legacy),
                key: "env".into(),
                want: "prod".into(),
                found: Some("staging".into())
            }
            .to_string(),
            "signature 1 (legacy): annotation env: want prod, found staging"
        );
        assert_eq!(
            Unmet::BlobMismatch {
                signature: id(1, Format::Legacy),
                digest: d.clone()
            }
            .to_string(),
            format!("signature 1 (legacy): layer {d} does not match its descriptor")
        );
    }

    #[test]
    fn json_names_the_kind() {
        let v = serde_json::to_value(Unmet::WrongKey {
            signature: id(1, Format::Legacy),
            keys: vec!["k".into()],
        })
        .unwrap();
        assert_eq!(v["kind"], "wrong_key");
        assert_eq!(v["signature"]["format"], "legacy");
    }
}
