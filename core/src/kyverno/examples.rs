//! The references that show what changed, computed from the patterns
//! themselves and decided by both sides: the Kyverno side by Kyverno's own
//! wildcard rules over the whole policy, the imgate side by the written
//! policy as imgate loaded it.
//!
//! Kyverno admitted, imgate denies: each wildcard of an allow-list entry is
//! filled with strings that cross the boundaries imgate keeps (`.`, `:`,
//! `/`, a port), and the references the Kyverno policy admitted and imgate
//! denies are kept. Kyverno denied, imgate admits: the names an imgate
//! pattern matches are written every way a pod spec may write them, with
//! tags, digests and both, and those the Kyverno policy denied are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::build::{Outcome, Plan};
use super::cond::Cond;
use super::model::{Imported, Lists};
use super::names::{raw_spellings, NamePattern};
use super::report::{Decision, Example, Finding, FindingKind};
use crate::policy::{ImagePattern, Policy};
use crate::reference::ImageRef;

/// Most examples per finding.
const MAX_EXAMPLES: usize = 3;

/// What a `*` is filled with: strings that cross each boundary.
const STAR_FILLS: &[&str] = &[
    ".evil.example/x:1",
    "0:5000/x:1",
    ":5000/x:1",
    "/x/y:1",
    "x:1",
    "-x/y:1",
    "/x:1",
    "",
    "x",
    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
];

/// What a `?` is filled with.
const ONE_FILLS: &[&str] = &["x", "0", ".", "/"];

const DIGEST: &str = "@sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The written policy's trusted registries and rule patterns by registry,
/// to decide many references quickly, as `is_trusted` and `rule_for` do.
struct Imgate {
    trusted: HashMap<String, Vec<ImagePattern>>,
    ruled: HashMap<String, Vec<ImagePattern>>,
}

impl Imgate {
    fn new(policy: &Policy) -> Imgate {
        let index = |patterns: &mut dyn Iterator<Item = &ImagePattern>| {
            let mut map: HashMap<String, Vec<ImagePattern>> = HashMap::new();
            for p in patterns {
                map.entry(p.registry().to_ascii_lowercase())
                    .or_default()
                    .push(p.clone());
            }
            map
        };
        Imgate {
            trusted: index(&mut policy.trusted_registries.iter()),
            ruled: index(&mut policy.rules.iter().flat_map(|r| r.images.iter())),
        }
    }

    /// Whether the policy admits `reference` (by registry and rule; a rule
    /// that verifies still needs its signature).
    fn admits(&self, reference: &str) -> bool {
        let Ok(image) = ImageRef::parse(reference) else {
            return false;
        };
        let registry = image.registry.to_ascii_lowercase();
        let any = |map: &HashMap<String, Vec<ImagePattern>>| {
            map.get(&registry)
                .is_some_and(|ps| ps.iter().any(|p| p.matches(&image)))
        };
        any(&self.trusted) && any(&self.ruled)
    }
}

/// `glob` with its wildcards filled every way (the first two; later ones
/// with `x`).
pub(super) fn fills(glob: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut wildcards = 0;
    for c in glob.chars() {
        let options: &[&str] = match c {
            '*' => STAR_FILLS,
            '?' => ONE_FILLS,
            _ => {
                out.iter_mut().for_each(|s| s.push(c));
                continue;
            }
        };
        wildcards += 1;
        let options = if wildcards > 2 { &["x"][..] } else { options };
        out = out
            .iter()
            .flat_map(|s| options.iter().map(move |o| format!("{s}{o}")))
            .collect();
    }
    out
}

/// Suffixes for the names of a pattern: a tag, none, a digest, both, and
/// the tags the policies name.
fn suffixes(imported: &Imported) -> Vec<String> {
    let mut out: Vec<String> = vec![
        ":1.0".into(),
        String::new(),
        DIGEST.into(),
        format!(":1.0{DIGEST}"),
    ];
    for atom in &imported.atoms.list {
        let (_, version) = super::names::split_version(&atom.glob);
        if let Some(tag) = version.strip_prefix(':') {
            let tag = tag.replace(['*', '?'], "0");
            if ImageRef::parse(&format!("x:{tag}")).is_ok() && !out.contains(&format!(":{tag}")) {
                out.push(format!(":{tag}"));
            }
        }
    }
    out
}

/// Every way to write every sample name of `pattern`.
fn spellings(suffixes: &[String], pattern: &NamePattern) -> Vec<String> {
    let mut out = Vec::new();
    for name in pattern.sample_names() {
        let Some((registry, repository)) = name.split_once('/') else {
            continue;
        };
        for spelling in raw_spellings(registry, repository) {
            for suffix in suffixes {
                out.push(format!("{spelling}{suffix}"));
            }
        }
    }
    out
}

