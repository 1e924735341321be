//! `policies.kyverno.io` ValidatingPolicy and ImageValidatingPolicy (and
//! their namespaced kinds): `validationActions` to the mode, the
//! `matchConstraints` to the scope, CEL validations of recognised shapes to
//! image checks ([`cel`](super::cel)), and an ImageValidatingPolicy's
//! `matchImageReferences` and cosign attestors to a verification.
//!
//! Which strings an ImageValidatingPolicy's globs are compared with is not
//! pinned down here, so the verification covers the images either reading
//! matches (stricter, never looser).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::attest;
use super::cel;
use super::cel_attest;
use super::clusterpolicy::ignores_failures;
use super::cond::Cond;
use super::model::{Check, Imported, Lists, NsSet, PolicyInfo, RuleInfo, Signers, Verification};
use super::names::World;
use super::report::FindingKind;
use super::validate::mentions_image;
use super::verify::Signing;
use super::ImportError;

/// Resources whose objects run containers.
const POD_RESOURCES: &[&str] = &[
    "pods",
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "jobs",
    "cronjobs",
    "replicationcontrollers",
    "*",
];

const KNOWN: &[&str] = &[
    "validationActions",
    "failurePolicy",
    "matchConstraints",
    "matchConditions",
    "variables",
    "validations",
    "auditAnnotations",
    "webhookConfiguration",
    "evaluation",
    "autogen",
    "matchImageReferences",
    "attestors",
    "attestations",
    "validationConfigurations",
    "credentials",
];

/// Reads one policy; returns whether it had an image check.
pub(super) fn read(
    imported: &mut Imported,
    source: &str,
    object: &Value,
) -> Result<bool, ImportError> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let image_policy = kind.contains("Image");
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        imported.refuse(source, "spec", "no spec", false);
        return Ok(false);
    };
    if object
        .pointer("/spec/evaluation/mode")
        .and_then(Value::as_str)
        == Some("JSON")
    {
        imported.refuse(
            source,
            "spec.evaluation.mode",
            "a policy for JSON payloads, not Kubernetes objects",
            false,
        );
        return Ok(false);
    }
    let mut poisoned = Vec::new();
    for key in spec.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        let at = format!("spec.{key}");
        if mentions_image(&spec[key]) {
            poisoned.push(at);
        } else {
            imported.refuse(
                source,
                &at,
                "a policy field the importer does not know",
                false,
            );
        }
    }
    let actions: Vec<&str> = spec
        .get("validationActions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_else(|| vec!["Deny"]);
    let mut enforce = actions.contains(&"Deny");
    if object
        .pointer("/spec/evaluation/admission/enabled")
        .and_then(Value::as_bool)
        == Some(false)
    {
        imported.finding(
            FindingKind::Note,
            source,
            "spec.evaluation.admission.enabled",
            "Kyverno never decided admissions with this policy; read as Audit",
        );
        enforce = false;
    }
    imported.policies.push(PolicyInfo {
        source: source.to_string(),
        ignore_failures: ignores_failures(spec.get("failurePolicy")),
        timeout_seconds: object
            .pointer("/spec/webhookConfiguration/timeoutSeconds")
            .and_then(Value::as_u64),
    });
    let namespace = kind.starts_with("Namespaced").then(|| {
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
    });
    let Some(unconstrained) = scope(imported, source, spec.get("matchConstraints"), namespace)
    else {
        imported.finding(
            FindingKind::Note,
            source,
            "spec.matchConstraints",
            "matches no resource that runs containers: not imported",
        );
        return Ok(false);
    };
    if spec.contains_key("matchConditions") {
        imported.finding(
            FindingKind::Stricter,
            source,
            "spec.matchConditions",
            "matchConditions are not imported: the image checks always apply",
        );
    }
    let mut reader = cel::Reader {
        imported,
        source,
        variables: BTreeMap::new(),
    };
    for (i, v) in spec
        .get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (Some(name), Some(text)) = (
            v.get("name").and_then(Value::as_str),
            v.get("expression").and_then(Value::as_str),
        ) else {
            continue;
        };
        if let Some(e) = reader.parse(text, &format!("spec.variables[{i}].expression"))? {
            reader.variables.insert(name.to_string(), e);
        }
    }
    let rule = reader.imported.rules.len();
    reader.imported.rules.push(RuleInfo {
        source: source.to_string(),
        path: "spec".into(),
        label: object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("policy")
            .to_string(),
        enforce,
        unconstrained,
    });
    let mut images = false;
    let mut others = Vec::new();
    let mut found = Found::default();
    for (k, v) in spec
        .get("validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.validations[{k}].expression");
        let text = v
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !cel::about_images(text) {
            others.push(path);
            continue;
        }
        images = true;
        let Some(e) = reader.parse(text, &path)? else {
            if image_policy {
                found.refused.push(path);
            } else {
                reader.imported.checks.push(Check {
                    rule,
                    cond: Cond::Unknown,
                    lists: Lists::ALL,
                });
            }
            continue;
        };
        if image_policy {
            let message = v.get("message").and_then(Value::as_str).map(str::to_string);
            match (cel::signature_check(&e), cel_attest::recognise(&e)) {
                (Some((lists, names)), _) => found.signatures.push((path, lists, names)),
                (None, Ok(Some(check))) => found.checks.push((path, check, message)),
                (None, unrecognised) => {
                    let why = match unrecognised {
                        Err(why) => why,
                        _ if text.contains("verifyAttestationSignatures")
                            || text.contains("extractPayload") =>
                        {
                            "not `images.containers.map(i, verifyAttestationSignatures(i, attestations.a, [attestors.x])).all(e, e > 0)` nor `images.containers.map(i, <a condition on extractPayload(i, attestations.a)>).all(e, e)`".into()
                        }
                        _ => "not `images.containers.map(i, verifyImageSignatures(i, [attestors.x])).all(e, e > 0)`".into(),
                    };
                    reader.imported.refuse(
                        source,
                        &path,
                        &format!("CEL not recognised: {why}"),
                        true,
                    );
                    found.refused.push(path);
                }
            }
            continue;
        }
        let (conds, other_parts) = reader.validation(&e, &path)?;
        if other_parts {
            others.push(format!("{path} (its parts not about images)"));
        }
        for (lists, cond) in conds {
            reader.imported.checks.push(Check { rule, cond, lists });
        }
    }
    let imported = reader.imported;
    if !others.is_empty() {
        imported.refuse(
            source,
            "spec.validations",
            &format!("validations not about images ({})", others.join(", ")),
            false,
        );
    }
    if image_policy {
        images |= verification(imported, source, spec, rule, found)?;
    }
    if !poisoned.is_empty() && images {
        for at in &poisoned {
            imported.refuse(
                source,
                at,
                "a policy field the importer does not know",
                true,
            );
        }
        for c in imported.checks.iter_mut().filter(|c| c.rule == rule) {
            c.cond = Cond::and(vec![c.cond.clone(), Cond::Unknown]);
        }
        for v in imported.verifications.iter_mut().filter(|v| v.rule == rule) {
            v.signers = None;
        }
    }
    if !images {
        imported.rules.truncate(rule);
        imported.refuse(
            source,
            "spec.validations",
            "no validation checks images",
            false,
        );
    }
    Ok(images)
}

