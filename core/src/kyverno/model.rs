//! What the readers of each Kyverno kind hand to the builder: the image
//! checks (allow-list conditions on the image string), the signature
//! verifications, each rule's namespace scope and failure action, and the
//! findings so far. Kyverno-kind independent.

use std::collections::{BTreeMap, BTreeSet};

use super::cond::{Atoms, Cond};
use super::names::World;
use super::report::{Finding, FindingKind};
use super::ImportError;
use super::{MAX_ALTERNATIVES, MAX_ATOMS, MAX_PATTERN_LEN};
use crate::policy::TlogSetting;

/// Which container lists a check looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lists {
    pub containers: bool,
    pub init: bool,
    pub ephemeral: bool,
}

impl Lists {
    pub const ALL: Lists = Lists {
        containers: true,
        init: true,
        ephemeral: true,
    };

    pub fn union(self, other: Lists) -> Lists {
        Lists {
            containers: self.containers || other.containers,
            init: self.init || other.init,
            ephemeral: self.ephemeral || other.ephemeral,
        }
    }

    /// `containers`, `initContainers`, `ephemeralContainers` by field name.
    pub fn of_field(name: &str) -> Option<Lists> {
        let mut lists = Lists::default();
        match name {
            "containers" => lists.containers = true,
            "initContainers" => lists.init = true,
            "ephemeralContainers" => lists.ephemeral = true,
            _ => return None,
        }
        Some(lists)
    }

    pub fn is_empty(self) -> bool {
        !(self.containers || self.init || self.ephemeral)
    }
}

/// Namespaces, as a finite list or everything but a finite list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NsSet {
    Only(BTreeSet<String>),
    AllBut(BTreeSet<String>),
}

impl NsSet {
    pub fn none() -> NsSet {
        NsSet::Only(BTreeSet::new())
    }

    pub fn all() -> NsSet {
        NsSet::AllBut(BTreeSet::new())
    }

    pub fn complement(self) -> NsSet {
        match self {
            NsSet::Only(s) => NsSet::AllBut(s),
            NsSet::AllBut(s) => NsSet::Only(s),
        }
    }

    pub fn union(self, other: NsSet) -> NsSet {
        use NsSet::*;
        match (self, other) {
            (Only(a), Only(b)) => Only(a.union(&b).cloned().collect()),
            (AllBut(a), Only(b)) | (Only(b), AllBut(a)) => {
                AllBut(a.difference(&b).cloned().collect())
            }
            (AllBut(a), AllBut(b)) => AllBut(a.intersection(&b).cloned().collect()),
        }
    }

    pub fn intersect(self, other: NsSet) -> NsSet {
        self.complement().union(other.complement()).complement()
    }
}

/// A rule's scope and failure action: what the namespace exclusions and the
/// mode are computed from.
#[derive(Debug, Clone)]
pub(super) struct RuleInfo {
    /// `ClusterPolicy/name`.
    pub source: String,
    /// `spec.rules[0]`.
    pub path: String,
    /// The rule's name, for the imgate rule's.
    pub label: String,
    /// Enforce (deny) rather than Audit.
    pub enforce: bool,
    /// Namespaces the rule leaves alone.
    pub unconstrained: NsSet,
}

/// An allow-list condition on every image of some container lists.
#[derive(Debug, Clone)]
pub(super) struct Check {
    pub rule: usize,
    pub cond: Cond,
    pub lists: Lists,
}

/// How a certificate field must look.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Match {
    Exact(String),
    RegExp(String),
}

/// One keyless signer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Keyless {
    pub subject: Match,
    pub issuer: Match,
    /// imgate extension names to exact values.
    pub extensions: BTreeMap<String, String>,
}

/// What a verification requires, in imgate's terms: who may have signed
/// the image (any one suffices) and the attestations it must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signers {
    /// PEM public keys.
    pub keys: Vec<String>,
    pub keyless: Vec<Keyless>,
    pub tlog: TlogSetting,
    pub annotations: BTreeMap<String, String>,
    /// Whether the image itself must be signed (`false`: `verify: none`,
    /// only the attestations are checked).
    pub signature: bool,
    pub attestations: Vec<Attestation>,
}