fn registry_of(reference: &str) -> String {
    ImageRef::parse(reference)
        .map(|i| i.registry)
        .unwrap_or_default()
}

/// What the example searches share.
struct Ctx<'a> {
    plan: &'a Plan,
    policy: Imgate,
    suffixes: Vec<String>,
    /// References already shown, so each appears once.
    shown: BTreeSet<String>,
}

/// Adds the meaning-change, reverse and coverage findings.
pub(super) fn findings(imported: &mut Imported, plan: &Plan, policy: &Policy) {
    let mut ctx = Ctx {
        plan,
        policy: Imgate::new(policy),
        suffixes: suffixes(imported),
        shown: BTreeSet::new(),
    };
    let atoms: Vec<usize> = plan.outcomes.keys().copied().collect();
    // Which check each atom belongs to.
    let mut check_of = BTreeMap::new();
    for (i, c) in imported.checks.iter().enumerate() {
        for n in c.cond.atoms() {
            check_of.entry(n).or_insert(i);
        }
    }
    for n in atoms {
        atom_finding(imported, &mut ctx, n, check_of.get(&n).copied());
    }
    for i in 0..imported.checks.len() {
        check_finding(imported, &mut ctx, i);
    }
    coverage(imported, &ctx);
}

fn atom_finding(imported: &mut Imported, ctx: &mut Ctx<'_>, n: usize, check: Option<usize>) {
    let atom = imported.atoms.get(n).clone();
    let outcome = &ctx.plan.outcomes[&n];
    let translated = match outcome {
        Outcome::Translated(p) => Some(p.clone()),
        Outcome::Rejected(..) => super::names::allow_candidate(&atom.glob).ok(),
    };
    // Kyverno admitted, imgate denies.
    let mut candidates = fills(&atom.glob);
    if let Some(p) = &translated {
        candidates.extend(spellings(&ctx.suffixes, p));
    }
    let mut forward: Vec<Example> = Vec::new();
    for reference in candidates {
        if forward.len() >= MAX_EXAMPLES || ctx.shown.contains(&reference) {
            continue;
        }
        let Ok(image) = ImageRef::parse(&reference) else {
            continue;
        };
        if !super::wildcard::wildcard_match(&atom.glob, &reference)
            || !imported.atoms.admits(&ctx.plan.allow, &reference)
            || ctx.policy.admits(&reference)
            || forward
                .iter()
                .any(|e| registry_of(&e.reference) == image.registry)
        {
            continue;
        }
        let detail = match outcome {
            Outcome::Translated(p) if p.registry != image.registry => format!(
                "registry {}: the wildcard ran into the host name or port",
                image.registry
            ),
            Outcome::Translated(_) => format!(
                "{}: the wildcard ran across `/` or into the tag",
                image.name()
            ),
            Outcome::Rejected(..) => format!("{} is not trusted", image.name()),
        };
        forward.push(Example {
            reference,
            kyverno: Decision::Admitted,
            imgate: Decision::Denied,
            detail,
        });
    }
    // Kyverno denied, imgate admits.
    let mut reverse: Vec<Example> = Vec::new();
    if let (Outcome::Translated(p), Some(check)) = (outcome, check) {
        let cond = imported.checks[check].cond.strict();
        for reference in spellings(&ctx.suffixes, p) {
            if !reverse.is_empty() || ctx.shown.contains(&reference) {
                continue;
            }
            if super::wildcard::wildcard_match(&atom.glob, &reference)
                || imported.atoms.admits(&cond, &reference)
                || imported.atoms.admits(&ctx.plan.allow, &reference)
                || !ctx.policy.admits(&reference)
            {
                continue;
            }
            let detail = why_denied(imported, &cond, &reference);
            reverse.push(Example {
                reference,
                kyverno: Decision::Denied,
                imgate: Decision::Admitted,
                detail,
            });
        }
    }
    let message = match (outcome, forward.is_empty(), reverse.is_empty()) {
        // Nothing it admitted is lost (another entry or rule covers it, or
        // it was never an allow-list entry): nothing to report.
        (Outcome::Rejected(..), true, _) if translated.is_none() => return,
        (Outcome::Rejected(why, Some(denied)), _, _) => format!("not carried over: {why} (it denied {denied})"),
        (Outcome::Rejected(why, None), _, _) => format!("not carried over: {why}"),
        (_, true, true) => return,
        (_, false, true) => "Kyverno's `*` ran across `.`, `:` and `/` over the reference as written; imgate's pattern is normalised and stops at those boundaries".into(),
        (_, true, false) => "Kyverno compared the reference as written; imgate compares the image it names, however it is written".into(),
        (_, false, false) => "both ways: Kyverno's `*` ran across `.`, `:` and `/`, and Kyverno compared references as written while imgate compares the images they name".into(),
    };
    let mut f = Finding::new(FindingKind::Changed, &atom.source, &atom.path, message);
    f.pattern = Some(atom.glob.clone());
    f.imgate = translated
        .filter(|_| matches!(outcome, Outcome::Translated(_)))
        .map(|p| p.text());
    for e in forward.into_iter().chain(reverse) {
        ctx.shown.insert(e.reference.clone());
        f.examples.push(e);
    }
    imported.findings.push(f);
}