/// The namespaces the policy leaves alone, or `None` when it matches
/// nothing that runs containers.
fn scope(
    imported: &mut Imported,
    source: &str,
    constraints: Option<&Value>,
    namespace: Option<&str>,
) -> Option<NsSet> {
    let empty = Value::Null;
    let c = constraints.unwrap_or(&empty);
    let rules = c
        .get("resourceRules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut pods = false;
    for (i, r) in rules.iter().enumerate() {
        let resources: Vec<&str> = r
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let here: Vec<&str> = resources
            .iter()
            .map(|r| r.split('/').next().unwrap_or_default())
            .filter(|r| POD_RESOURCES.contains(r))
            .collect();
        if here.is_empty() {
            continue;
        }
        pods = true;
        if !here.iter().any(|r| *r == "pods" || *r == "*") {
            imported.finding(FindingKind::Stricter, source, &format!("spec.matchConstraints.resourceRules[{i}].resources"), format!("Kyverno applied this policy to {} only; imgate checks every Pod and pod template", here.join(", ")));
        }
        let ops: Vec<&str> = r
            .get("operations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !ops.is_empty() && !ops.iter().any(|o| *o == "CREATE" || *o == "*") {
            imported.finding(
                FindingKind::Stricter,
                source,
                &format!("spec.matchConstraints.resourceRules[{i}].operations"),
                "Kyverno did not check creations; imgate does",
            );
        }
    }
    if !pods {
        return None;
    }
    for field in ["objectSelector", "excludeResourceRules"] {
        if c.get(field).is_some() {
            imported.finding(
                FindingKind::Stricter,
                source,
                &format!("spec.matchConstraints.{field}"),
                "not imported: imgate applies the policy to every object",
            );
        }
    }
    let mut only: Option<BTreeSet<String>> = namespace.map(|n| BTreeSet::from([n.to_string()]));
    let mut excluded = BTreeSet::new();
    if let Some(selector) = c.get("namespaceSelector") {
        let names = |e: &Value| -> BTreeSet<String> {
            e.get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        for (i, e) in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let by_name =
                e.get("key").and_then(Value::as_str) == Some("kubernetes.io/metadata.name");
            match (by_name, e.get("operator").and_then(Value::as_str)) {
                (true, Some("NotIn")) => excluded.extend(names(e)),
                (true, Some("In")) => {
                    let these = names(e);
                    only = Some(match only {
                        Some(o) => o.intersection(&these).cloned().collect(),
                        None => these,
                    });
                }
                _ => imported.finding(
                    FindingKind::Stricter,
                    source,
                    &format!("spec.matchConstraints.namespaceSelector.matchExpressions[{i}]"),
                    "namespaces chosen by labels: imgate does not follow it and checks them",
                ),
            }
        }
        if selector
            .get("matchLabels")
            .is_some_and(|m| m.as_object().is_some_and(|m| !m.is_empty()))
        {
            imported.finding(
                FindingKind::Stricter,
                source,
                "spec.matchConstraints.namespaceSelector.matchLabels",
                "namespaces chosen by labels: imgate does not follow it and checks them",
            );
        }
    }
    let scope = only.map_or_else(NsSet::all, NsSet::Only);
    Some(scope.complement().union(NsSet::Only(excluded)))
}

/// An ImageValidatingPolicy's recognised verification checks.
#[derive(Default)]
struct Found {
    /// `verifyImageSignatures`: field path, lists, attestor names.
    signatures: Vec<(String, Lists, Vec<String>)>,
    /// Attestation checks: field path, check, the validation's message.
    checks: Vec<(String, cel_attest::Check, Option<String>)>,
    /// Field paths of refused checks.
    refused: Vec<String>,
}

/// An ImageValidatingPolicy's verification: the images it matches, signed
/// by any of the attestors its signature checks name, carrying the
/// attestations its attestation checks name.
fn verification(
    imported: &mut Imported,
    source: &str,
    spec: &serde_json::Map<String, Value>,
    rule: usize,
    found: Found,
) -> Result<bool, ImportError> {
    let Found {
        signatures,
        checks,
        refused,
    } = found;
    if signatures.is_empty() && checks.is_empty() && refused.is_empty() {
        return Ok(false);
    }
    let mut refs = Vec::new();
    let mut refs_unknown = !spec.contains_key("matchImageReferences");
    for (i, m) in spec
        .get("matchImageReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.matchImageReferences[{i}]");
        match m.get("glob").and_then(Value::as_str) {
            Some(glob) if !glob.contains(['[', '{']) => {
                if let Cond::Atom(n) = imported.glob(source, &format!("{at}.glob"), glob)? {
                    refs.push(n);
                }
            }
            _ => {
                refs_unknown = true;
                imported.finding(FindingKind::Stricter, source, &at, "image references chosen in a way imgate cannot read: imgate verifies every image instead");
            }
        }
    }
    let config = spec.get("validationConfigurations");
    let flag = |name: &str, default: bool| {
        config
            .and_then(|c| c.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    let mutate_digest = flag("mutateDigest", true);
    for (name, message) in [
        (
            "required",
            "required: false: imgate's validating webhook checks every image again",
        ),
        (
            "verifyDigest",
            "verifyDigest: false: imgate pins and checks by digest regardless",
        ),
    ] {
        if !flag(name, true) {
            imported.finding(
                FindingKind::Stricter,
                source,
                &format!("spec.validationConfigurations.{name}"),
                message,
            );
        }
    }
    if spec.contains_key("credentials") {
        imported.finding(FindingKind::Note, source, "spec.credentials", "registry credentials: imgate reads the pod's pull secrets and its own docker config instead");
    }
    let required = cel_attest::attestations(imported, source, spec, &checks);
    let mut s = Signing::new(imported, source);
    // Their refusals are reported already; they make this one fail closed.
    s.refused = !refused.is_empty();
    if spec.contains_key("images") {
        s.refuse(
            "spec.images",
            "custom image locations (images) have no imgate equivalent",
        );
    }
    let mut names: Option<Vec<String>> = None;
    let mut lists = checks
        .iter()
        .fold(Lists::default(), |l, (_, c, _)| l.union(c.lists()));
    for (path, on, these) in &signatures {
        lists = lists.union(*on);
        match &names {
            Some(n) if n != these => s.refuse(path, "several signature checks with different attestors must all hold: imgate accepts any one signer"),
            _ => names = Some(these.clone()),
        }
    }
    if (!signatures.is_empty() || !checks.is_empty()) && lists != Lists::ALL {
        s.finding(
            FindingKind::Stricter,
            "spec.validations",
            "Kyverno verified only some container lists; imgate verifies every image",
        );
    }
    let attestors = spec
        .get("attestors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for name in names.unwrap_or_default() {
        let found = attestors
            .iter()
            .enumerate()
            .find(|(_, a)| a.get("name").and_then(Value::as_str) == Some(&name));
        let Some((i, attestor)) = found else {
            s.refuse("spec.attestors", &format!("no attestor named {name}"));
            continue;
        };
        let at = format!("spec.attestors[{i}]");
        match attestor.get("cosign") {
            Some(cosign) => s.cosign(cosign, &format!("{at}.cosign")),
            None => s.refuse(&at, "only cosign attestors are verified by imgate"),
        }
    }
    let signers = if signatures.is_empty() && !checks.is_empty() {
        (!s.refused).then(Signers::unsigned)
    } else {
        s.finish("spec")
    };
    let signers = attest::with_attestations(imported, source, "spec", signers, required);
    imported.verifications.push(Verification {
        rule,
        path: "spec".into(),
        refs,
        refs_unknown,
        worlds: vec![World::Raw, World::Normalised],
        skip: Vec::new(),
        signers,
        mutate_digest,
    });
    Ok(true)
}
