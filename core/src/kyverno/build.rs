//! From what was read to imgate's registries and rules.
//!
//! The allow-list: every image check must hold for an image, so their
//! conjunction `F` (made strict) is what the Kyverno policy required of an
//! image string. Each wildcard that can admit images becomes a candidate
//! imgate pattern, kept only when the importer proves that every image it
//! matches, at every digest, has a spelling `F` admitted: so the imgate
//! policy admits no image the Kyverno policy denied however it was written.
//!
//! Verifications: each becomes a rule whose patterns cover every image the
//! Kyverno rule verified (proved too, or the trusted patterns it meets); a
//! verification imgate cannot carry denies the images it covered, by
//! dropping the trusted patterns it meets.

use std::collections::BTreeMap;

use super::automaton::{Nfa, Re};
use super::cond::Cond;
use super::model::{Imported, Signers};
use super::names::{self, allow_candidate, cover_candidate, NamePattern, World};
use super::question::{self, Answer, Budget};
use super::report::{Decision, Example, Finding, FindingKind};

/// Most distinct witness tags tried per proof.
const MAX_WITNESS_TAGS: usize = 8;

/// One trusted pattern and where it came from.
#[derive(Debug, Clone)]
pub(super) struct Trusted {
    pub pattern: NamePattern,
    /// The Kyverno wildcards it translates (or the rule it serves).
    pub from: Vec<String>,
}

/// One imgate rule to write.
#[derive(Debug, Clone)]
pub(super) struct RuleOut {
    pub name: String,
    pub images: Vec<String>,
    /// `None`: `verify: none`.
    pub signers: Option<Signers>,
    pub comment: String,
}

/// How each allow-list wildcard was carried over.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// As this pattern.
    Translated(NamePattern),
    /// Not carried over: why, and a reference that shows it.
    Rejected(String, Option<String>),
}

/// The registries and rules.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// The strict conjunction of every image check (`True` without any).
    pub allow: Cond,
    pub has_allowlist: bool,
    pub trusted: Vec<Trusted>,
    pub rules: Vec<RuleOut>,
    /// Per allow-list atom.
    pub outcomes: BTreeMap<usize, Outcome>,
    /// Some references Kyverno admitted only with a digest.
    pub digest_required: bool,
    pub verifications_pin: bool,
}

pub(super) fn plan(imported: &mut Imported) -> Plan {
    let allow = Cond::and(imported.checks.iter().map(|c| c.cond.strict()).collect());
    let mut plan = Plan {
        // An allow-list names images; a condition with no positive wildcard
        // (only `!x`, or a rule on tags) only excludes some.
        has_allowlist: !allow.positive_atoms().is_empty() || allow == Cond::False,
        allow,
        ..Plan::default()
    };
    if plan.has_allowlist {
        allow_list(imported, &mut plan);
    }
    verifications(imported, &mut plan);
    if plan.trusted.is_empty() {
        let first = &imported.rules[0];
        let (source, path) = (first.source.clone(), first.path.clone());
        let why = if plan.has_allowlist || !imported.verifications.is_empty() {
            "nothing could be carried over (see the findings above)"
        } else {
            "the Kyverno policy admitted images from any registry its checks did not exclude (they name no registry, only exclusions, tags or digests); imgate admits only the registries it lists"
        };
        imported.finding(
            FindingKind::Refused,
            &source,
            &path,
            format!("{why}: the written policy denies every image outside its excluded namespaces until you add your registries to trustedRegistries"),
        );
    }
    plan
}