impl Signers {
    /// No signature of the image: only attestations (added after).
    pub fn unsigned() -> Signers {
        Signers {
            keys: Vec::new(),
            keyless: Vec::new(),
            tlog: TlogSetting::IfPresent,
            annotations: BTreeMap::new(),
            signature: false,
            attestations: Vec::new(),
        }
    }
}

/// One in-toto attestation an imgate rule requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attestation {
    pub name: String,
    /// A predicate type URI, compared exactly.
    pub predicate_type: String,
    /// Who may sign it (PEM keys, keyless identities; any one suffices).
    pub keys: Vec<String>,
    pub keyless: Vec<Keyless>,
    /// CEL conditions one statement must all meet, with their messages.
    pub conditions: Vec<(String, Option<String>)>,
}

/// A signature verification of the images some wildcards match.
#[derive(Debug, Clone)]
pub(super) struct Verification {
    pub rule: usize,
    /// `spec.rules[0].verifyImages[0]`.
    pub path: String,
    /// Atoms of the images it applies to.
    pub refs: Vec<usize>,
    /// It applies to images chosen some way imgate cannot evaluate: treat
    /// as every image.
    pub refs_unknown: bool,
    /// Which strings the wildcards are compared with (both when unsure).
    pub worlds: Vec<World>,
    /// Atoms of the images it skips.
    pub skip: Vec<usize>,
    /// `None`: not translatable, so the images it applies to are denied.
    pub signers: Option<Signers>,
    pub mutate_digest: bool,
}

/// Settings of one policy document.
#[derive(Debug, Clone)]
pub(super) struct PolicyInfo {
    pub source: String,
    /// `Some(true)` for `failurePolicy: Ignore`, `Some(false)` for `Fail`.
    pub ignore_failures: Option<bool>,
    pub timeout_seconds: Option<u64>,
}

/// Everything the readers found.
#[derive(Debug, Default)]
pub(super) struct Imported {
    pub atoms: Atoms,
    pub rules: Vec<RuleInfo>,
    pub checks: Vec<Check>,
    pub verifications: Vec<Verification>,
    pub policies: Vec<PolicyInfo>,
    pub findings: Vec<Finding>,
}

impl Imported {
    pub fn finding(
        &mut self,
        kind: FindingKind,
        source: &str,
        path: &str,
        message: impl Into<String>,
    ) {
        self.findings
            .push(Finding::new(kind, source, path, message));
    }

    /// Not carried over; `poisons` says whether the images it covered are
    /// denied for it (an image check) or it was not an image check.
    pub fn refuse(&mut self, source: &str, path: &str, reason: &str, poisons: bool) {
        let effect = if poisons {
            "the images it applied to are denied until you translate it by hand"
        } else {
            "not an image check: imgate does not enforce it (keep it in Kyverno or a ValidatingAdmissionPolicy)"
        };
        self.finding(
            FindingKind::Refused,
            source,
            path,
            format!("{reason}; {effect}"),
        );
    }

    /// The condition a Kyverno pattern string puts on an image: `|`
    /// alternatives of `&`-joined wildcards, each possibly negated with `!`.
    /// What it cannot evaluate (variables, comparisons) is refused and
    /// becomes unknown.
    pub fn pattern_string(
        &mut self,
        source: &str,
        path: &str,
        text: &str,
    ) -> Result<Cond, ImportError> {
        if text.contains("{{") || text.contains("$(") {
            self.refuse(
                source,
                path,
                "a templated value ({{ }} or $( )): imgate cannot evaluate Kyverno variables",
                true,
            );
            return Ok(Cond::Unknown);
        }
        let alternatives: Vec<&str> = text.split('|').collect();
        if alternatives.len() > MAX_ALTERNATIVES {
            return Err(ImportError::TooManyAlternatives {
                source_name: source.to_string(),
                path: path.to_string(),
                count: alternatives.len(),
                max: MAX_ALTERNATIVES,
            });
        }
        let mut any = Vec::new();
        for alternative in alternatives {
            let mut all = Vec::new();
            for condition in alternative.trim_matches(' ').split('&') {
                all.push(self.condition(source, path, condition.trim_matches(' '))?);
            }
            any.push(Cond::and(all));
        }
        Ok(Cond::or(any))
    }

