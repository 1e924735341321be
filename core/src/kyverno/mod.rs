//! `imgate policy import`: Kyverno image policies into one imgate policy and
//! an honest report of what changes.
//!
//! Reads `kyverno.io` ClusterPolicy and Policy (`validate` rules that
//! restrict images, `verifyImages`) and `policies.kyverno.io`
//! ValidatingPolicy and ImageValidatingPolicy where their CEL has a shape
//! the importer recognises. Writes a policy that is **never more
//! permissive** than what it read:
//!
//! - Kyverno's image patterns are wildcards over the reference as written
//!   (`*` runs across `.`, `:` and `/`); imgate's are normalised and
//!   boundary-safe. Each allow-list wildcard is read the boundary-safe way
//!   and kept only when the importer proves (on automata, see
//!   the `question` module) that every image the imgate pattern matches, at every
//!   digest, has a spelling the whole Kyverno policy admitted.
//! - What the importer does not understand about images is refused by field
//!   path and denies the images it covered (fail closed); what is not about
//!   images (a securityContext check) is listed as not imported.
//! - Every pattern whose meaning changes is reported with references the
//!   two policies decide differently, computed from the patterns
//!   (the `examples` module).
//! - Attestations (`verifyImages[].attestations`, an ImageValidatingPolicy's
//!   `verifyAttestationSignatures` and `extractPayload`) become a rule's
//!   `attestations:` (the `attest` and `cel_attest` modules), their
//!   conditions CEL that means the same or stricter (`conditions`), read as
//!   Kyverno read them: from the `.att` tag, every statement of the type
//!   held to them (`statements: all`, `stores: [att]`).
//!
//! Bounds on hostile input: [`MAX_INPUT_BYTES`], [`MAX_DEPTH`],
//! [`MAX_OBJECTS`], [`MAX_ALTERNATIVES`], [`MAX_PATTERN_LEN`], [`MAX_ATOMS`],
//! [`MAX_CEL_LEN`]; a proof that would take more than
//! `question::MAX_STATES` steps counts as failed (the pattern is not
//! carried over).

mod attest;
mod automaton;
mod build;
mod cel;
mod cel_attest;
mod cel_parse;
mod clusterpolicy;
mod cond;
mod conditions;
mod deny;
mod examples;
mod input;
mod model;
mod names;
mod question;
mod report;
mod scope;
mod settings;
mod validate;
mod verify;
mod vpol;
mod wildcard;
mod write;

use serde_json::Value;

use crate::policy::{Policy, PolicyError};
pub use report::{Decision, Example, Finding, FindingKind, Report, Summary};

/// Most bytes of input, all sources together.
pub const MAX_INPUT_BYTES: usize = 4 << 20;
/// Deepest nesting of one document.
pub const MAX_DEPTH: usize = 64;
/// Most objects (documents and `List` items).
pub const MAX_OBJECTS: usize = 1000;
/// Most `|` alternatives in one Kyverno pattern string.
pub const MAX_ALTERNATIVES: usize = 1000;
/// Longest single wildcard pattern, in characters.
pub const MAX_PATTERN_LEN: usize = 512;
/// Most wildcard patterns in one import.
pub const MAX_ATOMS: usize = 4000;
/// Longest CEL expression, in bytes.
pub const MAX_CEL_LEN: usize = 16 << 10;

/// One input: its name for messages and its text.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name, for messages.
    pub name: String,
    /// Its text.
    pub text: String,
}

