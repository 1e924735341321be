//! The attestation side of a policy: a rule's `attestations:` (each a
//! name, a predicate type, who may sign it and CEL conditions over the
//! statement) and `limits.attestations` (the caps on reading them and the
//! cost budget of one condition).
//!
//! ```yaml
//! rules:
//!   - name: ours
//!     images: ["registry.example.com/**"]
//!     keyless:
//!       - subjectRegExp: https://github\.com/example/.+
//!         issuer: https://token.actions.githubusercontent.com
//!     attestations:
//!       - name: provenance
//!         predicateType: https://slsa.dev/provenance/v1   # or a cosign short name: slsaprovenance1
//!         # keys / keyless: who may sign it; default: the rule's
//!         conditions:
//!           - predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/example/app'
//!           - expression: predicate.runDetails.builder.id == 'https://github.com/actions/runner/github-hosted'
//!             message: built on GitHub-hosted runners only
//! limits:
//!   attestations: {maxStatementBytes: 8388608, maxStatements: 32, maxTotalBytes: 33554432, conditionBudget: 1000000}
//! ```
//!
//! Everything is checked when the policy loads: predicate types are URIs or
//! known short names, signers load like the rule's, each condition parses
//! and type-checks (`crate::attestation::cel`); an error names its path
//! (`rules[0].attestations[1].conditions[2]`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{KeyRef, KeylessRef, PolicyError, Rule};
use crate::attestation::cel::{Condition, Now};
use crate::attestation::{
    self, statement, Check, Evidence, Limits, Requirement, Store, Unmet, Wanted, WantedType,
};
use crate::signature::Requirements;
use crate::sigstore::TrustRoot;

/// One attestation a rule requires, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationSpec {
    /// Names the attestation in denials.
    pub name: String,
    /// A predicate type URI or a cosign short name (`slsaprovenance1`, …).
    pub predicate_type: String,
    /// Keys that may sign it (default, with `keyless`: the rule's signers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyRef>,
    /// Keyless authorities that may sign it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyless: Vec<KeylessRef>,
    /// CEL conditions a statement must all satisfy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionSpec>,
    /// `any` (the default): one statement of the type must satisfy the
    /// conditions; `all`: there must be one, and every one must.
    #[serde(default, skip_serializing_if = "Statements::is_any")]
    pub statements: Statements,
    /// Where statements count: `att`, `bundle`, `buildkit` (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<Store>,
}

/// How many statements of a type must satisfy an attestation's conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Statements {
    /// One is enough.
    #[default]
    Any,
    /// There must be one, and every one must.
    All,
}

impl Statements {
    fn is_any(&self) -> bool {
        *self == Statements::Any
    }
}

/// A condition: the expression alone, or with a message for denials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConditionSpec {
    /// Just the CEL expression.
    Expression(String),
    /// The expression and a message.
    Described {
        /// The CEL expression.
        expression: String,
        /// Shown in denials beside the condition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// `limits.attestations`: caps on reading attestations, and the cost
/// budget of one condition evaluation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttestationLimits {
    /// Largest statement read, in bytes (default 8 MiB).
    #[serde(default = "default_statement_bytes")]
    pub max_statement_bytes: u64,
    /// Most statements read per image (default 32).
    #[serde(default = "default_statements")]
    pub max_statements: usize,
    /// Most bytes of statements read per image (default 32 MiB).
    #[serde(default = "default_total_bytes")]
    pub max_total_bytes: u64,
    /// Cost units one condition evaluation may spend (default 1000000).
    #[serde(default = "default_budget")]
    pub condition_budget: u64,
}

fn default_statement_bytes() -> u64 {
    attestation::DEFAULT_MAX_STATEMENT_BYTES
}
fn default_statements() -> usize {
    attestation::DEFAULT_MAX_STATEMENTS
}
fn default_total_bytes() -> u64 {
    attestation::DEFAULT_MAX_TOTAL_BYTES
}
fn default_budget() -> u64 {
    attestation::cel::DEFAULT_BUDGET
}

