//! The import report: what was written, and every finding with the policy
//! and field it is about, rendered for people ([`Report::to_text`]) or
//! machines (serde).

use serde::Serialize;

/// What a finding is about. Every kind but [`FindingKind::Note`] makes the
/// import "flagged" (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingKind {
    /// Not carried over, by field path: either the images it covered are
    /// denied (fail closed) or it was not an image check (say which).
    Refused,
    /// A pattern whose meaning changes, with references the Kyverno policy
    /// and the imgate policy decide differently.
    Changed,
    /// A container list the Kyverno policy never checked; imgate does.
    NotCovered,
    /// Carried over more strictly than Kyverno applied it (a scope or
    /// condition imgate cannot express).
    Stricter,
    /// A namespace the imgate policy never checks.
    ExcludedNamespace,
    /// For information only.
    Note,
}

impl FindingKind {
    fn heading(self) -> &'static str {
        match self {
            FindingKind::Refused => "Refused (not carried over)",
            FindingKind::Changed => "Meaning changed",
            FindingKind::NotCovered => "Container lists Kyverno did not check",
            FindingKind::Stricter => "Stricter than Kyverno",
            FindingKind::ExcludedNamespace => "Excluded namespaces",
            FindingKind::Note => "Notes",
        }
    }
}

/// A decision about one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// The policy admits the reference.
    Admitted,
    /// The policy denies it.
    Denied,
}

/// A reference the two policies decide differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Example {
    /// As a pod spec would write it.
    pub reference: String,
    /// What the Kyverno policy decided.
    pub kyverno: Decision,
    /// What the written imgate policy decides (by registry and rule; a rule
    /// that needs a signature still needs it).
    pub imgate: Decision,
    /// Why they differ.
    pub detail: String,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What kind of finding.
    pub kind: FindingKind,
    /// The policy (`ClusterPolicy/name`) or input it is about.
    pub source: String,
    /// The field inside it (`spec.rules[0].validate.pattern...`), or empty.
    pub path: String,
    /// What happened, for people.
    pub message: String,
    /// The Kyverno pattern or value concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Its imgate translation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imgate: Option<String>,
    /// References decided differently.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
}

impl Finding {
    pub(super) fn new(
        kind: FindingKind,
        source: &str,
        path: &str,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            kind,
            source: source.to_string(),
            path: path.to_string(),
            message: message.into(),
            pattern: None,
            imgate: None,
            examples: Vec::new(),
        }
    }
}

/// What the written policy says, in short.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The policies read (`ClusterPolicy/name`).
    pub policies: Vec<String>,
    /// The imported `mode`.
    pub mode: String,
    /// The imported `pinDigests`.
    pub pin_digests: String,
    /// The imported `onRegistryError`.
    pub on_registry_error: String,
    /// The imported `trustedRegistries`.
    pub trusted_registries: Vec<String>,
    /// Rule names, in order.
    pub rules: Vec<String>,
    /// Namespaces the Kyverno policies excluded.
    pub excluded_namespaces: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// What was imported.
    pub summary: Summary,
    /// Every finding, in order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether everything translated as it was (only notes): exit 0.
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|f| f.kind == FindingKind::Note)
    }

    /// How many findings of `kind`.
    pub fn count(&self, kind: FindingKind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }

    /// The report for people, grouped by kind.
    pub fn to_text(&self) -> String {
        let s = &self.summary;
        let mut out = format!(
            "imgate policy import: {} ({})\n",
            plural(s.policies.len(), "policy", "policies"),
            s.policies.join(", ")
        );
        out.push_str(&format!(
            "written: mode {}, pinDigests {}, onRegistryError {}, {}, {}, {}\n",
            s.mode,
            s.pin_digests,
            s.on_registry_error,
            plural(
                s.trusted_registries.len(),
                "trusted registry pattern",
                "trusted registry patterns"
            ),
            plural(s.rules.len(), "rule", "rules"),
            plural(
                s.excluded_namespaces.len(),
                "excluded namespace",
                "excluded namespaces"
            ),
        ));
        let mut kinds: Vec<FindingKind> = self.findings.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let of_kind: Vec<&Finding> = self.findings.iter().filter(|f| f.kind == kind).collect();
            out.push_str(&format!("\n{} ({})\n", kind.heading(), of_kind.len()));
            if kind == FindingKind::ExcludedNamespace {
                // One line per message: the namespaces it applies to.
                let mut messages: Vec<&str> = Vec::new();
                for f in &of_kind {
                    if !messages.contains(&f.message.as_str()) {
                        messages.push(&f.message);
                    }
                }
                for message in messages {
                    let names: Vec<&str> = of_kind
                        .iter()
                        .filter(|f| f.message == message)
                        .filter_map(|f| f.pattern.as_deref())
                        .collect();
                    out.push_str(&format!("  {}\n    {message}\n", names.join(", ")));
                }
                continue;
            }
            for finding in of_kind {
                render(&mut out, finding);
            }
        }
        let flagged = self
            .findings
            .iter()
            .filter(|f| f.kind != FindingKind::Note)
            .count();
        out.push_str(&if flagged == 0 {
            "\neverything translated as it was\n".to_string()
        } else {
            format!(
                "\n{} to read before switching (exit 1)\n",
                plural(flagged, "finding", "findings")
            )
        });
        out
    }
}

fn render(out: &mut String, f: &Finding) {
    let place = if f.path.is_empty() {
        f.source.clone()
    } else {
        format!("{} {}", f.source, f.path)
    };
    out.push_str(&format!("  {place}\n"));
    let what = match (&f.pattern, &f.imgate) {
        (Some(p), Some(i)) => format!("`{p}` -> `{i}`: "),
        (Some(p), None) => format!("`{p}`: "),
        _ => String::new(),
    };
    out.push_str(&format!("    {what}{}\n", f.message));
    let width = f
        .examples
        .iter()
        .map(|e| e.reference.len())
        .max()
        .unwrap_or(0);
    for e in &f.examples {
        out.push_str(&format!(
            "      {:width$}  Kyverno {}, imgate {}: {}\n",
            e.reference,
            verb(e.kyverno, false),
            verb(e.imgate, true),
            e.detail,
        ));
    }
}

fn verb(decision: Decision, present: bool) -> &'static str {
    match (decision, present) {
        (Decision::Admitted, false) => "admitted",
        (Decision::Denied, false) => "denied",
        (Decision::Admitted, true) => "admits",
        (Decision::Denied, true) => "denies",
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
