//! An ImageValidatingPolicy's attestation checks, as imgate attestation
//! requirements: `verifyAttestationSignatures` says who must have signed a
//! declared in-toto attestation, `extractPayload` conditions become CEL
//! conditions over `predicate` (the same CEL, `extractPayload(i,
//! attestations.a)` read as the predicate it returns). Shapes:
//!
//! - `images.containers.map(i, verifyAttestationSignatures(i,
//!   attestations.a, [attestors.x, ...])).all(e, e > 0)`, or
//!   `images.containers.all(i, verifyAttestationSignatures(...) > 0)`;
//! - `images.containers.map(i, P).all(e, e)`, or
//!   `images.containers.all(i, P)`, where `P` reads one attestation only
//!   through `extractPayload(i, attestations.a)` and otherwise only its own
//!   comprehension variables, and is CEL imgate's checker accepts.
//!
//! Kyverno keeps one payload per predicate type, the last statement in the
//! `.att` tag it verified, and evaluates every `extractPayload` on it; the
//! written requirement holds every statement there to the conditions
//! (`statements: all`, `stores: [att]`), which is stricter. The report says
//! so.

use std::collections::BTreeSet;

use serde_json::Value;

use super::attest::Required;
use super::cel::{images_list, names_in, per_image, Expr};
use super::conditions::cel_str;
use super::model::{Attestation, Imported, Lists};
use super::report::FindingKind;
use super::verify::Signing;
use crate::attestation::{cel::Condition, statement};

/// Comprehension macros: their first argument binds a variable.
const MACROS: &[&str] = &["all", "exists", "exists_one", "map", "filter"];

/// A recognised attestation check of one validation.
#[derive(Debug, Clone)]
pub(super) enum Check {
    /// `verifyAttestationSignatures(i, attestations.a, [attestors...]) > 0`.
    Signed {
        lists: Lists,
        attestation: String,
        attestors: Vec<String>,
    },
    /// A condition on `extractPayload(i, attestations.a)`, as CEL over
    /// `predicate`.
    Payload {
        lists: Lists,
        attestation: String,
        condition: String,
    },
}

impl Check {
    /// The container lists it is about.
    pub fn lists(&self) -> Lists {
        match self {
            Check::Signed { lists, .. } | Check::Payload { lists, .. } => *lists,
        }
    }
}

/// The check `e` makes; `Err` says why a check naming attestations is not
/// recognised, `Ok(None)` that it names none.
pub(super) fn recognise(e: &Expr) -> Result<Option<Check>, String> {
    if let Some((lists, args)) = per_image(e, "verifyAttestationSignatures") {
        let [Expr::Member(base, attestation, false), Expr::List(attestors)] = args else {
            return Err("verifyAttestationSignatures with arguments other than `attestations.a, [attestors.x, ...]`".into());
        };
        let attestors = names_in(attestors, "attestors")
            .filter(|_| **base == Expr::Ident("attestations".into()))
            .ok_or("verifyAttestationSignatures with arguments other than `attestations.a, [attestors.x, ...]`")?;
        return Ok(Some(Check::Signed {
            lists,
            attestation: attestation.clone(),
            attestors,
        }));
    }
    let Some((lists, var, body)) = per_image_condition(e) else {
        return Ok(None);
    };
    let mut names = BTreeSet::new();
    let condition = payload(body, var, &mut names);
    if names.is_empty() {
        return Ok(None);
    }
    let [attestation] = names.into_iter().collect::<Vec<_>>().try_into().map_err(|_| {
        "a condition on the payloads of several attestations: imgate's conditions read one statement".to_string()
    })?;
    let mut free = BTreeSet::new();
    free_names(&condition, &mut Vec::new(), &mut free);
    free.remove("predicate");
    if let Some(other) = free.into_iter().next() {
        return Err(format!(
            "a condition that reads `{other}` besides the payload"
        ));
    }
    if let Some(pattern) = unportable_pattern(&condition) {
        return Err(format!("matches('{pattern}'): a character class Kyverno's RE2 reads as ASCII and imgate's regex as Unicode"));
    }
    let condition =
        print(&condition).ok_or("an optional field (`?.`): imgate's conditions have none")?;
    Condition::compile(&condition)
        .map_err(|err| format!("`{condition}` does not load as an imgate condition: {err}"))?;
    Ok(Some(Check::Payload {
        lists,
        attestation,
        condition,
    }))
}