impl Default for AttestationLimits {
    fn default() -> Self {
        AttestationLimits {
            max_statement_bytes: default_statement_bytes(),
            max_statements: default_statements(),
            max_total_bytes: default_total_bytes(),
            condition_budget: default_budget(),
        }
    }
}

impl AttestationLimits {
    /// The caps as the collection uses them; on error, the field and message.
    fn load(&self) -> Result<Limits, (String, String)> {
        let ceiling = crate::registry::MAX_BLOB_SIZE as u64;
        if self.max_statement_bytes == 0 || self.max_statement_bytes > ceiling {
            return Err((
                "maxStatementBytes".into(),
                format!("must be between 1 and {ceiling} (the largest blob imgate reads)"),
            ));
        }
        if self.max_statements == 0 {
            return Err(("maxStatements".into(), "must be at least 1".into()));
        }
        if self.max_total_bytes < self.max_statement_bytes {
            return Err((
                "maxTotalBytes".into(),
                "must be at least maxStatementBytes".into(),
            ));
        }
        if self.condition_budget == 0 {
            return Err(("conditionBudget".into(), "must be at least 1".into()));
        }
        Ok(Limits {
            max_statement_bytes: self.max_statement_bytes,
            max_statements: self.max_statements,
            max_total_bytes: self.max_total_bytes,
            condition_budget: self.condition_budget,
        })
    }
}

/// A rule's attestation requirements, loaded: what to collect per digest
/// ([`RuleAttestations::wanted`], cacheable) and what to evaluate per
/// review ([`RuleAttestations::evaluate`], never cached).
#[derive(Debug, Clone, Default)]
pub struct RuleAttestations {
    wanted: Wanted,
    requirements: Vec<Requirement>,
}

impl RuleAttestations {
    /// Whether the rule requires no attestation.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// What to collect for an image under this rule (for
    /// [`attestation::collect`]); cache the evidence by
    /// [`RuleAttestations::fingerprint`] and the digest.
    pub fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    /// The requirements, in the policy's order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// What changes the evidence collected (not the conditions).
    pub fn fingerprint(&self) -> String {
        self.wanted.fingerprint()
    }

    /// The requirements `evidence` does not meet at `now` (empty: all met).
    pub fn evaluate(&self, evidence: &Evidence, now: &Now) -> Vec<Unmet> {
        attestation::evaluate(
            &self.requirements,
            evidence,
            now,
            self.wanted.limits.condition_budget,
        )
    }
}

impl Rule {
    /// The rule's attestation requirements (empty when it lists none).
    pub fn attestations(&self) -> &RuleAttestations {
        &self.loaded_attestations
    }
}

