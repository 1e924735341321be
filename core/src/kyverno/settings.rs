//! The policy-wide settings of the written policy: mode from the failure
//! actions, `onRegistryError` from the failure policies, `pinDigests`, and
//! the namespaces every imported rule left alone; with the findings that
//! explain each choice.

use std::collections::BTreeSet;

use super::build::Plan;
use super::model::{Imported, NsSet};
use super::report::{Finding, FindingKind};
use crate::policy::{Mode, OnRegistryError, PinScope};

/// Namespaces the deploy manifests' webhooks never send to imgate.
const NEVER_SENT: &[&str] = &["kube-system", "imgate-system"];

/// Namespaces Kyverno's default `resourceFilters` keep from every policy.
const KYVERNO_FILTERED: &[&str] = &["kube-system", "kube-public", "kube-node-lease", "kyverno"];

/// The settings to write, each with the comment that says where it came from.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub mode: (Mode, String),
    pub pin: (PinScope, String),
    pub on_registry_error: (OnRegistryError, String),
    pub exclude: Vec<String>,
    /// Every rule applied only in these namespaces: exclude all others.
    pub only_in: Option<Vec<String>>,
}

pub(super) fn settings(imported: &mut Imported, plan: &Plan) -> Settings {
    Settings {
        mode: mode(imported),
        pin: pin(imported, plan),
        on_registry_error: registry_errors(imported),
        ..namespaces(imported)
    }
}

fn mode(imported: &mut Imported) -> (Mode, String) {
    let (enforced, audited): (Vec<_>, Vec<_>) =
        imported.rules.iter().cloned().partition(|r| r.enforce);
    if enforced.is_empty() {
        return (
            Mode::Audit,
            "every imported rule was Audit in Kyverno".into(),
        );
    }
    for r in &audited {
        imported.finding(
            FindingKind::Stricter,
            &r.source,
            &r.path,
            "Audit in Kyverno; imgate has one mode per policy and enforces it with the enforced rules (run the imgate policy in audit mode first)",
        );
    }
    (
        Mode::Enforce,
        format!("Enforce in Kyverno ({})", enforced[0].source),
    )
}

fn pin(imported: &mut Imported, plan: &Plan) -> (PinScope, String) {
    if plan.digest_required {
        return (
            PinScope::All,
            "Kyverno required digests in references: imgate pins them".into(),
        );
    }
    let source = imported
        .rules
        .first()
        .map(|r| r.source.clone())
        .unwrap_or_default();
    if plan.verifications_pin {
        imported.finding(
            FindingKind::Note,
            &source,
            "",
            "mutateDigest: Kyverno rewrote tags to digests in Pods and in controllers' templates; imgate pins Pods (pinDigests: pods) so GitOps tools see no drift; pinDigests: all does what Kyverno did",
        );
        return (PinScope::Pods, "mutateDigest in Kyverno".into());
    }
    imported.finding(
        FindingKind::Note,
        &source,
        "",
        "validate rules never rewrote images: pinDigests: none keeps it so, and imgate then calls no registry for these images; pinDigests: pods pins each tag to the digest it names",
    );
    (
        PinScope::None,
        "Kyverno's validate rules did not rewrite images".into(),
    )
}

fn registry_errors(imported: &mut Imported) -> (OnRegistryError, String) {
    let policies = imported.policies.clone();
    let ignoring: Vec<&str> = policies
        .iter()
        .filter(|p| p.ignore_failures == Some(true))
        .map(|p| p.source.as_str())
        .collect();
    for p in policies.iter().filter(|p| p.ignore_failures.is_none()) {
        imported.finding(
            FindingKind::Note,
            &p.source,
            "spec.failurePolicy",
            "not set: Kyverno's default is Fail. Kyverno's Helm chart can set Ignore for every policy (features.forceFailurePolicyIgnore.enabled, the --forceFailurePolicyIgnore flag), which a ClusterPolicy does not show: if yours does, the cluster admitted pods whenever Kyverno could not decide. imgate writes onRegistryError: deny (fail closed when a registry is unavailable); choose deliberately",
        );
    }
    if let Some(seconds) = policies.iter().filter_map(|p| p.timeout_seconds).max() {
        let source = policies
            .iter()
            .find(|p| p.timeout_seconds == Some(seconds))
            .map(|p| p.source.clone())
            .unwrap_or_default();
        imported.finding(
            FindingKind::Note,
            &source,
            "spec.webhookTimeoutSeconds",
            format!("Kyverno's webhooks waited up to {seconds}s: give imgate's webhooks timeoutSeconds: {seconds} (deploy/) and `imgate webhook --deadline` a little less, so imgate answers by onRegistryError before the API server gives up"),
        );
    }
    if !policies.is_empty() && ignoring.len() == policies.len() {
        return (
            OnRegistryError::Allow,
            format!("failurePolicy: Ignore ({})", ignoring.join(", ")),
        );
    }
    if !ignoring.is_empty() {
        imported.finding(
            FindingKind::Stricter,
            ignoring[0],
            "spec.failurePolicy",
            "Ignore here but not in every policy: imgate has one onRegistryError and fails closed",
        );
    }
    (
        OnRegistryError::Deny,
        "fail closed (Kyverno's default failurePolicy: Fail)".into(),
    )
}