/// Why nothing could be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is larger than [`MAX_INPUT_BYTES`].
    #[error("{source_name}: {bytes} bytes, more than the {max} an import reads")]
    TooLarge {
        /// The input named in the message.
        source_name: String,
        /// Its size.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// Not YAML (or YAML that is not JSON-like, or nested beyond the YAML
    /// reader's own limit).
    #[error("{origin}: not valid YAML: {detail}")]
    Yaml {
        /// Where in the input (file, document, path).
        origin: String,
        /// What the parser said.
        detail: String,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("{origin}: nested deeper than {max} levels")]
    TooDeep {
        /// Where in the input (file, document, path).
        origin: String,
        /// The bound.
        max: usize,
    },
    /// More than [`MAX_OBJECTS`] objects.
    #[error("more than {max} objects in the input")]
    TooManyObjects {
        /// The bound.
        max: usize,
    },
    /// A document that is not a mapping.
    #[error("{origin}: not a Kubernetes object (a mapping with apiVersion and kind)")]
    NotAnObject {
        /// Where in the input (file, document, path).
        origin: String,
    },
    /// An object of another API group.
    #[error("{origin}: {kind} ({api_version}) is not a Kyverno policy")]
    NotKyverno {
        /// Where in the input (file, document, path).
        origin: String,
        /// Its kind.
        kind: String,
        /// Its apiVersion.
        api_version: String,
    },
    /// The input held no Kyverno policy.
    #[error("no Kyverno policy in the input")]
    NoPolicies,
    /// Policies without a single rule about images.
    #[error("no image rules in {policies}: nothing for imgate to import")]
    NoImageRules {
        /// The policies read.
        policies: String,
    },
    /// A pattern string with more than [`MAX_ALTERNATIVES`] alternatives.
    #[error("{source_name} {path}: {count} alternatives, more than the {max} an import takes")]
    TooManyAlternatives {
        /// The input named in the message.
        source_name: String,
        /// The field path in the Kyverno policy.
        path: String,
        /// How many there are.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A wildcard longer than [`MAX_PATTERN_LEN`].
    #[error("{source_name} {path}: a pattern of {len} characters, more than {max}")]
    PatternTooLong {
        /// The input named in the message.
        source_name: String,
        /// The field path in the Kyverno policy.
        path: String,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// More than [`MAX_ATOMS`] wildcard patterns.
    #[error("more than {max} image patterns in the input")]
    TooManyPatterns {
        /// The bound.
        max: usize,
    },
    /// A CEL expression longer than [`MAX_CEL_LEN`].
    #[error("{source_name} {path}: a CEL expression of {len} bytes, more than {max}")]
    ExpressionTooLong {
        /// The input named in the message.
        source_name: String,
        /// The field path in the Kyverno policy.
        path: String,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The written policy does not load (a bug: nothing is written).
    #[error("the imported policy does not load")]
    Written(#[source] PolicyError),
}

/// The result: the policy text (already loaded by imgate's own loader) and
/// the report.
#[derive(Debug)]
pub struct Import {
    /// The imgate policy, as YAML with comments.
    pub policy_yaml: String,
    /// The same, loaded.
    pub policy: Policy,
    /// What changed, what was refused, what was not imported.
    pub report: Report,
}

/// Imports every Kyverno policy in `sources` into one imgate policy.
///
/// ```no_run
/// let text = std::fs::read_to_string("require-trusted-registries.yaml").unwrap();
/// let import = imgate_core::kyverno::import(&[imgate_core::kyverno::Source {
///     name: "require-trusted-registries.yaml".into(),
///     text,
/// }])
/// .unwrap();
/// print!("{}", import.report.to_text());
/// ```
pub fn import(sources: &[Source]) -> Result<Import, ImportError> {
    let objects = input::objects(sources)?;
    let mut imported = model::Imported::default();
    let mut policies = Vec::new();
    let mut with_images = 0;
    for object in &objects {
        let api_version = object
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object
            .value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = object
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let source = format!("{kind}/{name}");
        let group = api_version.split('/').next().unwrap_or_default();
        let images = match (group, kind) {
            ("kyverno.io", "ClusterPolicy" | "Policy") => {
                clusterpolicy::read(&mut imported, &source, &object.value)?
            }
            (
                "policies.kyverno.io",
                "ValidatingPolicy"
                | "NamespacedValidatingPolicy"
                | "ImageValidatingPolicy"
                | "NamespacedImageValidatingPolicy",
            ) => vpol::read(&mut imported, &source, &object.value)?,
            ("kyverno.io" | "policies.kyverno.io" | "wgpolicyk8s.io" | "reports.kyverno.io", _) => {
                let why = if kind.contains("Exception") {
                    "exceptions loosened Kyverno's policies; imgate does not import them, so it checks what they exempted"
                } else {
                    "not an image policy"
                };
                imported.refuse(&source, "", &format!("{kind} ({})", why), false);
                continue;
            }
            _ => {
                return Err(ImportError::NotKyverno {
                    origin: object.origin.clone(),
                    kind: if kind.is_empty() {
                        "an object without a kind".into()
                    } else {
                        kind.to_string()
                    },
                    api_version: api_version.to_string(),
                })
            }
        };
        if !images {
            // Its settings decide nothing about images.
            imported.policies.retain(|p| p.source != source);
        }
        policies.push(source);
        with_images += usize::from(images);
    }
    if policies.is_empty() {
        return Err(ImportError::NoPolicies);
    }
    if with_images == 0 || imported.rules.is_empty() {
        return Err(ImportError::NoImageRules {
            policies: policies.join(", "),
        });
    }
    let plan = build::plan(&mut imported);
    let settings = settings::settings(&mut imported, &plan);
    let refused: Vec<String> = imported
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Refused)
        .map(|f| format!("{} {}: {}", f.source, f.path, f.message))
        .collect();
    let text = write::yaml(
        &plan,
        &settings,
        &write::Header {
            sources: &policies,
            refused: &refused,
        },
    );
    let policy = Policy::from_yaml(&text, "the imported policy").map_err(ImportError::Written)?;
    examples::findings(&mut imported, &plan, &policy);
    for warning in policy.warnings() {
        imported.finding(FindingKind::Note, "imgate", "", warning.clone());
    }
    let summary = Summary {
        policies,
        mode: text_of(&settings.mode.0),
        pin_digests: text_of(&settings.pin.0),
        on_registry_error: text_of(&settings.on_registry_error.0),
        trusted_registries: policy
            .trusted_registries
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
        rules: policy.rules.iter().map(|r| r.name.clone()).collect(),
        excluded_namespaces: policy.namespaces.exclude.clone(),
    };
    Ok(Import {
        policy_yaml: text,
        policy,
        report: Report {
            summary,
            findings: imported.findings,
        },
    })
}

/// A setting as the policy file spells it.
fn text_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