/// Loads rule `i`'s attestations; keys and authorities load like the
/// rule's own, the rule's signers are the default.
pub(super) fn load(
    rule: &Rule,
    i: usize,
    limits: &AttestationLimits,
    trust_root: Option<Arc<TrustRoot>>,
    source_name: &str,
) -> Result<RuleAttestations, PolicyError> {
    let invalid = |field: String, message: String| PolicyError::Invalid {
        source_name: source_name.to_string(),
        field,
        message,
    };
    let limits = limits
        .load()
        .map_err(|(field, message)| invalid(format!("limits.attestations.{field}"), message))?;
    let mut out = RuleAttestations {
        wanted: Wanted {
            attestations: Vec::new(),
            limits,
        },
        requirements: Vec::new(),
    };
    if rule.attestations.is_empty() {
        return Ok(out);
    }
    // Who may sign, not what a signature must say: the rule's annotations
    // and repository match are its image signature's.
    let rule_signers = Arc::new(Requirements {
        annotations: Default::default(),
        match_repository: false,
        ..rule.requirements()
    });
    let mut names = std::collections::BTreeSet::new();
    for (j, spec) in rule.attestations.iter().enumerate() {
        let at = |field: &str| format!("rules[{i}].attestations[{j}].{field}");
        if spec.name.trim().is_empty() {
            return Err(invalid(at("name"), "must not be empty".into()));
        }
        if !names.insert(spec.name.clone()) {
            return Err(invalid(
                at("name"),
                format!("duplicate attestation name {:?}", spec.name),
            ));
        }
        let predicate_type = statement::predicate_type(&spec.predicate_type)
            .map_err(|message| invalid(at("predicateType"), message))?;
        let signers = if spec.keys.is_empty() && spec.keyless.is_empty() {
            if rule_signers.keys.is_empty() && rule_signers.keyless.is_empty() {
                return Err(invalid(
                    at("keys"),
                    "no signers: give keys or keyless here, or on the rule".into(),
                ));
            }
            Arc::clone(&rule_signers)
        } else {
            Arc::new(own_signers(
                rule,
                spec,
                &at,
                trust_root.clone(),
                source_name,
            )?)
        };
        let mut checks = Vec::with_capacity(spec.conditions.len());
        for (k, condition) in spec.conditions.iter().enumerate() {
            let (expression, message) = match condition {
                ConditionSpec::Expression(e) => (e, None),
                ConditionSpec::Described {
                    expression,
                    message,
                } => (expression, message.clone()),
            };
            let compiled = Condition::compile(expression)
                .map_err(|message| invalid(at(&format!("conditions[{k}]")), message))?;
            checks.push(Check {
                condition: compiled,
                message,
            });
        }
        out.wanted.attestations.push(WantedType {
            predicate_type: predicate_type.clone(),
            signers,
        });
        out.requirements.push(Requirement {
            name: spec.name.clone(),
            predicate_type,
            checks,
            every: spec.statements == Statements::All,
            stores: spec.stores.clone(),
        });
    }
    Ok(out)
}

/// A key of the policy (`field` is its path): a file, or the PEM inline
/// (named `inline_name` in messages).
pub(super) fn load_key(
    key: &KeyRef,
    inline_name: &str,
    source_name: &str,
    field: &str,
) -> Result<imgate_keys::PublicKey, PolicyError> {
    let key_error = |sub: &str, source| PolicyError::Key {
        source_name: source_name.to_string(),
        field: format!("{field}.{sub}"),
        source,
    };
    match (&key.file, &key.public_key) {
        (Some(file), None) => {
            imgate_keys::load_public_key(file).map_err(|source| key_error("file", source))
        }
        (None, Some(pem)) => imgate_keys::PublicKey::from_pem(pem.as_bytes(), inline_name)
            .map_err(|source| key_error("publicKey", source)),
        _ => Err(PolicyError::Invalid {
            source_name: source_name.to_string(),
            field: field.to_string(),
            message: "give exactly one of file or publicKey".into(),
        }),
    }
}