fn namespaces(imported: &mut Imported) -> Settings {
    let sets: Vec<NsSet> = imported
        .rules
        .iter()
        .map(|r| r.unconstrained.clone())
        .collect();
    let left_alone = sets
        .iter()
        .cloned()
        .reduce(NsSet::intersect)
        .unwrap_or_else(NsSet::none);
    let (mut exclude, only_in) = match left_alone {
        NsSet::Only(names) => (names, None),
        NsSet::AllBut(names) => {
            let list: Vec<String> = names.iter().cloned().collect();
            let source = imported.rules[0].source.clone();
            imported.finding(
                FindingKind::Stricter,
                &source,
                "",
                format!(
                    "every imported rule applied only in {}: imgate excludes the other namespaces by label (kubernetes.io/metadata.name NotIn), which needs the webhook to read namespace labels (--kube-pull-secrets); without that it checks every namespace",
                    list.join(", ")
                ),
            );
            (BTreeSet::new(), Some(list))
        }
    };
    let invalid: Vec<String> = exclude.iter().filter(|n| !dns_label(n)).cloned().collect();
    for name in &invalid {
        exclude.remove(name);
        let source = imported.rules[0].source.clone();
        imported.finding(
            FindingKind::Stricter,
            &source,
            "",
            format!("{name:?} is not a namespace name: not excluded"),
        );
    }
    // Excluded by some rules only: imgate cannot, so it checks them.
    let mut partly = BTreeSet::new();
    for set in &sets {
        if let NsSet::Only(names) = set {
            partly.extend(names.iter().filter(|n| !exclude.contains(*n)).cloned());
        }
    }
    if only_in.is_none() {
        for name in partly.iter().filter(|n| dns_label(n)) {
            let rule = imported
                .rules
                .iter()
                .find(|r| matches!(&r.unconstrained, NsSet::Only(s) if s.contains(name)))
                .map(|r| (r.source.clone(), r.path.clone()));
            if let Some((source, path)) = rule {
                let mut f = Finding::new(
                    FindingKind::Stricter,
                    &source,
                    &path,
                    "excluded by this rule but not by every imported rule: imgate checks it",
                );
                f.pattern = Some(name.clone());
                imported.findings.push(f);
            }
        }
    }
    let source = imported
        .rules
        .first()
        .map(|r| r.source.clone())
        .unwrap_or_default();
    for name in &exclude {
        let message = if NEVER_SENT.contains(&name.as_str()) {
            "excluded; imgate's webhooks also never receive it (their namespaceSelector, deploy/base/webhooks.yaml)"
        } else {
            "excluded (namespaces.exclude): imgate receives its reviews and allows them; label it imgate.dev/ignore=true so the API server never calls imgate for it, as the webhooks' namespaceSelector does for kube-system and imgate-system"
        };
        let mut f = Finding::new(FindingKind::ExcludedNamespace, &source, "", message);
        f.pattern = Some(name.clone());
        imported.findings.push(f);
    }
    let unfiltered: Vec<&str> = KYVERNO_FILTERED
        .iter()
        .filter(|n| !exclude.contains(**n) && !NEVER_SENT.contains(n))
        .copied()
        .collect();
    if !unfiltered.is_empty() && !imported.rules.is_empty() {
        imported.finding(
            FindingKind::Note,
            &source,
            "",
            format!(
                "Kyverno's default configuration (resourceFilters) never applied policies in {}; imgate checks them unless you exclude them (its webhooks skip kube-system and imgate-system)",
                unfiltered.join(", ")
            ),
        );
    }
    Settings {
        mode: (Mode::Enforce, String::new()),
        pin: (PinScope::Pods, String::new()),
        on_registry_error: (OnRegistryError::Deny, String::new()),
        exclude: exclude.into_iter().collect(),
        only_in,
    }
}

/// RFC 1123 label: what namespace names are.
fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
