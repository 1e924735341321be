//! A `verifyImages` entry's `attestations`: each in-toto predicate type
//! Kyverno required, who had to sign it and the conditions its statements
//! had to meet, as imgate attestation requirements; what has no imgate
//! equivalent is refused by field path (and the verification with it).
//!
//! Kyverno (`verifyAttestations` in `pkg/engine/internal/imageverifier.go`)
//! walks each attestor set's entries in order, fetching the attestations
//! that entry's signer verified; the first failure denies, and it stops
//! once `count` entries (default: all) have passed. So the first `count`
//! entries each had to pass on their own: each becomes one imgate
//! requirement signed by that entry's signer alone (imgate requires every
//! requirement of a rule). Entries after them were never consulted.
//!
//! Kyverno passed an entry when at least one statement of the type was in
//! the `.att` tag and **every** one of them met the conditions (and,
//! keyless, carried the identity); the written requirement says the same
//! (`statements: all`, `stores: [att]`). What stays different (a statement
//! of another keyless identity, ignored by imgate) is reported.

use serde_json::Value;

use super::conditions;
use super::model::{Attestation, Imported, Signers};
use super::report::FindingKind;
use super::verify::Signing;
use super::write::tlog_name;
use crate::attestation::statement;
use crate::policy::TlogSetting;

/// One imgate requirement, with its signers' tlog setting (for the rule)
/// and what the report says of it once it is carried over.
pub(super) struct Required {
    pub attestation: Attestation,
    pub tlog: TlogSetting,
    pub keyed: bool,
    /// Where its signers were read (for a report on its tlog).
    pub signers_path: String,
    /// Kind, field path and message.
    pub findings: Vec<(FindingKind, String, String)>,
}

/// Reads `attestations` (at `path`); `None` when something was refused.
/// `context` names the rule's `context` entries.
pub(super) fn read(
    imported: &mut Imported,
    source: &str,
    attestations: &Value,
    path: &str,
    context: &[String],
) -> Option<Vec<Required>> {
    let mut out = Vec::new();
    let mut refused = false;
    let list = attestations
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, a) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match one(imported, source, a, &at, i, context) {
            Some(required) => out.extend(required),
            None => refused = true,
        }
    }
    // Names are unique within a rule.
    let mut seen = std::collections::BTreeSet::new();
    for r in &mut out {
        let base = r.attestation.name.clone();
        let mut n = 2;
        while !seen.insert(r.attestation.name.clone()) {
            r.attestation.name = format!("{base}-{n}");
            n += 1;
        }
    }
    (!refused).then_some(out)
}