/// Why the Kyverno condition denied `reference`: no digest, the way it was
/// written, or its tag.
fn why_denied(imported: &Imported, cond: &Cond, reference: &str) -> String {
    if !reference.contains('@') && imported.atoms.admits(cond, &format!("{reference}{DIGEST}")) {
        return "no digest in the reference; imgate pins tags to digests instead".into();
    }
    let Ok(image) = ImageRef::parse(reference) else {
        return String::new();
    };
    // The tag and digest as written: from the tag's `:` (after the last
    // `/`) or the digest's `@`, whichever comes first.
    let name_end = reference.find('@').unwrap_or(reference.len());
    let after_slash = reference[..name_end].rfind('/').map_or(0, |i| i + 1);
    let start = reference[after_slash..name_end]
        .find(':')
        .map_or(name_end, |i| after_slash + i);
    let suffix = &reference[start..];
    for other in raw_spellings(&image.registry, &image.repository) {
        let other = format!("{other}{suffix}");
        if other != reference && imported.atoms.admits(cond, &other) {
            return format!(
                "written differently from {other}, which Kyverno admitted: the same image"
            );
        }
    }
    "its tag or digest: imgate has no rule on tags (it pins them to digests)".into()
}

/// References a rule denied that imgate admits, not shown yet (a rule on
/// tags, a negated pattern).
fn check_finding(imported: &mut Imported, ctx: &mut Ctx<'_>, i: usize) {
    let cond = imported.checks[i].cond.strict();
    let mut examples = Vec::new();
    for t in &ctx.plan.trusted {
        for reference in spellings(&ctx.suffixes, &t.pattern) {
            if examples.len() >= MAX_EXAMPLES || ctx.shown.contains(&reference) {
                continue;
            }
            if imported.atoms.admits(&cond, &reference) || !ctx.policy.admits(&reference) {
                continue;
            }
            let detail = why_denied(imported, &cond, &reference);
            ctx.shown.insert(reference.clone());
            examples.push(Example {
                reference,
                kyverno: Decision::Denied,
                imgate: Decision::Admitted,
                detail,
            });
        }
    }
    if examples.is_empty() {
        return;
    }
    let rule = imported.rules[imported.checks[i].rule].clone();
    let mut f = Finding::new(
        FindingKind::Changed,
        &rule.source,
        &rule.path,
        "this rule denied references imgate admits: imgate decides by the image a reference names, never by how it is written or by its tag",
    );
    f.examples = examples;
    imported.findings.push(f);
}

/// The container lists no allow-list check looked at.
fn coverage(imported: &mut Imported, ctx: &Ctx<'_>) {
    if !ctx.plan.has_allowlist {
        return;
    }
    let covered = imported
        .checks
        .iter()
        .filter(|c| c.cond.strict() != Cond::True)
        .fold(Lists::default(), |acc, c| acc.union(c.lists));
    let Some(first) = imported
        .checks
        .first()
        .map(|c| imported.rules[c.rule].clone())
    else {
        return;
    };
    let denied = ["evil.example/app:1", "unlisted.imgate.invalid/app:1"]
        .into_iter()
        .find(|r| !ctx.policy.admits(r));
    for (on, field, what) in [
        (covered.containers, "containers", "containers"),
        (covered.init, "initContainers", "init containers"),
        (
            covered.ephemeral,
            "ephemeralContainers",
            "ephemeral containers (kubectl debug)",
        ),
    ] {
        if on {
            continue;
        }
        let mut f = Finding::new(
            FindingKind::NotCovered,
            &first.source,
            &first.path,
            format!("{field}: the Kyverno policy never checked the images of {what}; imgate checks them against the same trusted registries"),
        );
        if let Some(reference) = denied {
            f.examples.push(Example {
                reference: reference.to_string(),
                kyverno: Decision::Admitted,
                imgate: Decision::Denied,
                detail: format!("as an image of {what}"),
            });
        }
        imported.findings.push(f);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fills_cross_boundaries() {
        let f = fills("10.0.20.10*");
        assert!(f.contains(&"10.0.20.10.evil.example/x:1".to_string()));
        assert!(f.contains(&"10.0.20.100:5000/x:1".to_string()));
        assert!(f.contains(&"10.0.20.10:5000/x:1".to_string()));
        assert_eq!(fills("a*b*c*d").len(), STAR_FILLS.len() * STAR_FILLS.len());
        assert!(fills("*@*").contains(&format!("x:1@{}", &DIGEST[1..])));
    }
}
