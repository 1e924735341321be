//! [`evaluate`]: a rule's attestation requirements against the evidence of
//! an image, every review (conditions are never cached: a reloaded policy
//! or a condition on `now` takes effect at once).
//!
//! A requirement is met when one verified statement of its predicate type,
//! signed by one of its signers, satisfies all its conditions (with
//! [`Requirement::every`], when there is one and every such statement does):
//! a statement about the image's digest, or else (an index built by
//! BuildKit) about each platform manifest of the index. Only statements from
//! the requirement's [`Store`]s count. Caps gone over while collecting deny
//! every rule that wants attestations.

use std::fmt;

use serde::Serialize;

use super::cel::{Condition, Now, Outcome};
use super::{CapExceeded, Evidence, Source, VerifiedStatement};
use crate::digest::Digest;

/// Condition failures reported per requirement, at most (the first
/// statements' first failing conditions say enough).
const MAX_REPORTED: usize = 4;

/// One condition of a requirement, with the message shown when it fails.
#[derive(Debug, Clone)]
pub struct Check {
    /// The compiled condition.
    pub condition: Condition,
    /// Shown beside the condition in denials, when given.
    pub message: Option<String>,
}

/// Where a statement was stored, as a policy names it (`stores:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// cosign's `.att` tag.
    Att,
    /// A Sigstore bundle attached as a referrer (cosign v3, GitHub).
    Bundle,
    /// BuildKit's attestation manifests in the image index.
    Buildkit,
}

impl Store {
    /// Whether a statement found at `source` was stored here.
    pub fn holds(self, source: &Source) -> bool {
        matches!(
            (self, source),
            (Store::Att, Source::Legacy { .. })
                | (Store::Bundle, Source::Bundle { .. } | Source::Referrers)
                | (Store::Buildkit, Source::Buildkit { .. })
        )
    }
}

/// One attestation a rule requires (the per-review half; who may sign it is
/// in the matching [`super::WantedType`]).
#[derive(Debug, Clone)]
pub struct Requirement {
    /// The attestation's name in the policy.
    pub name: String,
    /// The predicate type URI.
    pub predicate_type: String,
    /// Conditions a statement must all satisfy.
    pub checks: Vec<Check>,
    /// Every statement of the type (at least one) must satisfy them, not
    /// just one (`statements: all`).
    pub every: bool,
    /// Where statements count; empty: every store.
    pub stores: Vec<Store>,
}

impl Requirement {
    /// Whether statement `statement` is one this requirement reads (its
    /// type accepted as requirement `index`, from one of its stores).
    fn reads(&self, index: usize, statement: &VerifiedStatement) -> bool {
        statement.accepted.contains(&index)
            && (self.stores.is_empty() || self.stores.iter().any(|s| s.holds(&statement.source)))
    }
}

/// One attestation requirement an image does not meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unmet {
    /// No statement of the type, signed by an allowed signer, is about the digest.
    Missing {
        /// The attestation's name.
        attestation: String,
        /// Its predicate type.
        predicate_type: String,
        /// The digest a statement had to be about.
        digest: Digest,
        /// Why the candidates found did not count.
        problems: Vec<String>,
    },
    /// Statements verified, but none satisfied this condition (with the others).
    Condition {
        /// The attestation's name.
        attestation: String,
        /// The condition as written.
        condition: String,
        /// The policy's message for it.
        message: Option<String>,
        /// `false`, `error` or `over_budget`.
        result: &'static str,
        /// The value it saw (or the error).
        saw: String,
        /// The statement it was evaluated on.
        source: Source,
    },
    /// A cap on reading attestations was exceeded.
    Cap {
        /// Which, and by how much.
        exceeded: CapExceeded,
    },
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::Missing {
                attestation,
                predicate_type,
                digest,
                problems,
            } => {
                write!(
                    f,
                    "attestation {attestation:?}: no {predicate_type} statement about {digest} signed by an allowed signer"
                )?;
                if !problems.is_empty() {
                    write!(f, " ({})", problems.join("; "))?;
                }
                Ok(())
            }
            Unmet::Condition {
                attestation,
                condition,
                message,
                result,
                saw,
                source,
            } => {
                write!(f, "attestation {attestation:?}: condition {condition:?} ")?;
                match *result {
                    "false" => write!(f, "is false (saw {saw})")?,
                    "over_budget" => write!(f, "went over its cost budget ({saw})")?,
                    _ => write!(f, "could not be evaluated: {saw}")?,
                }
                write!(f, " in {source}")?;
                if let Some(message) = message {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Unmet::Cap { exceeded } => write!(f, "{exceeded}"),
        }
    }
}

