//! `kyverno.io` ClusterPolicy and Policy: the spec's failure action,
//! failure policy and timeout, and each rule's scope, `validate` image
//! checks and `verifyImages` entries.

use serde_json::Value;

use super::attest;
use super::cond::Cond;
use super::model::{Check, Imported, PolicyInfo, RuleInfo, Signers, Verification};
use super::names::World;
use super::report::FindingKind;
use super::scope;
use super::validate::{mentions_image, Reader};
use super::verify::Signing;
use super::ImportError;

/// Spec fields the importer knows; others are refused (fail closed).
const SPEC_KEYS: &[&str] = &[
    "background",
    "validationFailureAction",
    "validationFailureActionOverrides",
    "failurePolicy",
    "webhookTimeoutSeconds",
    "webhookConfiguration",
    "rules",
    "applyRules",
    "admission",
    "schemaValidation",
    "useServerSideApply",
    "mutateExistingOnPolicyUpdate",
    "generateExisting",
    "generateExistingOnPolicyUpdate",
    "emitWarning",
];

/// Whether a failure action says Enforce.
pub(super) fn enforces(action: Option<&Value>) -> Option<bool> {
    action
        .and_then(Value::as_str)
        .map(|a| a.eq_ignore_ascii_case("enforce"))
}

/// `Ignore` → `Some(true)`, `Fail` → `Some(false)`.
pub(super) fn ignores_failures(policy: Option<&Value>) -> Option<bool> {
    policy
        .and_then(Value::as_str)
        .map(|p| p.eq_ignore_ascii_case("ignore"))
}

/// Reads one policy; returns whether it had an image rule.
pub(super) fn read(
    imported: &mut Imported,
    source: &str,
    object: &Value,
) -> Result<bool, ImportError> {
    let namespace = (object.get("kind").and_then(Value::as_str) == Some("Policy")).then(|| {
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
    });
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        imported.refuse(source, "spec", "no spec", false);
        return Ok(false);
    };
    let unknown: Vec<String> = spec
        .keys()
        .filter(|k| !SPEC_KEYS.contains(&k.as_str()))
        .map(|k| format!("spec.{k}"))
        .collect();
    let mut enforce = enforces(spec.get("validationFailureAction")).unwrap_or(false);
    if let Some(overrides) = spec
        .get("validationFailureActionOverrides")
        .and_then(Value::as_array)
    {
        if overrides
            .iter()
            .any(|o| enforces(o.get("action")) != Some(enforce))
        {
            imported.finding(
                FindingKind::Stricter,
                source,
                "spec.validationFailureActionOverrides",
                "Kyverno enforced some namespaces and audited others; imgate has one mode for the policy, and enforces if any namespace was enforced",
            );
            enforce |= overrides
                .iter()
                .any(|o| enforces(o.get("action")) == Some(true));
        }
    }
    if spec.get("admission").and_then(Value::as_bool) == Some(false) {
        imported.finding(
            FindingKind::Note,
            source,
            "spec.admission",
            "admission: false: Kyverno never decided admissions with this policy (background reports only); its rules are read as Audit",
        );
        enforce = false;
    }
    let webhook = spec.get("webhookConfiguration");
    imported.policies.push(PolicyInfo {
        source: source.to_string(),
        ignore_failures: ignores_failures(
            webhook
                .and_then(|w| w.get("failurePolicy"))
                .or(spec.get("failurePolicy")),
        ),
        timeout_seconds: webhook
            .and_then(|w| w.get("timeoutSeconds"))
            .or(spec.get("webhookTimeoutSeconds"))
            .and_then(Value::as_u64),
    });
    if spec.get("applyRules").and_then(Value::as_str) == Some("One") {
        imported.finding(
            FindingKind::Stricter,
            source,
            "spec.applyRules",
            "applyRules: One: Kyverno stopped at the first rule that matched; imgate applies every rule",
        );
    }
    let first_check = imported.checks.len();
    let first_verification = imported.verifications.len();
    let mut images = false;
    for (i, rule) in spec
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut r = RuleReader {
            imported: &mut *imported,
            source,
            path: format!("spec.rules[{i}]"),
            label: rule
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("rule-{i}"), str::to_string),
            enforce,
            namespace,
            context: rule
                .get("context")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect(),
        };
        images |= r.read(rule)?;
    }
    if images && !unknown.is_empty() {
        for path in &unknown {
            imported.refuse(
                source,
                path,
                "a policy setting the importer does not know",
                true,
            );
        }
        poison(imported, first_check, first_verification);
    } else {
        for path in &unknown {
            imported.refuse(
                source,
                path,
                "a policy setting the importer does not know",
                false,
            );
        }
    }
    Ok(images)
}

/// Makes the checks and verifications from `first_*` on deny what they cover.
fn poison(imported: &mut Imported, first_check: usize, first_verification: usize) {
    for check in &mut imported.checks[first_check..] {
        check.cond = Cond::and(vec![check.cond.clone(), Cond::Unknown]);
    }
    for v in &mut imported.verifications[first_verification..] {
        v.signers = None;
    }
}