    fn condition(&mut self, source: &str, path: &str, text: &str) -> Result<Cond, ImportError> {
        if text.chars().count() > MAX_PATTERN_LEN {
            return Err(ImportError::PatternTooLong {
                source_name: source.to_string(),
                path: path.to_string(),
                len: text.chars().count(),
                max: MAX_PATTERN_LEN,
            });
        }
        if text.starts_with(['<', '>']) || looks_like_range(text) {
            self.refuse(
                source,
                path,
                &format!("`{text}`: a comparison or range operator on an image string"),
                true,
            );
            return Ok(Cond::Unknown);
        }
        if let Some(negated) = text.strip_prefix('!') {
            return Ok(self.glob(source, path, negated.trim_matches(' '))?.not());
        }
        self.glob(source, path, text)
    }

    /// The atom "the image matches `glob`".
    pub fn glob(&mut self, source: &str, path: &str, glob: &str) -> Result<Cond, ImportError> {
        if self.atoms.list.len() >= MAX_ATOMS {
            return Err(ImportError::TooManyPatterns { max: MAX_ATOMS });
        }
        if glob.chars().count() > MAX_PATTERN_LEN {
            return Err(ImportError::PatternTooLong {
                source_name: source.to_string(),
                path: path.to_string(),
                len: glob.chars().count(),
                max: MAX_PATTERN_LEN,
            });
        }
        Ok(self.atoms.add(glob, source, path))
    }
}

/// Kyverno reads `1-5` (a number, `-`, a number) as a range.
fn looks_like_range(text: &str) -> bool {
    let text = text.trim_start_matches('!');
    match text.split_once('-') {
        Some((lo, hi)) => {
            let number = |s: &str| {
                s.starts_with(|c: char| c.is_ascii_digit())
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            };
            number(lo) && number(hi.trim_start_matches('-'))
        }
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn pattern_strings_read_like_kyverno() {
        let mut imported = Imported::default();
        let c = imported
            .pattern_string("t", "p", "ghcr.io/* | quay.io/*&!*:latest")
            .unwrap();
        let n = imported.pattern_string("t", "p", " !docker.io/* ").unwrap();
        let admits = |c: &Cond, image: &str| imported.atoms.admits(c, image);
        assert!(admits(&c, "ghcr.io/a:latest"));
        assert!(admits(&c, "quay.io/a:1"));
        assert!(!admits(&c, "quay.io/a:latest"));
        assert!(!admits(&c, "nginx"));
        assert!(admits(&n, "nginx"));
        assert!(!admits(&n, "docker.io/nginx"));
    }

    #[test]
    fn templated_and_comparisons_are_unknown() {
        let mut imported = Imported::default();
        let c = imported
            .pattern_string("t", "p", "{{ request.object.x }}")
            .unwrap();
        assert_eq!(c, Cond::Unknown);
        let c = imported.pattern_string("t", "p", "ghcr.io/* | >1").unwrap();
        assert!(c.has_unknown());
        assert_eq!(imported.findings.len(), 2);
        assert!(imported
            .findings
            .iter()
            .all(|f| f.kind == FindingKind::Refused));
    }

    #[test]
    fn too_many_alternatives_is_an_error() {
        let mut imported = Imported::default();
        let text = vec!["a/*"; MAX_ALTERNATIVES + 1].join(" | ");
        let err = imported
            .pattern_string("ClusterPolicy/x", "spec.rules[0]", &text)
            .unwrap_err();
        assert!(err.to_string().contains("alternatives"), "{err}");
    }

    #[test]
    fn namespace_sets() {
        let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let a = NsSet::Only(set(&["a", "b"]));
        let b = NsSet::AllBut(set(&["b", "c"]));
        assert_eq!(a.clone().intersect(b.clone()), NsSet::Only(set(&["a"])));
        assert_eq!(a.clone().union(b.clone()), NsSet::AllBut(set(&["c"])));
        assert_eq!(NsSet::all().intersect(a.clone()), a);
    }
}