/// `images.L.map(v, P).all(e, e)` or `images.L.all(v, P)`.
fn per_image_condition(e: &Expr) -> Option<(Lists, &str, &Expr)> {
    let Expr::Call(Some(recv), all, args) = e else {
        return None;
    };
    let (true, [Expr::Ident(outer), body]) = (all == "all", args.as_slice()) else {
        return None;
    };
    match &**recv {
        Expr::Call(Some(list), map, margs) if map == "map" => {
            let [Expr::Ident(v), inner] = margs.as_slice() else {
                return None;
            };
            (*body == Expr::Ident(outer.clone())).then_some(())?;
            Some((images_list(list)?, v, inner))
        }
        list => Some((images_list(list)?, outer, body)),
    }
}

/// `e` with every `extractPayload(var, attestations.a)` as `predicate`,
/// the names `a` collected.
fn payload(e: &Expr, var: &str, names: &mut BTreeSet<String>) -> Expr {
    if let Expr::Call(None, f, args) = e {
        if let (true, [Expr::Ident(image), Expr::Member(base, name, false)]) =
            (f == "extractPayload", args.as_slice())
        {
            if image == var && **base == Expr::Ident("attestations".into()) {
                names.insert(name.clone());
                return Expr::Ident("predicate".into());
            }
        }
    }
    let s = |x: &Expr, names: &mut BTreeSet<String>| Box::new(payload(x, var, names));
    match e {
        Expr::Member(b, n, o) => Expr::Member(s(b, names), n.clone(), *o),
        Expr::Call(r, f, args) => Expr::Call(
            r.as_deref().map(|r| s(r, names)),
            f.clone(),
            args.iter().map(|a| payload(a, var, names)).collect(),
        ),
        Expr::Not(x) => Expr::Not(s(x, names)),
        Expr::Binary(op, l, r) => Expr::Binary(op.clone(), s(l, names), s(r, names)),
        Expr::Ternary(a, b, c) => Expr::Ternary(s(a, names), s(b, names), s(c, names)),
        Expr::List(items) => Expr::List(items.iter().map(|i| payload(i, var, names)).collect()),
        other => other.clone(),
    }
}

/// The identifiers `e` reads that no comprehension inside it binds.
fn free_names(e: &Expr, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match e {
        Expr::Ident(i) if !bound.contains(i) => {
            out.insert(i.clone());
        }
        Expr::Call(Some(recv), f, args) if MACROS.contains(&f.as_str()) => {
            free_names(recv, bound, out);
            if let [Expr::Ident(v), rest @ ..] = args.as_slice() {
                bound.push(v.clone());
                for a in rest {
                    free_names(a, bound, out);
                }
                bound.pop();
            } else {
                args.iter().for_each(|a| free_names(a, bound, out));
            }
        }
        Expr::Member(b, _, _) | Expr::Not(b) => free_names(b, bound, out),
        Expr::Call(r, _, args) => {
            if let Some(r) = r {
                free_names(r, bound, out);
            }
            args.iter().for_each(|a| free_names(a, bound, out));
        }
        Expr::Binary(_, l, r) => {
            free_names(l, bound, out);
            free_names(r, bound, out);
        }
        Expr::Ternary(a, b, c) => [a, b, c].iter().for_each(|x| free_names(x, bound, out)),
        Expr::List(items) => items.iter().for_each(|i| free_names(i, bound, out)),
        _ => {}
    }
}

/// A `matches` pattern with a class RE2 and Rust's regex read differently
/// (`\d`, `\w`, `\s`, `\b`: ASCII in RE2, Unicode in Rust; `\p`, `[[:`).
fn unportable_pattern(e: &Expr) -> Option<String> {
    let mut found = None;
    visit(e, &mut |x| {
        if let Expr::Call(_, f, args) = x {
            if let (true, Some(Expr::Str(p))) = (f == "matches", args.last()) {
                let classes = [
                    "\\d", "\\D", "\\w", "\\W", "\\s", "\\S", "\\b", "\\B", "\\p", "\\P", "[[:",
                ];
                if classes.iter().any(|c| p.contains(c)) {
                    found.get_or_insert(p.clone());
                }
            }
        }
    });
    found
}

fn visit(e: &Expr, f: &mut impl FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Member(b, _, _) | Expr::Not(b) => visit(b, f),
        Expr::Call(r, _, args) => {
            if let Some(r) = r {
                visit(r, f);
            }
            args.iter().for_each(|a| visit(a, f));
        }
        Expr::Binary(_, l, r) => {
            visit(l, f);
            visit(r, f);
        }
        Expr::Ternary(a, b, c) => [a, b, c].iter().for_each(|x| visit(x, f)),
        Expr::List(items) => items.iter().for_each(|i| visit(i, f)),
        _ => {}
    }
}