/// An attestation's own signers: its keys and authorities, the rule's tlog
/// mode and the policy's trust root.
fn own_signers(
    rule: &Rule,
    spec: &AttestationSpec,
    at: &dyn Fn(&str) -> String,
    trust_root: Option<Arc<TrustRoot>>,
    source_name: &str,
) -> Result<Requirements, PolicyError> {
    let mut keys = Vec::with_capacity(spec.keys.len());
    for (k, key) in spec.keys.iter().enumerate() {
        let name = format!("rule {} attestation {} key {}", rule.name, spec.name, k + 1);
        keys.push(load_key(
            key,
            &name,
            source_name,
            &at(&format!("keys[{k}]")),
        )?);
    }
    let mut keyless = Vec::with_capacity(spec.keyless.len());
    for (k, authority) in spec.keyless.iter().enumerate() {
        keyless.push(
            authority
                .load()
                .map_err(|(field, message)| PolicyError::Invalid {
                    source_name: source_name.to_string(),
                    field: at(&format!("keyless[{k}].{field}")),
                    message,
                })?,
        );
    }
    Ok(Requirements {
        keys,
        keyless,
        trust_root,
        tlog: rule.tlog.into(),
        ..Requirements::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::Policy;

    fn key() -> String {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/policy/ci.pub")
            .display()
            .to_string()
    }

    fn policy(rule: &str) -> Result<Policy, super::PolicyError> {
        Policy::from_yaml(
            &format!("trustedRegistries: [registry.example.com/**]\nrules:\n{rule}"),
            "t",
        )
    }

    #[test]
    fn attestations_load_with_the_rules_signers_by_default() {
        let p = policy(&format!(
            "  - name: ours\n    images: [registry.example.com/**]\n    keys: [{{file: {}}}]\n    attestations:\n      - {{name: provenance, predicateType: slsaprovenance1, conditions: [\"predicate.x == 1\", {{expression: \"size(predicate.y) > 0\", message: why}}]}}\n      - {{name: sbom, predicateType: 'https://spdx.dev/Document'}}\n",
            key()
        ))
        .unwrap();
        let a = p.rules[0].attestations();
        assert_eq!(a.requirements().len(), 2);
        assert_eq!(
            a.requirements()[0].predicate_type,
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(
            a.requirements()[0].checks[1].message.as_deref(),
            Some("why")
        );
        let w = &a.wanted().attestations;
        assert!(std::sync::Arc::ptr_eq(&w[0].signers, &w[1].signers));
        assert_eq!(w[0].signers.keys.len(), 1);
        // Conditions change the rule's terms, not what is collected.
        let other = policy(&format!(
            "  - name: ours\n    images: [registry.example.com/**]\n    keys: [{{file: {}}}]\n    attestations:\n      - {{name: provenance, predicateType: slsaprovenance1, conditions: [\"predicate.x == 2\"]}}\n      - {{name: sbom, predicateType: 'https://spdx.dev/Document'}}\n",
            key()
        ))
        .unwrap();
        assert_eq!(a.fingerprint(), other.rules[0].attestations().fingerprint());
        assert!(
            policy("  - {name: up, images: [registry.example.com/**], verify: none}\n")
                .unwrap()
                .rules[0]
                .attestations()
                .is_empty()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "{name: p, predicateType: provenance}",
                "rules[0].attestations[0].predicateType",
            ),
            (
                "{name: p, predicateType: vuln, conditions: ['predicate.x ==']}",
                "rules[0].attestations[0].conditions[0]: does not parse",
            ),
            (
                "{name: p, predicateType: vuln, conditions: ['ok', 'size(1) == 1']}",
                "rules[0].attestations[0].conditions[0]: undeclared reference to \"ok\"",
            ),
            (
                "{name: '', predicateType: vuln}",
                "rules[0].attestations[0].name",
            ),
            (
                "{name: p, predicateType: vuln, keys: [{}]}",
                "rules[0].attestations[0].keys[0]: give exactly one",
            ),
            (
                "{name: p, predicateType: vuln, keyless: [{subject: a}]}",
                "rules[0].attestations[0].keyless[0].issuer",
            ),
            (
                "{name: p, predicateType: vuln, colour: red}",
                "unknown field `colour`",
            ),
        ];
        for (spec, needle) in cases {
            let err = policy(&format!(
                "  - name: ours\n    images: [registry.example.com/**]\n    keys: [{{file: {}}}]\n    attestations: [{spec}]\n",
                key()
            ))
            .unwrap_err();
            assert!(err.to_string().contains(needle), "{spec}: {err}");
        }
        let err = policy(
            "  - name: up\n    images: [registry.example.com/**]\n    verify: none\n    attestations: [{name: p, predicateType: vuln}]\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("rules[0].attestations[0].keys: no signers"),
            "{err}"
        );
        let err = Policy::from_yaml(
            &format!("trustedRegistries: [r.example/**]\nlimits: {{attestations: {{maxStatementBytes: 0}}}}\nrules:\n  - {{name: a, images: [r.example/**], keys: [{{file: {}}}]}}\n", key()),
            "t",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("limits.attestations.maxStatementBytes"),
            "{err}"
        );
    }
}
