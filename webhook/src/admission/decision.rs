//! What the engine answers: the endpoint asking, the verdict on each image
//! field and on the whole object, and the JSONPatch operations that pin tags.

use imgate_core::digest::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which webhook endpoint is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// Resolve, verify and pin (`POST /mutate`).
    Mutate,
    /// Check the final object (`POST /validate`).
    Validate,
}

impl Endpoint {
    /// `mutate` or `validate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// One JSONPatch operation (RFC 6902); the engine only emits `replace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    /// `replace`.
    pub op: String,
    /// JSON pointer.
    pub path: String,
    /// New value.
    pub value: Value,
}

/// The verdict on one image field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageDecision {
    /// JSON pointer of the image field.
    pub pointer: String,
    /// Which field: `container "app"`, `init container "setup"`, `image volume "models"`, …
    pub site: String,
    /// The image as written.
    pub image: Option<String>,
    /// The rule that applied.
    pub rule: Option<String>,
    /// The digest checked.
    pub digest: Option<Digest>,
    /// Allowed under the policy (before audit mode softens it).
    pub allowed: bool,
    /// A signature was verified for the digest.
    pub verified: bool,
    /// Why it is denied, or why it was let through despite an error.
    pub reason: Option<String>,
    /// The digest-pinned reference the field is (or, in audit mode, would be) rewritten to.
    pub pinned: Option<String>,
    /// The registry failed and `onRegistryError` decided.
    pub registry_error: bool,
}

/// The verdict on one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ObjectDecision {
    /// Admitted (always true in audit mode).
    pub allowed: bool,
    /// Why not (one per denied image).
    pub reasons: Vec<String>,
    /// Shown to the user (audit findings, fail-open notes).
    pub warnings: Vec<String>,
    /// The JSONPatch to apply (mutate only).
    pub patch: Vec<PatchOp>,
    /// Per-image verdicts.
    pub images: Vec<ImageDecision>,
    /// Why the object was not examined (other kind, excluded namespace…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl ObjectDecision {
    pub(super) fn untouched(why: impl Into<String>) -> ObjectDecision {
        ObjectDecision {
            allowed: true,
            skipped: Some(why.into()),
            ..Default::default()
        }
    }

    /// An object the engine could not judge (`Err` of
    /// [`super::Engine::decide`]), as a denial naming why.
    pub fn invalid(reason: String) -> ObjectDecision {
        ObjectDecision {
            allowed: false,
            reasons: vec![reason],
            ..Default::default()
        }
    }

    /// What audit mode would have denied.
    pub fn would_deny(&self) -> Vec<String> {
        self.images
            .iter()
            .filter(|i| !i.allowed)
            .filter_map(|i| i.reason.clone())
            .collect()
    }
}