/// `e` as CEL text (compound operands in parentheses); `None` for what
/// imgate's CEL has not (`?.`).
fn print(e: &Expr) -> Option<String> {
    let join = |items: &[Expr]| -> Option<String> {
        Some(
            items
                .iter()
                .map(print)
                .collect::<Option<Vec<_>>>()?
                .join(", "),
        )
    };
    // An operand of `.` or `!`: compound ones in parentheses.
    let operand = |x: &Expr| -> Option<String> {
        Some(match x {
            Expr::Not(_) => format!("({})", print(x)?),
            _ => print(x)?,
        })
    };
    Some(match e {
        Expr::Ident(i) => i.clone(),
        Expr::Str(s) => cel_str(s),
        Expr::Int(n) => n.to_string(),
        Expr::Bool(b) => b.to_string(),
        Expr::List(items) => format!("[{}]", join(items)?),
        Expr::Member(_, _, true) => return None,
        Expr::Member(base, name, false) => format!("{}.{name}", operand(base)?),
        Expr::Call(Some(recv), f, args) => format!("{}.{f}({})", operand(recv)?, join(args)?),
        Expr::Call(None, f, args) => format!("{f}({})", join(args)?),
        Expr::Not(x) => format!("!{}", operand(x)?),
        Expr::Binary(op, l, r) => format!("({} {op} {})", print(l)?, print(r)?),
        Expr::Ternary(a, b, c) => format!("({} ? {} : {})", print(a)?, print(b)?, print(c)?),
    })
}