/// Tags to try as witnesses: the literal tags the wildcards name (`nginx:1.*`
/// gives `1.0`), then `1.0` and `latest`.
fn witness_tags(imported: &Imported) -> Vec<String> {
    let mut tags = Vec::new();
    for atom in &imported.atoms.list {
        let (_, version) = names::split_version(&atom.glob);
        if let Some(tag) = version.strip_prefix(':') {
            let tag = tag.replace(['*', '?'], "0");
            let valid = tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if valid && !tags.contains(&tag) && tags.len() < MAX_WITNESS_TAGS {
                tags.push(tag);
            }
        }
    }
    for tag in ["1.0", "latest"] {
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    tags
}

/// Whether some way of writing every image of `pattern` with every digest
/// (or, `tag_only`, with some one tag) satisfies `cond`; else a reference
/// `cond` denies.
fn prove(
    imported: &Imported,
    pattern: &NamePattern,
    cond: &Cond,
    tags: &[String],
    tag_only: bool,
) -> Result<(), Option<String>> {
    let suffixes: Vec<Re> = if tag_only {
        tags.iter().map(|t| Re::lit(&format!(":{t}"))).collect()
    } else {
        let mut s = vec![
            names::digest_suffix(),
            Re::Seq(vec![names::tag_suffix(), names::digest_suffix()]),
        ];
        s.extend(
            tags.iter()
                .map(|t| Re::Seq(vec![Re::lit(&format!(":{t}")), names::digest_suffix()])),
        );
        s
    };
    let mut counterexample = None;
    for form in pattern.raw_forms() {
        for suffix in &suffixes {
            let nfa = Nfa::from_re(&Re::Seq(vec![form.clone(), suffix.clone()]));
            match imported.atoms.every(&nfa, cond) {
                Answer::Holds => return Ok(()),
                Answer::Fails(s) => {
                    counterexample.get_or_insert(s);
                }
                Answer::Unknown => {}
            }
        }
    }
    Err(counterexample)
}

fn allow_list(imported: &mut Imported, plan: &mut Plan) {
    let tags = witness_tags(imported);
    let mut accepted: Vec<(NamePattern, Vec<usize>)> = Vec::new();
    let mut tried: BTreeMap<String, Outcome> = BTreeMap::new();
    for n in plan.allow.positive_atoms() {
        let glob = imported.atoms.get(n).glob.clone();
        let outcome = match allow_candidate(&glob).and_then(|p| p.image_pattern().map(|_| p)) {
            Err(why) => Outcome::Rejected(why, None),
            Ok(pattern) => match tried.get(&pattern.text()) {
                Some(done) => done.clone(),
                None => {
                    let outcome = match prove(imported, &pattern, &plan.allow, &tags, false) {
                        Ok(()) => Outcome::Translated(pattern.clone()),
                        Err(Some(example)) => Outcome::Rejected(
                            format!(
                                "the Kyverno policy did not admit every image of {}",
                                pattern.text()
                            ),
                            Some(example),
                        ),
                        Err(None) => Outcome::Rejected(
                            format!(
                                "imgate could not prove within its bounds that the Kyverno policy admitted every image of {}",
                                pattern.text()
                            ),
                            None,
                        ),
                    };
                    tried.insert(pattern.text(), outcome.clone());
                    outcome
                }
            },
        };
        if let Outcome::Translated(pattern) = &outcome {
            match accepted.iter_mut().find(|(p, _)| p == pattern) {
                Some((_, from)) => from.push(n),
                None => accepted.push((pattern.clone(), vec![n])),
            }
        }
        plan.outcomes.insert(n, outcome);
    }
    // A pattern another one covers adds nothing (`docker.io/**` covers
    // `docker.io/library/nginx*`); keep the broader one, with both sources.
    let parsed: Vec<_> = accepted
        .iter()
        .map(|(p, _)| p.image_pattern().ok())
        .collect();
    let covered_by = |i: usize| {
        (0..accepted.len()).find(|&j| {
            j != i
                && matches!((&parsed[j], &parsed[i]),
                    (Some(outer), Some(inner)) if outer.covers(inner) && !inner.covers(outer))
        })
    };
    let mut top: Vec<usize> = (0..accepted.len()).collect();
    for t in top.iter_mut() {
        // Strict covering has no cycles; the bound is a guard.
        for _ in 0..accepted.len() {
            match covered_by(*t) {
                Some(j) => *t = j,
                None => break,
            }
        }
    }
    // One note per broader pattern, naming what it covers.
    for (t, (outer, _)) in accepted.iter().enumerate() {
        let covered: Vec<usize> = (0..accepted.len())
            .filter(|&i| i != t && top[i] == t)
            .flat_map(|i| accepted[i].1.clone())
            .collect();
        if covered.is_empty() {
            continue;
        }
        let atom = imported.atoms.get(covered[0]).clone();
        let globs: Vec<String> = covered
            .iter()
            .map(|&n| format!("`{}`", imported.atoms.get(n).glob))
            .collect();
        let mut f = Finding::new(
            FindingKind::Note,
            &atom.source,
            &atom.path,
            format!(
                "{} covers {}: imgate normalises references, so these need no entry of their own (Kyverno compared references as written and needed them)",
                outer.text(),
                globs.join(", ")
            ),
        );
        f.imgate = Some(outer.text());
        imported.findings.push(f);
    }
    let kept: Vec<Trusted> = (0..accepted.len())
        .filter(|&i| top[i] == i)
        .map(|i| Trusted {
            pattern: accepted[i].0.clone(),
            from: (0..accepted.len())
                .filter(|&m| top[m] == i)
                .flat_map(|m| {
                    accepted[m]
                        .1
                        .iter()
                        .map(|&n| imported.atoms.get(n).glob.clone())
                })
                .collect(),
        })
        .collect();
    plan.trusted = kept;
    // Digests: does Kyverno admit any tag of each pattern without one?
    let mut required = None;
    for t in &plan.trusted {
        if let Err(example) = prove(imported, &t.pattern, &plan.allow, &tags, true) {
            required = Some((t.pattern.text(), example));
        }
    }
    if let Some((pattern, example)) = required {
        plan.digest_required = true;
        let first = &imported.rules[imported.checks[0].rule];
        let mut f = Finding::new(
            FindingKind::Changed,
            &first.source.clone(),
            &first.path.clone(),
            "Kyverno admitted these images only with a digest in the reference; imgate resolves a tag to its digest and pins it (pinDigests: all), and its validating webhook denies any image still without a digest",
        );
        f.imgate = Some(pattern);
        if let Some(reference) = example {
            f.examples.push(Example {
                reference,
                kyverno: Decision::Denied,
                imgate: Decision::Admitted,
                detail: "no digest: imgate pins it to the digest its tag names".into(),
            });
        }
        imported.findings.push(f);
    }
}

/// Whether some image of `pattern` is written, in `world`, so that `glob`
/// matches it (`Unknown` counts as yes: fail closed).
fn meets(pattern: &NamePattern, world: World, glob: &Nfa, budget: &Budget) -> bool {
    let spelling = Nfa::from_re(&pattern.spelling(world));
    !matches!(
        question::every(&spelling, &[glob], |m| !m[0], budget),
        Answer::Holds
    )
}

/// A proved cover of the images whose `world` strings `glob` matches.
fn cover(glob: &str, world: World, budget: &Budget) -> Option<NamePattern> {
    let pattern = cover_candidate(glob, world)?;
    pattern.image_pattern().ok()?;
    let strings = Nfa::wildcard(glob).intersect(&Nfa::from_re(&names::any_reference(world)));
    let spelled = Nfa::from_re(&pattern.spelling(world));
    matches!(
        question::every(&strings, &[&spelled], |m| m[0], budget),
        Answer::Holds
    )
    .then_some(pattern)
}

fn rule_name(imported: &Imported, rule: usize, used: &[RuleOut]) -> String {
    let info = &imported.rules[rule];
    let policy = info.source.rsplit('/').next().unwrap_or_default();
    let base: String = format!("{policy}-{}", info.label)
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let mut name = base.clone();
    let mut n = 2;
    while used.iter().any(|r| r.name == name) || name == "allowed" {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

fn verifications(imported: &mut Imported, plan: &mut Plan) {
    let mut rules: Vec<RuleOut> = Vec::new();
    let mut covers: Vec<(Vec<NamePattern>, Option<Signers>)> = Vec::new();
    let verifications = imported.verifications.clone();
    for v in &verifications {
        let source = imported.rules[v.rule].source.clone();
        let mut images: Vec<NamePattern> = Vec::new();
        let mut unlisted = Vec::new();
        for &n in &v.refs {
            let glob = imported.atoms.get(n).glob.clone();
            for &world in &v.worlds {
                match cover(&glob, world, &imported.atoms.budget) {
                    Some(p) => images.push(p),
                    None if plan.has_allowlist => {
                        // The trusted patterns it meets, whole: stricter.
                        let nfa = imported.atoms.get(n).nfa.clone();
                        let met: Vec<NamePattern> = plan
                            .trusted
                            .iter()
                            .filter(|t| meets(&t.pattern, world, &nfa, &imported.atoms.budget))
                            .map(|t| t.pattern.clone())
                            .collect();
                        let texts: Vec<String> = met.iter().map(NamePattern::text).collect();
                        let at = imported.atoms.get(n).path.clone();
                        imported.finding(
                            FindingKind::Stricter,
                            &source,
                            &at,
                            format!("imgate cannot list exactly the images `{glob}` matches: every image of {} needs the signature", texts.join(", ")),
                        );
                        images.extend(met);
                    }
                    None => unlisted.push(glob.clone()),
                }
            }
        }
        if v.refs_unknown {
            images.extend(plan.trusted.iter().map(|t| t.pattern.clone()));
        }
        let mut seen = std::collections::BTreeSet::new();
        images.retain(|p| seen.insert(p.text()));
        let mut signers = v.signers.clone();
        // Two rules for the same images with different signers: imgate
        // applies the first one only, so the second cannot be carried.
        if let Some(ours) = &signers {
            let clash = covers.iter().find(|(theirs, s)| {
                s.as_ref().is_some_and(|s| s != ours)
                    && theirs
                        .iter()
                        .any(|t| images.iter().any(|i| overlap(t, i, &imported.atoms.budget)))
            });
            if clash.is_some() {
                imported.refuse(&source, &v.path, "it verifies images another verification already covers, with other signers: imgate applies one rule per image", true);
                signers = None;
            }
        }
        match &signers {
            None => deny_covered(imported, plan, v, &source),
            Some(s) => {
                for glob in &unlisted {
                    imported.finding(FindingKind::Refused, &source, &v.path, format!("`{glob}`: imgate cannot list the registries it matches, and there is no allow-list to take them from; its images are denied"));
                }
                if !images.is_empty() {
                    let name = rule_name(imported, v.rule, &rules);
                    rules.push(RuleOut {
                        name,
                        images: images.iter().map(NamePattern::text).collect(),
                        signers: Some(s.clone()),
                        comment: format!("{source} {}", v.path),
                    });
                    plan.verifications_pin |= v.mutate_digest;
                }
            }
        }
        covers.push((images, signers));
    }
    skips(imported, &verifications, &covers, &mut rules);
    if !plan.has_allowlist {
        let tags = witness_tags(imported);
        // Without an allow-list the verified images are the trusted ones,
        // except those a verification imgate could not carry also covered.
        let refused: Vec<&super::model::Verification> = verifications
            .iter()
            .zip(&covers)
            .filter(|(_, (_, s))| s.is_none())
            .map(|(v, _)| v)
            .collect();
        for (images, signers) in &covers {
            if signers.is_none() {
                continue;
            }
            for p in images {
                let denied = refused.iter().any(|v| {
                    v.refs_unknown
                        || v.worlds.iter().any(|&w| {
                            v.refs.iter().any(|&n| {
                                meets(p, w, &imported.atoms.get(n).nfa, &imported.atoms.budget)
                            })
                        })
                });
                if denied {
                    let (source, path) = (
                        imported.rules[refused[0].rule].source.clone(),
                        refused[0].path.clone(),
                    );
                    imported.finding(FindingKind::Refused, &source, &path, format!("{} is not trusted: some of its images needed this verification, which was not carried over", p.text()));
                } else if let Err(example) = prove(imported, p, &plan.allow, &tags, false) {
                    // The image checks (exclusions) still hold for them.
                    let first = &imported.rules[0];
                    let (source, path) = (first.source.clone(), first.path.clone());
                    let shown = example
                        .map(|e| format!(" (it denied {e})"))
                        .unwrap_or_default();
                    imported.finding(FindingKind::Refused, &source, &path, format!("{} is not trusted: the Kyverno policy's image checks did not admit all its images{shown}", p.text()));
                } else if !plan.trusted.iter().any(|t| &t.pattern == p) {
                    plan.trusted.push(Trusted {
                        pattern: p.clone(),
                        from: Vec::new(),
                    });
                }
            }
        }
    } else if !plan.trusted.is_empty() {
        rules.push(RuleOut {
            name: "allowed".into(),
            images: plan.trusted.iter().map(|t| t.pattern.text()).collect(),
            signers: None,
            comment: "the Kyverno allow-list: a trusted registry is enough".into(),
        });
    }
    plan.rules = rules;
}

/// Whether two patterns share an image.
fn overlap(a: &NamePattern, b: &NamePattern, budget: &Budget) -> bool {
    let a = Nfa::from_re(&a.spelling(World::Normalised));
    let b = Nfa::from_re(&b.spelling(World::Normalised));
    !matches!(question::every(&a, &[&b], |m| !m[0], budget), Answer::Holds)
}

/// A verification imgate cannot carry: the trusted patterns whose images
/// it applied to are dropped, so those images are denied.
fn deny_covered(
    imported: &mut Imported,
    plan: &mut Plan,
    v: &super::model::Verification,
    source: &str,
) {
    let nfas: Vec<Nfa> = v
        .refs
        .iter()
        .map(|&n| imported.atoms.get(n).nfa.clone())
        .collect();
    let (dropped, kept): (Vec<Trusted>, Vec<Trusted>) = std::mem::take(&mut plan.trusted)
        .into_iter()
        .partition(|t| {
            v.refs_unknown
                || v.worlds.iter().any(|&w| {
                    nfas.iter()
                        .any(|n| meets(&t.pattern, w, n, &imported.atoms.budget))
                })
        });
    plan.trusted = kept;
    for t in dropped {
        imported.finding(
            FindingKind::Refused,
            source,
            &v.path,
            format!("{} is not trusted: its images needed this verification, which was not carried over", t.pattern.text()),
        );
    }
}

/// `skipImageReferences` as `verify: none` rules ahead of the verification,
/// where the skipped images are proved to be only skipped ones and no other
/// verification covers them. They are trusted only where the verification's
/// own patterns are.
fn skips(
    imported: &mut Imported,
    verifications: &[super::model::Verification],
    covers: &[(Vec<NamePattern>, Option<Signers>)],
    rules: &mut Vec<RuleOut>,
) {
    for (i, v) in verifications.iter().enumerate() {
        if v.skip.is_empty() || covers[i].1.is_none() {
            continue;
        }
        let source = imported.rules[v.rule].source.clone();
        let skip = Cond::or(v.skip.iter().map(|&n| Cond::Atom(n)).collect());
        for &n in &v.skip {
            let glob = imported.atoms.get(n).glob.clone();
            let carried = allow_candidate(&glob).ok().filter(|p| {
                p.image_pattern().is_ok()
                    && v.worlds.iter().all(|&w| {
                        imported.atoms.every(&Nfa::from_re(&p.spelling(w)), &skip) == Answer::Holds
                    })
                    && covers.iter().enumerate().all(|(j, (images, _))| {
                        j == i || !images.iter().any(|q| overlap(p, q, &imported.atoms.budget))
                    })
            });
            match carried {
                Some(p) => {
                    let at = rules.iter().position(|r| r.comment.ends_with(&v.path)).unwrap_or(rules.len());
                    let name = format!("{}-skip", rule_name(imported, v.rule, rules));
                    rules.insert(at, RuleOut {
                        name,
                        images: vec![p.text()],
                        signers: None,
                        comment: format!("{source} {}: skipImageReferences", v.path),
                    });
                }
                None => imported.finding(
                    FindingKind::Stricter,
                    &source,
                    &imported.atoms.get(n).path.clone(),
                    format!("`{glob}` is not skipped: imgate verifies those images too (it could not prove a pattern for exactly the skipped images, or another verification covers them)"),
                ),
            }
        }
    }
}