fn one(
    imported: &mut Imported,
    source: &str,
    a: &Value,
    path: &str,
    index: usize,
    context: &[String],
) -> Option<Vec<Required>> {
    let refuse = |imported: &mut Imported, at: &str, why: &str| {
        imported.refuse(source, at, why, true);
        None
    };
    let Some(map) = a.as_object() else {
        return refuse(imported, path, "not a mapping");
    };
    if let Some(key) = map.keys().find(|k| {
        !["name", "type", "predicateType", "attestors", "conditions"].contains(&k.as_str())
    }) {
        return refuse(
            imported,
            &format!("{path}.{key}"),
            &format!("`{key}` is not understood by the importer"),
        );
    }
    // `type` wins; `predicateType` is its older name.
    let text = |k: &str| map.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let Some((field, predicate_type)) = text("type")
        .map(|t| ("type", t))
        .or_else(|| text("predicateType").map(|t| ("predicateType", t)))
    else {
        return refuse(imported, path, "no type: Kyverno fails the rule");
    };
    let at = format!("{path}.{field}");
    if statement::predicate_type(predicate_type).as_deref() != Ok(predicate_type) {
        return refuse(imported, &at, &format!("`{predicate_type}`: Kyverno compared it with the statement's predicate type as written; imgate needs a predicate type URI (it reads a few short names as cosign's)"));
    }
    let conditions = match map.get("conditions") {
        None => conditions::Translated::default(),
        Some(c) => conditions::translate(c, &format!("{path}.conditions"), context),
    };
    let mut refused = !conditions.refused.is_empty();
    for (at, why) in &conditions.refused {
        imported.refuse(source, at, why, true);
    }
    let sets = map
        .get("attestors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if sets.is_empty() {
        return refuse(imported, &format!("{path}.attestors"), "no attestors: Kyverno then checks the statements against an empty attestor, which imgate has no equivalent for");
    }
    let base = text("name").map_or_else(|| format!("attestation-{index}"), str::to_string);
    let mut out = Vec::new();
    let mut identities = false;
    for (j, set) in sets.iter().enumerate() {
        let at = format!("{path}.attestors[{j}]");
        let entries = set
            .get("entries")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let count = set.get("count").and_then(Value::as_u64).unwrap_or(0) as usize;
        let needed = if count == 0 { entries.len() } else { count };
        if entries.is_empty() || needed > entries.len() {
            refuse(
                imported,
                &at,
                &format!(
                    "{needed} entries must pass and {} are listed: Kyverno fails the rule",
                    entries.len()
                ),
            );
            refused = true;
            continue;
        }
        if needed < entries.len() {
            imported.finding(
                FindingKind::Note,
                source,
                &at,
                format!("Kyverno stops after {needed} passing entries and fails on the first that does not: entries after entries[{}] were never consulted and are not carried over", needed - 1),
            );
        }
        for (k, entry) in entries[..needed].iter().enumerate() {
            let at = format!("{at}.entries[{k}]");
            if entry.get("annotations").is_some() {
                refuse(
                    imported,
                    &format!("{at}.annotations"),
                    "annotations required of an attestation's signature have no imgate equivalent",
                );
                refused = true;
                continue;
            }
            identities |= entry.get("keyless").is_some();
            let mut s = Signing::new(imported, source);
            s.entry(entry, &at);
            let Some(Signers {
                keys,
                keyless,
                tlog,
                ..
            }) = s.finish(&at)
            else {
                refused = true;
                continue;
            };
            let name = if out.is_empty() {
                base.clone()
            } else {
                format!("{base}-signer-{}", out.len() + 1)
            };
            out.push(Required {
                keyed: !keys.is_empty(),
                tlog,
                signers_path: at,
                findings: Vec::new(),
                attestation: Attestation {
                    name,
                    predicate_type: predicate_type.to_string(),
                    keys,
                    keyless,
                    conditions: conditions.conditions.clone(),
                },
            });
        }
    }
    if refused {
        return None;
    }
    let first = &mut out.first_mut()?.findings;
    first.push((
        FindingKind::Note,
        path.to_string(),
        format!("as in Kyverno, at least one {predicate_type} statement signed by the attestor must be in the .att tag, and every one there must meet the conditions (statements: all, stores: [att])."),
    ));
    if identities {
        first.push((
            FindingKind::Changed,
            path.to_string(),
            format!("Kyverno also denied the image when a {predicate_type} statement in the .att tag carried another keyless identity; imgate does not read statements its signers did not sign."),
        ));
    }
    if !conditions.stricter.is_empty() {
        let reasons: Vec<&str> = conditions.stricter.iter().map(String::as_str).collect();
        first.push((
            FindingKind::Stricter,
            format!("{path}.conditions"),
            format!("translated more strictly: {}", reasons.join("; ")),
        ));
    }
    Some(out)
}

/// `signers` (of the verification at `path`) with the attestations
/// `required`, under one tlog setting; `None` when either was refused.
pub(super) fn with_attestations(
    imported: &mut Imported,
    source: &str,
    path: &str,
    signers: Option<Signers>,
    required: Option<Vec<Required>>,
) -> Option<Signers> {
    let (mut signers, required) = (signers?, required?);
    for (kind, at, message) in required.iter().flat_map(|r| &r.findings) {
        imported.finding(*kind, source, at, message.clone());
    }
    let mut parts = vec![(
        path.to_string(),
        signers.tlog,
        signers.signature && !signers.keys.is_empty(),
    )];
    parts.extend(
        required
            .iter()
            .map(|r| (r.signers_path.clone(), r.tlog, r.keyed)),
    );
    signers.tlog = rule_tlog(imported, source, &parts);
    signers.attestations = required.into_iter().map(|r| r.attestation).collect();
    Some(signers)
}

/// The one `tlog` setting of a rule whose signers' own settings are
/// `parts` (`(path, setting, has keys)`: only key signers have one): the
/// strictest; each part it makes stricter is reported.
fn rule_tlog(
    imported: &mut Imported,
    source: &str,
    parts: &[(String, TlogSetting, bool)],
) -> TlogSetting {
    let rank = |t: TlogSetting| match t {
        TlogSetting::Ignore => 0,
        TlogSetting::IfPresent => 1,
        TlogSetting::Required => 2,
    };
    let keyed = parts.iter().filter(|(_, _, keys)| *keys);
    let Some(strictest) = keyed.clone().map(|(_, t, _)| *t).max_by_key(|t| rank(*t)) else {
        return TlogSetting::IfPresent;
    };
    for (path, tlog, _) in keyed {
        if *tlog != strictest {
            imported.finding(
                FindingKind::Stricter,
                source,
                path,
                format!(
                    "imgate has one tlog setting per rule, for the image's signature and its attestations alike: this signer's ({}) is checked as {}",
                    tlog_name(*tlog),
                    tlog_name(strictest)
                ),
            );
        }
    }
    strictest
}