/// The policy's attestation requirements from its recognised `checks`
/// (`(field path, check, message)`); `None` when one was refused.
pub(super) fn attestations(
    imported: &mut Imported,
    source: &str,
    spec: &serde_json::Map<String, Value>,
    checks: &[(String, Check, Option<String>)],
) -> Option<Vec<Required>> {
    let mut refused = false;
    let mut out: Vec<Required> = Vec::new();
    let mut signed: Vec<(&str, &[String], &str)> = Vec::new();
    for (path, check, _) in checks {
        if let Check::Signed {
            attestation,
            attestors,
            ..
        } = check
        {
            match signed.iter().find(|(a, _, _)| a == attestation) {
                Some((_, theirs, _)) if *theirs != attestors.as_slice() => {
                    imported.refuse(source, path, "several checks of one attestation with different attestors must all hold: imgate accepts any one signer", true);
                    refused = true;
                }
                Some(_) => {}
                None => signed.push((attestation, attestors, path)),
            }
        }
    }
    let declared = spec
        .get("attestations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let verified: BTreeSet<String> = signed.iter().map(|(a, _, _)| a.to_string()).collect();
    for (name, attestors, path) in signed {
        let Some((i, declaration)) = declared
            .iter()
            .enumerate()
            .find(|(_, d)| d.get("name").and_then(Value::as_str) == Some(name))
        else {
            imported.refuse(source, path, &format!("no attestation named {name}"), true);
            refused = true;
            continue;
        };
        let at = format!("spec.attestations[{i}]");
        let predicate_type = declaration.pointer("/intoto/type").and_then(Value::as_str);
        let Some(predicate_type) =
            predicate_type.filter(|t| statement::predicate_type(t).as_deref() == Ok(*t))
        else {
            let why = if declaration.get("referrer").is_some() {
                "an OCI referrer artifact (referrer.type), not an in-toto attestation: imgate has no equivalent"
            } else {
                "intoto.type is not a predicate type URI (Kyverno's short names are not carried over)"
            };
            imported.refuse(source, &at, why, true);
            refused = true;
            continue;
        };
        let mut s = Signing::new(imported, source);
        let named = spec
            .get("attestors")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for attestor in attestors {
            match named
                .iter()
                .enumerate()
                .find(|(_, a)| a.get("name").and_then(Value::as_str) == Some(attestor.as_str()))
            {
                Some((j, a)) => match a.get("cosign") {
                    Some(cosign) => s.cosign(cosign, &format!("spec.attestors[{j}].cosign")),
                    None => s.refuse(
                        &format!("spec.attestors[{j}]"),
                        "only cosign attestors are verified by imgate",
                    ),
                },
                None => s.refuse("spec.attestors", &format!("no attestor named {attestor}")),
            }
        }
        let Some(signers) = s.finish(path) else {
            refused = true;
            continue;
        };
        let conditions: Vec<(String, Option<String>)> = checks
            .iter()
            .filter_map(|(_, c, message)| match c {
                Check::Payload {
                    attestation,
                    condition,
                    ..
                } if attestation == name => Some((condition.clone(), message.clone())),
                _ => None,
            })
            .collect();
        let findings = if conditions.is_empty() {
            vec![(FindingKind::Note, at, format!("as in Kyverno, at least one {predicate_type} statement signed by an attestor must be in the .att tag (stores: [att])."))]
        } else {
            vec![(FindingKind::Stricter, at, format!("Kyverno evaluated the extractPayload conditions on one {predicate_type} statement in the .att tag, the last an attestor verified; imgate requires every one there to meet them (statements: all): an image whose last statement meets them while another does not was admitted by Kyverno and is denied by imgate."))]
        };
        out.push(Required {
            keyed: !signers.keys.is_empty(),
            tlog: signers.tlog,
            signers_path: path.to_string(),
            findings,
            attestation: Attestation {
                name: name.to_string(),
                predicate_type: predicate_type.to_string(),
                keys: signers.keys,
                keyless: signers.keyless,
                conditions,
            },
        });
    }
    for (path, check, _) in checks {
        if let Check::Payload { attestation, .. } = check {
            if !verified.contains(attestation) {
                imported.refuse(source, path, &format!("extractPayload of attestation {attestation}, which no validation verifies with verifyAttestationSignatures: Kyverno fails it"), true);
                refused = true;
            }
        }
    }
    (!refused).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::cel::parse;
    use super::*;

    fn check(text: &str) -> Result<Option<Check>, String> {
        recognise(&parse(text).unwrap())
    }

    #[test]
    fn signature_and_payload_shapes() {
        match check("images.containers.map(image, verifyAttestationSignatures(image, attestations.provenance, [attestors.ci, attestors.release])).all(e, e > 0)") {
            Ok(Some(Check::Signed { attestation, attestors, lists })) => {
                assert_eq!(attestation, "provenance");
                assert_eq!(attestors, ["ci", "release"]);
                assert_eq!(lists, Lists::of_field("containers").unwrap());
            }
            other => panic!("{other:?}"),
        }
        match check("images.initContainers.all(i, extractPayload(i, attestations.vuln).scanner.result.Results.all(r, !has(r.Vulnerabilities) || r.Vulnerabilities.all(v, v.Severity != 'CRITICAL')))") {
            Ok(Some(Check::Payload { attestation, condition, .. })) => {
                assert_eq!(attestation, "vuln");
                assert_eq!(condition, "predicate.scanner.result.Results.all(r, (!has(r.Vulnerabilities) || r.Vulnerabilities.all(v, (v.Severity != \"CRITICAL\"))))");
            }
            other => panic!("{other:?}"),
        }
        match check("images.containers.map(i, extractPayload(i, attestations.p).buildDefinition.externalParameters.workflow.ref == 'refs/heads/main').all(e, e)") {
            Ok(Some(Check::Payload { condition, .. })) => assert_eq!(
                condition,
                "(predicate.buildDefinition.externalParameters.workflow.ref == \"refs/heads/main\")"
            ),
            other => panic!("{other:?}"),
        }
        // Not about attestations at all.
        assert!(matches!(
            check("images.containers.all(i, i.startsWith('ghcr.io/'))"),
            Ok(None)
        ));
    }

    #[test]
    fn what_is_not_one_payload_is_refused() {
        for (text, why) in [
            ("images.containers.map(i, extractPayload(i, attestations.a).x == extractPayload(i, attestations.b).x).all(e, e)", "several attestations"),
            ("images.containers.map(i, extractPayload(i, attestations.a).repo == object.metadata.name).all(e, e)", "reads `object`"),
            ("images.containers.map(i, extractPayload(i, attestations.a).id.matches('^[0-9]+\\\\d$')).all(e, e)", "character class"),
            ("images.containers.map(i, extractPayload(i, attestations.a).x.?y == 'z').all(e, e)", "optional"),
            ("images.containers.map(i, extractPayload(i, attestations.a).x.frobnicate()).all(e, e)", "does not load"),
            ("images.containers.map(i, verifyAttestationSignatures(i, 'provenance', [attestors.ci])).all(e, e > 0)", "arguments"),
        ] {
            match check(text) {
                Err(err) => assert!(err.contains(why), "{text}: {err}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // The payload of another image than the one iterated: not a payload check.
        assert!(matches!(
            check("images.containers.map(i, extractPayload('x', attestations.a).y == 1).all(e, e)"),
            Ok(None)
        ));
    }
}
