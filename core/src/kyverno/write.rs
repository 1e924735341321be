//! The imgate policy as YAML text, with comments saying where each setting
//! and pattern came from and what was not carried over. Strings are written
//! as JSON strings (valid YAML double-quoted scalars), keys as literal
//! blocks; the importer loads the text with imgate's own policy loader
//! before anything is written.

use super::build::{Plan, RuleOut};
use super::model::{Keyless, Match};
use super::settings::Settings;
use crate::policy::{Mode, OnRegistryError, PinScope, TlogSetting};

/// What an empty import trusts: a host under `.invalid` (RFC 2606), which
/// never resolves, so the policy denies every image.
pub(super) const NOTHING: &str = "imgate.invalid/nothing-imported";

/// Most sources named in one pattern's comment.
const MAX_FROM: usize = 6;

fn q(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// Header lines: what was read and what was not carried over.
pub(super) struct Header<'a> {
    pub sources: &'a [String],
    pub refused: &'a [String],
}

pub(super) fn yaml(plan: &Plan, settings: &Settings, header: &Header<'_>) -> String {
    let mut out = String::new();
    out.push_str("# imgate policy imported from Kyverno by `imgate policy import`.\n");
    out.push_str(&format!("# Read from: {}.\n", header.sources.join(", ")));
    out.push_str("# Read the import report before using it: it lists each pattern whose\n");
    out.push_str("# meaning changed, the container lists Kyverno did not check, the excluded\n");
    out.push_str("# namespaces, and what was not carried over.\n");
    if !header.refused.is_empty() {
        out.push_str("#\n# Not carried over (see the report):\n");
        for r in header.refused {
            out.push_str(&format!("#   {}\n", r.replace('\n', " ")));
        }
    }
    let (mode, why) = &settings.mode;
    let mode = if *mode == Mode::Audit {
        "audit"
    } else {
        "enforce"
    };
    out.push_str(&format!("mode: {mode}  # {why}\n"));
    let (pin, why) = &settings.pin;
    let pin = match pin {
        PinScope::Pods => "pods",
        PinScope::All => "all",
        PinScope::None => "none",
    };
    out.push_str(&format!("pinDigests: {pin}  # {why}\n"));
    let (errors, why) = &settings.on_registry_error;
    let errors = if *errors == OnRegistryError::Allow {
        "allow"
    } else {
        "deny"
    };
    out.push_str(&format!("onRegistryError: {errors}  # {why}\n"));
    if !settings.exclude.is_empty() || settings.only_in.is_some() {
        out.push_str("namespaces:\n");
        if !settings.exclude.is_empty() {
            out.push_str("  # Excluded by every imported rule.\n  exclude:\n");
            for ns in &settings.exclude {
                out.push_str(&format!("    - {}\n", q(ns)));
            }
        }
        if let Some(only) = &settings.only_in {
            out.push_str("  # Every imported rule applied only in these namespaces.\n");
            out.push_str("  excludeSelector:\n    matchExpressions:\n");
            out.push_str("      - key: kubernetes.io/metadata.name\n        operator: NotIn\n        values:\n");
            for ns in only {
                out.push_str(&format!("          - {}\n", q(ns)));
            }
        }
    }
    if plan.trusted.is_empty() {
        out.push_str("# Nothing could be carried over: this policy denies every image (outside\n");
        out.push_str(
            "# excluded namespaces) until you list the registries images may come from.\n",
        );
        out.push_str(&format!("trustedRegistries:\n  - {}\n", q(NOTHING)));
        out.push_str(&format!(
            "rules:\n  - name: nothing-imported\n    images: [{}]\n    verify: none\n",
            q(NOTHING)
        ));
        return out;
    }
    out.push_str("trustedRegistries:\n");
    for t in &plan.trusted {
        let text = t.pattern.text();
        let mut from: Vec<&str> = t
            .from
            .iter()
            .map(String::as_str)
            .filter(|f| *f != text)
            .collect();
        from.dedup();
        let comment = match from.len() {
            0 => String::new(),
            n if n <= MAX_FROM => format!("  # from {}", from.join(", ")),
            n => format!(
                "  # from {} and {} more",
                from[..MAX_FROM].join(", "),
                n - MAX_FROM
            ),
        };
        out.push_str(&format!("  - {}{comment}\n", q(&text)));
    }
    out.push_str("rules:\n");
    for rule in &plan.rules {
        rule_yaml(&mut out, rule);
    }
    out
}