impl Unmet {
    /// The attestation concerned (none for a cap).
    pub fn attestation(&self) -> Option<&str> {
        match self {
            Unmet::Missing { attestation, .. } | Unmet::Condition { attestation, .. } => {
                Some(attestation)
            }
            Unmet::Cap { .. } => None,
        }
    }
}

/// The first unmet check of `statement`, if any.
fn first_unmet(
    requirement: &Requirement,
    statement: &VerifiedStatement,
    now: &Now,
    budget: u64,
) -> Option<Unmet> {
    for check in &requirement.checks {
        let inputs = match statement.inputs() {
            Ok(inputs) => inputs,
            Err(err) => {
                return Some(Unmet::Condition {
                    attestation: requirement.name.clone(),
                    condition: check.condition.source().to_string(),
                    message: check.message.clone(),
                    result: "error",
                    saw: err.to_string(),
                    source: statement.source.clone(),
                })
            }
        };
        let (result, saw) = match check.condition.evaluate(inputs, now, budget) {
            Outcome::Holds => continue,
            Outcome::Fails { saw } => ("false", saw),
            Outcome::Error(err) => ("error", err),
            Outcome::OverBudget { budget } => ("over_budget", format!("{budget} units")),
        };
        return Some(Unmet::Condition {
            attestation: requirement.name.clone(),
            condition: check.condition.source().to_string(),
            message: check.message.clone(),
            result,
            saw,
            source: statement.source.clone(),
        });
    }
    None
}

/// Whether requirement `index` is met by a statement about `about`; else why not.
fn met_for(
    index: usize,
    requirement: &Requirement,
    evidence: &Evidence,
    about: &Digest,
    now: &Now,
    budget: u64,
) -> Result<(), Vec<Unmet>> {
    let mut unmet = Vec::new();
    let mut any = false;
    let mut failed = false;
    for statement in evidence
        .statements
        .iter()
        .filter(|s| requirement.reads(index, s) && &s.about == about)
    {
        any = true;
        match first_unmet(requirement, statement, now, budget) {
            None if !requirement.every => return Ok(()),
            None => {}
            Some(u) => {
                failed = true;
                if unmet.len() < MAX_REPORTED && !unmet.contains(&u) {
                    unmet.push(u);
                }
            }
        }
    }
    if any && requirement.every && !failed {
        return Ok(());
    }
    if !any {
        unmet.push(Unmet::Missing {
            attestation: requirement.name.clone(),
            predicate_type: requirement.predicate_type.clone(),
            digest: about.clone(),
            problems: evidence
                .problems
                .iter()
                .filter(|p| p.concerns(&requirement.predicate_type))
                .map(ToString::to_string)
                .collect(),
        });
    }
    Err(unmet)
}

/// The requirements (index `i` goes with `Wanted::attestations[i]` of the
/// collection that made `evidence`) the image does not meet, evaluated at
/// `now` with `budget` cost units per condition evaluation. Empty: all met.
pub fn evaluate(
    requirements: &[Requirement],
    evidence: &Evidence,
    now: &Now,
    budget: u64,
) -> Vec<Unmet> {
    if requirements.is_empty() {
        return Vec::new();
    }
    let mut unmet: Vec<Unmet> = evidence
        .over_caps
        .iter()
        .map(|exceeded| Unmet::Cap {
            exceeded: exceeded.clone(),
        })
        .collect();
    for (i, requirement) in requirements.iter().enumerate() {
        let image_level = met_for(i, requirement, evidence, &evidence.digest, now, budget);
        let Err(image_unmet) = image_level else {
            continue;
        };
        let about_platforms = evidence
            .statements
            .iter()
            .any(|s| requirement.reads(i, s) && evidence.platforms.contains(&s.about));
        if evidence.platforms.is_empty() || !about_platforms {
            unmet.extend(image_unmet);
            continue;
        }
        for platform in &evidence.platforms {
            if let Err(list) = met_for(i, requirement, evidence, platform, now, budget) {
                unmet.extend(list);
            }
        }
    }
    unmet
}