struct RuleReader<'a> {
    imported: &'a mut Imported,
    source: &'a str,
    path: String,
    label: String,
    enforce: bool,
    namespace: Option<&'a str>,
    /// The names of the rule's `context` entries (Kyverno variables).
    context: Vec<String>,
}

impl RuleReader<'_> {
    /// Reads one rule; returns whether it was an image rule.
    fn read(&mut self, rule: &Value) -> Result<bool, ImportError> {
        let source = self.source;
        let path = self.path.clone();
        let Some(map) = rule.as_object() else {
            self.imported.refuse(source, &path, "not a mapping", false);
            return Ok(false);
        };
        let before_scope = self.imported.findings.len();
        let scope = scope::read(self.imported, source, &path, rule, self.namespace);
        let after_scope = self.imported.findings.len();
        let first_rule = self.imported.rules.len();
        let first_check = self.imported.checks.len();
        let first_verification = self.imported.verifications.len();
        let mut images = false;
        let mut gates = Vec::new();
        let mut poisoned = Vec::new();
        for (key, value) in map {
            let at = format!("{path}.{key}");
            match key.as_str() {
                "name" | "match" | "exclude" | "skipBackgroundRequests" | "reportProperties" => {}
                "preconditions" | "celPreconditions" => gates.push(at),
                "context" => self.imported.refuse(
                    source,
                    &at,
                    "context lookups (apiCall, configMap, variables) are not imported",
                    false,
                ),
                "mutate" => self.imported.refuse(
                    source,
                    &at,
                    "mutate rules are not imported (imgate rewrites only tags, to digests)",
                    false,
                ),
                "generate" => {
                    self.imported
                        .refuse(source, &at, "generate rules are not imported", false)
                }
                "validate" => images |= self.validate(value, &at, &scope)?,
                "verifyImages" => {
                    for (j, entry) in value.as_array().into_iter().flatten().enumerate() {
                        self.verification(entry, &format!("{at}[{j}]"), &scope)?;
                        images = true;
                    }
                }
                "imageExtractors" => {
                    poisoned.push((at, "custom image locations (imageExtractors)"))
                }
                _ if mentions_image(value) => {
                    poisoned.push((at, "a rule field the importer does not know"))
                }
                _ => self.imported.refuse(
                    source,
                    &at,
                    "a rule field the importer does not know",
                    false,
                ),
            }
        }
        if !images {
            // What the scope says matters only for image rules.
            self.imported.findings.drain(before_scope..after_scope);
            return Ok(false);
        }
        if !scope.pods {
            self.imported.rules.truncate(first_rule);
            self.imported.checks.truncate(first_check);
            self.imported.verifications.truncate(first_verification);
            self.imported.finding(
                FindingKind::Note,
                source,
                &path,
                "matches no kind that runs containers: not imported",
            );
            return Ok(false);
        }
        for gate in gates {
            self.imported.finding(
                FindingKind::Stricter,
                source,
                &gate,
                "preconditions are not imported: the rule's image checks always apply",
            );
        }
        for (at, why) in &poisoned {
            self.imported.refuse(source, at, why, true);
        }
        if !poisoned.is_empty() {
            poison(self.imported, first_check, first_verification);
        }
        Ok(true)
    }

    fn rule_info(&mut self, path: &str, enforce: bool, scope: &scope::Scope) -> usize {
        // `name/verifyImages[1]` is `name-1`; the first entry is the rule's name.
        let entry = path
            .rsplit_once("verifyImages[")
            .and_then(|(_, n)| n.strip_suffix(']'));
        let label = match entry {
            Some(n) if n != "0" => format!("{}-{n}", self.label),
            _ => self.label.clone(),
        };
        self.imported.rules.push(RuleInfo {
            source: self.source.to_string(),
            path: path.to_string(),
            label,
            enforce,
            unconstrained: scope.unconstrained.clone(),
        });
        self.imported.rules.len() - 1
    }

    fn validate(
        &mut self,
        validate: &Value,
        path: &str,
        scope: &scope::Scope,
    ) -> Result<bool, ImportError> {
        let mut reader = Reader {
            imported: &mut *self.imported,
            source: self.source,
            about_images: false,
            not_images: Vec::new(),
        };
        let per_list = reader.validate(validate, path)?;
        let (about_images, not_images) = (reader.about_images, reader.not_images);
        let source = self.source;
        if !about_images {
            self.imported.refuse(
                source,
                path,
                "a validation that does not check images",
                false,
            );
            return Ok(false);
        }
        if !not_images.is_empty() {
            self.imported.refuse(
                source,
                path,
                &format!("checks of other fields ({})", not_images.join(", ")),
                false,
            );
        }
        let enforce = enforces(validate.get("failureAction")).unwrap_or(self.enforce);
        let rule = self.rule_info(path, enforce, scope);
        if let Some(cond) = per_list.combined() {
            self.imported.checks.push(Check {
                rule,
                cond,
                lists: per_list.lists(),
            });
        }
        Ok(true)
    }

    fn verification(
        &mut self,
        entry: &Value,
        path: &str,
        scope: &scope::Scope,
    ) -> Result<(), ImportError> {
        let source = self.source;
        let mut refs = Vec::new();
        let mut refs_unknown = false;
        let mut skip = Vec::new();
        let mut globs: Vec<(String, &str)> = Vec::new();
        if let Some(image) = entry.get("image").and_then(Value::as_str) {
            globs.push((format!("{path}.image"), image));
        }
        for (i, r) in entry
            .get("imageReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            globs.push((
                format!("{path}.imageReferences[{i}]"),
                r.as_str().unwrap_or("{{"),
            ));
        }
        if globs.is_empty() {
            refs_unknown = true;
        }
        for (at, glob) in globs {
            if glob.contains("{{") {
                refs_unknown = true;
                self.imported.finding(
                    FindingKind::Stricter,
                    source,
                    &at,
                    "a templated image reference: imgate verifies every image instead",
                );
            } else if let Cond::Atom(n) = self.imported.glob(source, &at, glob)? {
                refs.push(n);
            }
        }
        for (i, r) in entry
            .get("skipImageReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{path}.skipImageReferences[{i}]");
            match r.as_str() {
                Some(glob) if !glob.contains("{{") => {
                    if let Cond::Atom(n) = self.imported.glob(source, &at, glob)? {
                        skip.push(n);
                    }
                }
                _ => self.imported.finding(
                    FindingKind::Stricter,
                    source,
                    &at,
                    "a skip the importer cannot read: those images are verified too",
                ),
            }
        }
        let enforce = enforces(entry.get("failureAction")).unwrap_or(self.enforce);
        let mutate_digest = entry
            .get("mutateDigest")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let mut s = Signing::new(self.imported, source);
        let mut attestations = None;
        for (key, value) in entry.as_object().into_iter().flatten() {
            let at = format!("{path}.{key}");
            match key.as_str() {
                "image" | "imageReferences" | "skipImageReferences" | "failureAction" | "mutateDigest" | "useCache" | "cosignOCI11" => {}
                "attestors" => s.attestors(value, &at),
                "key" => {
                    let pem = value.as_str().unwrap_or_default();
                    s.pem_key(pem, &at);
                }
                "subject" | "issuer" | "subjectRegExp" | "issuerRegExp" | "additionalExtensions" | "roots" => {}
                "type" => match value.as_str() {
                    Some("Cosign") => {}
                    Some("SigstoreBundle") => s.finding(FindingKind::Note, &at, "SigstoreBundle: imgate reads bundles and the older .sig signatures alike"),
                    _ => s.refuse(&at, "only cosign signatures are verified by imgate"),
                },
                "attestations" => {
                    if value.as_array().is_some_and(|a| !a.is_empty()) {
                        if entry.get("type").and_then(Value::as_str) == Some("SigstoreBundle") {
                            s.refuse(&at, "attestations of type: SigstoreBundle: the importer does not translate how Kyverno reads them");
                        }
                        attestations = Some((value, at));
                    }
                }
                "repository" => s.refuse(&at, "signatures in another repository have no imgate equivalent"),
                "validate" => s.refuse(&at, "checks of image metadata have no imgate equivalent"),
                "required" => {
                    if value.as_bool() == Some(false) {
                        s.finding(FindingKind::Stricter, &at, "required: false: imgate's validating webhook checks every image again");
                    }
                }
                "verifyDigest" => {
                    if value.as_bool() == Some(false) {
                        s.finding(FindingKind::Stricter, &at, "verifyDigest: false: imgate pins and checks by digest regardless");
                    }
                }
                "imageRegistryCredentials" => s.finding(FindingKind::Note, &at, "registry credentials: imgate reads the pod's pull secrets and its own docker config instead"),
                _ => s.refuse(&at, &format!("`{key}` is not understood by the importer")),
            }
        }
        if entry.get("subject").is_some()
            || entry.get("issuer").is_some()
            || entry.get("subjectRegExp").is_some()
        {
            s.keyless(entry, path);
        }
        // Without attestors Kyverno checks no signature of the image, only
        // its attestations (when it has some; else it checks nothing, and
        // the import refuses it).
        let signed = ["attestors", "key", "subject", "issuer", "subjectRegExp"]
            .iter()
            .any(|k| entry.get(*k).is_some());
        let mut signers = if signed || attestations.is_none() {
            s.finish(path)
        } else {
            (!s.refused).then(Signers::unsigned)
        };
        if let Some((value, at)) = attestations {
            let required = attest::read(self.imported, source, value, &at, &self.context);
            signers = attest::with_attestations(self.imported, source, path, signers, required);
        }
        if !enforce && mutate_digest {
            self.imported.finding(
                FindingKind::Changed,
                source,
                path,
                "Audit with mutateDigest: Kyverno refuses this combination (the policy does not load); imgate's audit mode pins nothing",
            );
        }
        let rule = self.rule_info(path, enforce, scope);
        self.imported.verifications.push(Verification {
            rule,
            path: path.to_string(),
            refs,
            refs_unknown,
            worlds: vec![World::Normalised],
            skip,
            signers,
            mutate_digest,
        });
        Ok(())
    }
}