fn rule_yaml(out: &mut String, rule: &RuleOut) {
    out.push_str(&format!("  - name: {}\n", q(&rule.name)));
    out.push_str(&format!("    # {}\n", rule.comment.replace('\n', " ")));
    let images: Vec<String> = rule.images.iter().map(|i| q(i)).collect();
    out.push_str(&format!("    images: [{}]\n", images.join(", ")));
    let Some(signers) = &rule.signers else {
        out.push_str("    verify: none\n");
        return;
    };
    if signers.signature {
        signers_yaml(out, "    ", &signers.keys, &signers.keyless);
    } else {
        out.push_str("    # Kyverno checked attestations only, not the image's signature.\n");
        out.push_str("    verify: none\n");
    }
    out.push_str(&format!("    tlog: {}\n", tlog_name(signers.tlog)));
    if !signers.annotations.is_empty() {
        out.push_str("    annotations:\n");
        for (k, v) in &signers.annotations {
            out.push_str(&format!("      {}: {}\n", q(k), q(v)));
        }
    }
    if signers.attestations.is_empty() {
        return;
    }
    out.push_str("    attestations:\n");
    for a in &signers.attestations {
        out.push_str(&format!("      - name: {}\n", q(&a.name)));
        out.push_str(&format!(
            "        predicateType: {}\n",
            q(&a.predicate_type)
        ));
        // Kyverno read attestations from cosign's `.att` tag only, and
        // every statement of the type there had to meet the conditions.
        out.push_str("        statements: all\n        stores: [att]\n");
        signers_yaml(out, "        ", &a.keys, &a.keyless);
        if a.conditions.is_empty() {
            continue;
        }
        out.push_str("        conditions:\n");
        for (expression, message) in &a.conditions {
            out.push_str(&format!("          - expression: {}\n", q(expression)));
            if let Some(message) = message {
                out.push_str(&format!("            message: {}\n", q(message)));
            }
        }
    }
}

/// `keys:` and `keyless:`, indented by `indent`.
fn signers_yaml(out: &mut String, indent: &str, keys: &[String], keyless: &[Keyless]) {
    if !keys.is_empty() {
        out.push_str(&format!("{indent}keys:\n"));
        for pem in keys {
            out.push_str(&format!("{indent}  - publicKey: |\n"));
            for line in pem.lines() {
                out.push_str(&format!("{indent}      {}\n", line.trim()));
            }
        }
    }
    if !keyless.is_empty() {
        out.push_str(&format!("{indent}keyless:\n"));
        for k in keyless {
            let field = |name: &str, m: &Match| match m {
                Match::Exact(v) => format!("{name}: {}", q(v)),
                Match::RegExp(v) => format!("{name}RegExp: {}", q(v)),
            };
            out.push_str(&format!("{indent}  - {}\n", field("subject", &k.subject)));
            out.push_str(&format!("{indent}    {}\n", field("issuer", &k.issuer)));
            if !k.extensions.is_empty() {
                out.push_str(&format!("{indent}    extensions:\n"));
                for (name, value) in &k.extensions {
                    out.push_str(&format!("{indent}      {name}: {}\n", q(value)));
                }
            }
        }
    }
}

/// A tlog setting as the policy file spells it.
pub(super) fn tlog_name(tlog: TlogSetting) -> &'static str {
    match tlog {
        TlogSetting::Required => "required",
        TlogSetting::IfPresent => "ifPresent",
        TlogSetting::Ignore => "ignore",
    }
}