/// The statements that satisfy each requirement (all its conditions hold),
/// with the requirement's index: what `imgate verify-attestation` prints.
pub fn satisfying<'a>(
    requirements: &[Requirement],
    evidence: &'a Evidence,
    now: &Now,
    budget: u64,
) -> Vec<(usize, &'a VerifiedStatement)> {
    let mut out = Vec::new();
    for (i, requirement) in requirements.iter().enumerate() {
        for statement in evidence
            .statements
            .iter()
            .filter(|s| requirement.reads(i, s))
        {
            if first_unmet(requirement, statement, now, budget).is_none() {
                out.push((i, statement));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::attestation::statement;
    use crate::attestation::{Cap, Signer};

    const TYPE: &str = "https://slsa.dev/provenance/v1";

    fn stmt(about: &Digest, branch: &str, source: Source) -> VerifiedStatement {
        let payload = serde_json::to_vec(&serde_json::json!({
            "_type": statement::STATEMENT_V1, "predicateType": TYPE,
            "subject": [{"name": "app", "digest": {"sha256": about.hex()}}],
            "predicate": {"ref": branch},
        }))
        .unwrap();
        VerifiedStatement {
            source,
            predicate_type: TYPE.into(),
            about: about.clone(),
            signer: Signer {
                kind: "key",
                key: "ci.pub".into(),
                identity: String::new(),
                issuer: String::new(),
            },
            accepted: vec![0],
            subject: statement::header(&payload).unwrap().subject[0].clone(),
            payload: payload.into(),
            inputs: Arc::default(),
        }
    }

    fn requirement(condition: &str) -> Requirement {
        Requirement {
            name: "provenance".into(),
            predicate_type: TYPE.into(),
            checks: vec![Check {
                condition: Condition::compile(condition).unwrap(),
                message: None,
            }],
            every: false,
            stores: Vec::new(),
        }
    }

    fn legacy(layer: usize) -> Source {
        Source::Legacy { layer }
    }

    fn now() -> Now {
        Now::from_unix(1_700_000_000)
    }

    const MAIN: &str = "predicate.ref == 'main'";

    #[test]
    fn one_statement_satisfying_every_condition_is_enough() {
        let image = Digest::sha256(b"image");
        let mut evidence = Evidence::empty(image.clone());
        evidence.statements = vec![
            stmt(&image, "dev", legacy(1)),
            stmt(&image, "main", legacy(2)),
        ];
        assert!(evaluate(&[requirement(MAIN)], &evidence, &now(), 1000).is_empty());
        let sat = satisfying(&[requirement(MAIN)], &evidence, &now(), 1000);
        assert_eq!(sat.len(), 1);
        assert_eq!(sat[0].1.source, legacy(2));

        evidence.statements.pop();
        let unmet = evaluate(&[requirement(MAIN)], &evidence, &now(), 1000);
        assert_eq!(unmet.len(), 1);
        assert_eq!(
            unmet[0].to_string(),
            "attestation \"provenance\": condition \"predicate.ref == 'main'\" is false (saw \"dev\") in .att layer 1"
        );
        // No budget left: unmet, saying so.
        evidence.statements = vec![stmt(&image, "main", legacy(1))];
        let unmet = evaluate(&[requirement(MAIN)], &evidence, &now(), 0);
        assert!(
            unmet[0]
                .to_string()
                .contains("went over its cost budget (0 units)"),
            "{}",
            unmet[0]
        );
    }

    #[test]
    fn every_statement_and_stores_narrow_what_counts() {
        let image = Digest::sha256(b"image");
        let mut evidence = Evidence::empty(image.clone());
        let bundle = Source::Bundle {
            referrer: Digest::sha256(b"referrer"),
        };
        evidence.statements = vec![
            stmt(&image, "main", legacy(1)),
            stmt(&image, "dev", bundle.clone()),
        ];
        let mut every = requirement(MAIN);
        every.every = true;
        // One good statement is enough for `any`, not for `all`.
        assert!(evaluate(&[requirement(MAIN)], &evidence, &now(), 1000).is_empty());
        let unmet = evaluate(std::slice::from_ref(&every), &evidence, &now(), 1000);
        assert_eq!(unmet.len(), 1, "{unmet:?}");
        assert!(unmet[0].to_string().contains("saw \"dev\""), "{}", unmet[0]);
        // Only the .att tag counts: the failing bundle statement is not read.
        every.stores = vec![Store::Att];
        assert!(evaluate(std::slice::from_ref(&every), &evidence, &now(), 1000).is_empty());
        // A statement only in another store is missing from the .att tag.
        evidence.statements = vec![stmt(&image, "main", bundle)];
        let unmet = evaluate(std::slice::from_ref(&every), &evidence, &now(), 1000);
        assert!(matches!(unmet[0], Unmet::Missing { .. }), "{unmet:?}");
        // `all` with no statement at all is missing, never vacuously met.
        evidence.statements.clear();
        every.stores.clear();
        let unmet = evaluate(&[every], &evidence, &now(), 1000);
        assert!(matches!(unmet[0], Unmet::Missing { .. }), "{unmet:?}");
    }

    #[test]
    fn an_index_is_covered_by_a_statement_per_platform() {
        let index = Digest::sha256(b"index");
        let (amd64, arm64) = (Digest::sha256(b"amd64"), Digest::sha256(b"arm64"));
        let buildkit = |n: u8| Source::Buildkit {
            manifest: Digest::sha256(&[n]),
            layer: 1,
        };
        let mut evidence = Evidence::empty(index.clone());
        evidence.platforms = vec![amd64.clone(), arm64.clone()];
        evidence.statements = vec![stmt(&amd64, "main", buildkit(1))];
        let unmet = evaluate(&[requirement(MAIN)], &evidence, &now(), 1000);
        assert_eq!(unmet.len(), 1, "{unmet:?}");
        assert!(matches!(&unmet[0], Unmet::Missing { digest, .. } if *digest == arm64));
        evidence.statements.push(stmt(&arm64, "dev", buildkit(2)));
        let unmet = evaluate(&[requirement(MAIN)], &evidence, &now(), 1000);
        assert!(unmet[0].to_string().contains("saw \"dev\""), "{unmet:?}");
        evidence.statements[1] = stmt(&arm64, "main", buildkit(2));
        assert!(evaluate(&[requirement(MAIN)], &evidence, &now(), 1000).is_empty());
        // A statement about the index itself covers every platform.
        evidence.statements = vec![stmt(&index, "main", legacy(1))];
        assert!(evaluate(&[requirement(MAIN)], &evidence, &now(), 1000).is_empty());
    }

    #[test]
    fn a_cap_gone_over_denies_and_problems_explain_a_missing_statement() {
        let image = Digest::sha256(b"image");
        let mut evidence = Evidence::empty(image.clone());
        evidence.statements = vec![stmt(&image, "main", legacy(1))];
        evidence.over_caps.push(CapExceeded {
            cap: Cap::Statements,
            limit: 32,
            found: 40,
            source: None,
        });
        let unmet = evaluate(&[requirement(MAIN)], &evidence, &now(), 1000);
        assert_eq!(unmet.len(), 1);
        assert_eq!(
            unmet[0].to_string(),
            "40 candidate statements, over the attestation cap maxStatements (32)"
        );
        // A rule that wants no attestation is not denied by them.
        assert!(evaluate(&[], &evidence, &now(), 1000).is_empty());

        let mut evidence = Evidence::empty(image.clone());
        evidence.problems.push(crate::attestation::Problem {
            source: legacy(3),
            claimed: Some(TYPE.into()),
            predicate_type: None,
            reason: "not signed by any of the allowed keys (ci.pub)".into(),
        });
        evidence.problems.push(crate::attestation::Problem {
            source: legacy(4),
            claimed: None,
            predicate_type: Some("https://spdx.dev/Document".into()),
            reason: "unrelated".into(),
        });
        let unmet = evaluate(&[requirement(MAIN)], &evidence, &now(), 1000);
        assert_eq!(
            unmet[0].to_string(),
            format!("attestation \"provenance\": no {TYPE} statement about {image} signed by an allowed signer (.att layer 3: not signed by any of the allowed keys (ci.pub))")
        );
    }
}
