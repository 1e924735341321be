//! The CEL the importer recognises, parsed (a small subset of CEL's
//! grammar, depth-bounded) and matched against known shapes; anything else
//! is "not recognised" and refused by name, never guessed.
//!
//! Shapes: a container list (`object.spec.containers`, `initContainers`,
//! `ephemeralContainers`, optional `?.` and `.orValue([])`, `+`, a
//! `variables.` name bound to one) followed by `.all(c, P)` (or `.exists`,
//! read as `.all`, which is stricter), where `P` is made of
//! `c.image.startsWith('...')`, `endsWith`, `contains`, `==`, `!=`, `in`
//! a list, `LIST.exists(r, c.image.startsWith(r))`, `!`, `&&`, `||`; and
//! an ImageValidatingPolicy's `images.containers.map(i,
//! verifyImageSignatures(i, [attestors.a])).all(e, e > 0)`.

use std::collections::BTreeMap;

pub(super) use super::cel_parse::{parse, Expr};
use super::cond::Cond;
use super::model::{Imported, Lists};
use super::ImportError;

/// Whether the expression text is about image references.
pub(super) fn about_images(text: &str) -> bool {
    text.contains(".image") || text.contains("images.") || text.contains("image.")
}

/// Reads expressions against `variables` (each parsed).
pub(super) struct Reader<'a> {
    pub imported: &'a mut Imported,
    pub source: &'a str,
    pub variables: BTreeMap<String, Expr>,
}

/// A recognised image condition: every image of `lists` must meet `cond`.
pub(super) type ListCond = (Lists, Cond);

impl Reader<'_> {
    fn unknown(&mut self, path: &str, why: &str) -> Cond {
        let source = self.source.to_string();
        self.imported
            .refuse(&source, path, &format!("CEL not recognised: {why}"), true);
        Cond::Unknown
    }

    /// Checks the size and parses; a parse failure is refused.
    pub fn parse(&mut self, text: &str, path: &str) -> Result<Option<Expr>, ImportError> {
        if text.len() > super::MAX_CEL_LEN {
            return Err(ImportError::ExpressionTooLong {
                source_name: self.source.to_string(),
                path: path.to_string(),
                len: text.len(),
                max: super::MAX_CEL_LEN,
            });
        }
        match parse(text) {
            Ok(e) => Ok(Some(e)),
            Err(why) => {
                self.unknown(path, &why);
                Ok(None)
            }
        }
    }

    /// The image conditions of a validation expression: its `&&` parts
    /// about images, each recognised or unknown; the other parts are
    /// returned as not imported.
    pub fn validation(
        &mut self,
        e: &Expr,
        path: &str,
    ) -> Result<(Vec<ListCond>, bool), ImportError> {
        let mut parts = Vec::new();
        conjuncts(e, &mut parts);
        let mut out = Vec::new();
        let mut others = false;
        for part in parts {
            if !mentions(part) {
                others = true;
                continue;
            }
            out.push(self.all_images(part, path)?);
        }
        Ok((out, others))
    }

    /// `LIST.all(v, P)`, `LIST.exists(v, P)`, guarded by `has(...)`.
    fn all_images(&mut self, e: &Expr, path: &str) -> Result<ListCond, ImportError> {
        match e {
            // `!has(x) || REST` and `has(x) ? REST : true`: taken as present.
            Expr::Binary(op, l, r)
                if op == "||" && matches!(&**l, Expr::Not(inner) if is_has(inner)) =>
            {
                self.all_images(r, path)
            }
            Expr::Ternary(c, yes, no) if is_has(c) && **no == Expr::Bool(true) => {
                self.all_images(yes, path)
            }
            Expr::Call(Some(list), f, args) if (f == "all" || f == "exists") && args.len() == 2 => {
                let (Some(lists), Expr::Ident(var)) = (self.lists(list), &args[0]) else {
                    return Ok((
                        Lists::ALL,
                        self.unknown(path, "a list that is not a pod's containers"),
                    ));
                };
                if f == "exists" {
                    let source = self.source.to_string();
                    self.imported.finding(
                        super::report::FindingKind::Stricter,
                        &source,
                        path,
                        "exists: Kyverno needed one container to match; imgate checks every container",
                    );
                }
                let cond = self.predicate(&args[1], var, path)?;
                Ok((lists, cond))
            }
            _ => Ok((
                Lists::ALL,
                self.unknown(
                    path,
                    "not `containers.all(c, ...)` over a pod's container lists",
                ),
            )),
        }
    }

    /// The container lists a list expression names.
    fn lists(&self, e: &Expr) -> Option<Lists> {
        match e {
            Expr::Binary(op, l, r) if op == "+" => Some(self.lists(l)?.union(self.lists(r)?)),
            Expr::Call(Some(inner), f, args) if f == "orValue" && args.len() == 1 => {
                self.lists(inner)
            }
            Expr::Member(base, name, _) => {
                if let Expr::Ident(v) = &**base {
                    if v == "variables" {
                        return self.lists(self.variables.get(name)?);
                    }
                }
                let lists = Lists::of_field(name)?;
                spec_path(base).then_some(lists)
            }
            _ => None,
        }
    }

    /// A condition on `var.image` (or on `var` when iterating image strings).
    fn predicate(&mut self, e: &Expr, var: &str, path: &str) -> Result<Cond, ImportError> {
        let image = |x: &Expr| is_image(x, var);
        Ok(match e {
            Expr::Bool(b) => {
                if *b {
                    Cond::True
                } else {
                    Cond::False
                }
            }
            Expr::Not(inner) => self.predicate(inner, var, path)?.not(),
            Expr::Binary(op, l, r) if op == "&&" => Cond::and(vec![
                self.predicate(l, var, path)?,
                self.predicate(r, var, path)?,
            ]),
            Expr::Binary(op, l, r) if op == "||" => Cond::or(vec![
                self.predicate(l, var, path)?,
                self.predicate(r, var, path)?,
            ]),
            Expr::Binary(op, l, r) if (op == "==" || op == "!=") && image(l) => {
                let Expr::Str(s) = &**r else {
                    return Ok(
                        self.unknown(path, "a comparison with something other than a string")
                    );
                };
                let c = self.literal(path, s, "", "")?;
                if op == "==" {
                    c
                } else {
                    c.not()
                }
            }
            Expr::Binary(op, l, r) if op == "in" && image(l) => {
                let Some(items) = self.strings(r) else {
                    return Ok(self.unknown(path, "`in` something other than a list of strings"));
                };
                let mut any = Vec::new();
                for s in items {
                    any.push(self.literal(path, &s, "", "")?);
                }
                Cond::or(any)
            }
            Expr::Call(Some(recv), f, args) if image(recv) && args.len() == 1 => {
                let Expr::Str(s) = &args[0] else {
                    return Ok(
                        self.unknown(path, "a string function of something other than a string")
                    );
                };
                match f.as_str() {
                    "startsWith" => self.literal(path, s, "", "*")?,
                    "endsWith" => self.literal(path, s, "*", "")?,
                    "contains" => self.literal(path, s, "*", "*")?,
                    _ => self.unknown(path, &format!("`{f}` on an image")),
                }
            }
            // `['a/', 'b/'].exists(r, c.image.startsWith(r))`
            Expr::Call(Some(list), f, args) if f == "exists" && args.len() == 2 => {
                let (Some(items), Expr::Ident(r)) = (self.strings(list), &args[0]) else {
                    return Ok(
                        self.unknown(path, "`exists` over something other than a list of strings")
                    );
                };
                let mut any = Vec::new();
                for s in items {
                    let bound = substitute(&args[1], r, &Expr::Str(s));
                    any.push(self.predicate(&bound, var, path)?);
                }
                Cond::or(any)
            }
            _ => self.unknown(
                path,
                "a condition on the image the importer does not translate",
            ),
        })
    }

    /// The wildcard `prefix` + `text` + `suffix`; a literal with `*` or `?`
    /// is a string no image contains.
    fn literal(
        &mut self,
        path: &str,
        text: &str,
        prefix: &str,
        suffix: &str,
    ) -> Result<Cond, ImportError> {
        if text.contains(['*', '?']) {
            return Ok(Cond::False);
        }
        let source = self.source.to_string();
        self.imported
            .glob(&source, path, &format!("{prefix}{text}{suffix}"))
    }

    /// A list of string literals, directly or through `variables.`.
    fn strings(&self, e: &Expr) -> Option<Vec<String>> {
        match e {
            Expr::List(items) => items
                .iter()
                .map(|i| match i {
                    Expr::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            Expr::Member(base, name, _) if **base == Expr::Ident("variables".into()) => {
                self.strings(self.variables.get(name)?)
            }
            _ => None,
        }
    }
}

/// The attestor names an ImageValidatingPolicy validation requires any one
/// signature of, for images of which lists:
/// `images.containers.map(i, verifyImageSignatures(i, [attestors.a])).all(e, e > 0)`
/// or `images.containers.all(i, verifyImageSignatures(i, [attestors.a]) > 0)`.
pub(super) fn signature_check(e: &Expr) -> Option<(Lists, Vec<String>)> {
    let (lists, args) = per_image(e, "verifyImageSignatures")?;
    let [Expr::List(attestors)] = args else {
        return None;
    };
    Some((lists, names_in(attestors, "attestors")?))
}

/// `images.L.map(v, f(v, ARGS)).all(e, e > 0)` or `images.L.all(v, f(v,
/// ARGS) > 0)` (also `>= 1`, `!= 0`): `f` counted at least one attestor
/// for every image of the lists `L`. Returns the lists and `ARGS`.
pub(super) fn per_image<'e>(e: &'e Expr, f: &str) -> Option<(Lists, &'e [Expr])> {
    let Expr::Call(Some(recv), all, args) = e else {
        return None;
    };
    let (true, [Expr::Ident(outer), body]) = (all == "all", args.as_slice()) else {
        return None;
    };
    let (list, var, call): (&Expr, &str, &Expr) = match &**recv {
        Expr::Call(Some(list), map, margs) if map == "map" => {
            let [Expr::Ident(v), call] = margs.as_slice() else {
                return None;
            };
            positive(body, &Expr::Ident(outer.clone()))?;
            (&**list, v, call)
        }
        list => (list, outer, positive(body, &ANY)?),
    };
    let lists = images_list(list)?;
    let Expr::Call(None, name, cargs) = call else {
        return None;
    };
    let (true, [Expr::Ident(image), rest @ ..]) = (name == f, cargs.as_slice()) else {
        return None;
    };
    (image == var).then_some((lists, rest))
}

/// `images.containers` (or another list): the lists it names.
pub(super) fn images_list(e: &Expr) -> Option<Lists> {
    let Expr::Member(images, field, false) = e else {
        return None;
    };
    if **images != Expr::Ident("images".into()) {
        return None;
    }
    Lists::of_field(field)
}

/// The names `prefix.a`, `prefix.b` of `items`.
pub(super) fn names_in(items: &[Expr], prefix: &str) -> Option<Vec<String>> {
    items
        .iter()
        .map(|a| match a {
            Expr::Member(base, name, false) if **base == Expr::Ident(prefix.into()) => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// Matches anything in [`positive`].
const ANY: Expr = Expr::Bool(true);

/// `x > 0`, `x >= 1`, `x != 0` of `x` (any `x` when `of` is [`ANY`]):
/// at least one attestor verified. Returns `x`.
fn positive<'e>(e: &'e Expr, of: &Expr) -> Option<&'e Expr> {
    let Expr::Binary(op, x, n) = e else {
        return None;
    };
    let ok = matches!(
        (op.as_str(), &**n),
        (">", Expr::Int(0)) | (">=", Expr::Int(1)) | ("!=", Expr::Int(0))
    );
    (ok && (*of == ANY || **x == *of)).then_some(&**x)
}

fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Binary(op, l, r) if op == "&&" => {
            conjuncts(l, out);
            conjuncts(r, out);
        }
        other => out.push(other),
    }
}

fn mentions(e: &Expr) -> bool {
    match e {
        Expr::Member(base, name, _) => name == "image" || name == "images" || mentions(base),
        Expr::Ident(i) => i == "images",
        Expr::Call(recv, f, args) => {
            f.starts_with("verifyImage")
                || recv.as_deref().is_some_and(mentions)
                || args.iter().any(mentions)
        }
        Expr::Not(x) => mentions(x),
        Expr::Binary(_, l, r) => mentions(l) || mentions(r),
        Expr::Ternary(a, b, c) => mentions(a) || mentions(b) || mentions(c),
        Expr::List(items) => items.iter().any(mentions),
        _ => false,
    }
}

fn is_has(e: &Expr) -> bool {
    matches!(e, Expr::Call(None, f, _) if f == "has")
}

/// `v.image`, or `v` itself.
fn is_image(e: &Expr, var: &str) -> bool {
    match e {
        Expr::Member(base, name, _) => name == "image" && **base == Expr::Ident(var.into()),
        Expr::Ident(i) => i == var,
        _ => false,
    }
}

/// `object.spec`, `object.spec.template.spec`, `object.spec.jobTemplate.spec.template.spec`.
fn spec_path(e: &Expr) -> bool {
    let mut names = Vec::new();
    let mut at = e;
    while let Expr::Member(base, name, _) = at {
        names.push(name.as_str());
        at = base;
    }
    if *at != Expr::Ident("object".into()) {
        return false;
    }
    names.reverse();
    matches!(
        names.as_slice(),
        ["spec"]
            | ["spec", "template", "spec"]
            | ["spec", "jobTemplate", "spec", "template", "spec"]
    )
}

/// `e` with the identifier `name` replaced by `with`.
fn substitute(e: &Expr, name: &str, with: &Expr) -> Expr {
    let s = |x: &Expr| Box::new(substitute(x, name, with));
    match e {
        Expr::Ident(i) if i == name => with.clone(),
        Expr::Member(b, n, o) => Expr::Member(s(b), n.clone(), *o),
        Expr::Call(r, f, args) => Expr::Call(
            r.as_deref().map(s),
            f.clone(),
            args.iter().map(|a| substitute(a, name, with)).collect(),
        ),
        Expr::Not(x) => Expr::Not(s(x)),
        Expr::Binary(op, l, r) => Expr::Binary(op.clone(), s(l), s(r)),
        Expr::Ternary(a, b, c) => Expr::Ternary(s(a), s(b), s(c)),
        Expr::List(items) => Expr::List(items.iter().map(|i| substitute(i, name, with)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn read(expr: &str, vars: &[(&str, &str)]) -> (Vec<ListCond>, Imported) {
        let mut imported = Imported::default();
        let mut r = Reader {
            imported: &mut imported,
            source: "ValidatingPolicy/t",
            variables: BTreeMap::new(),
        };
        for (k, v) in vars {
            r.variables.insert(k.to_string(), parse(v).unwrap());
        }
        let path = "spec.validations[0].expression";
        let conds = match r.parse(expr, path).unwrap() {
            Some(e) => r.validation(&e, path).unwrap().0,
            None => vec![(Lists::ALL, Cond::Unknown)],
        };
        (conds, imported)
    }

    #[test]
    fn registry_prefixes_over_every_container_list() {
        let (conds, imported) = read(
            "variables.containers.all(c, variables.allowed.exists(r, c.image.startsWith(r)) && !c.image.endsWith(':latest'))",
            &[
                ("containers", "object.spec.containers + object.spec.?initContainers.orValue([]) + object.spec.?ephemeralContainers.orValue([])"),
                ("allowed", "['ghcr.io/acme/', \"registry.example.com/\"]"),
            ],
        );
        let (lists, cond) = &conds[0];
        assert_eq!(*lists, Lists::ALL);
        let admits = |i: &str| imported.atoms.admits(&cond.strict(), i);
        assert!(admits("ghcr.io/acme/app:1"));
        assert!(admits("registry.example.com/x@sha256:00"));
        assert!(!admits("ghcr.io/acme/app:latest"));
        assert!(!admits("ghcr.io/other/app:1"));
    }

    #[test]
    fn unrecognised_cel_is_refused_never_guessed() {
        for expr in [
            "object.spec.containers.all(c, c.image.matches('^ghcr\\\\.io/.*'))",
            "object.spec.containers.all(c, size(c.image) < 100)",
            "object.spec.volumes.all(v, v.image.startsWith('x'))",
            "object.spec.containers[0].image.startsWith('ghcr.io/')",
        ] {
            let (conds, imported) = read(expr, &[]);
            assert!(conds.iter().any(|(_, c)| c.has_unknown()), "{expr}");
            assert!(
                imported
                    .findings
                    .iter()
                    .any(|f| f.kind == super::super::report::FindingKind::Refused),
                "{expr}"
            );
        }
    }

    #[test]
    fn signature_checks() {
        let e = parse("images.containers.map(image, verifyImageSignatures(image, [attestors.cosign, attestors.ci])).all(e, e > 0)").unwrap();
        assert_eq!(
            signature_check(&e),
            Some((
                Lists::of_field("containers").unwrap(),
                vec!["cosign".into(), "ci".into()]
            ))
        );
        let e = parse("images.initContainers.all(i, verifyImageSignatures(i, [attestors.k]) >= 1)")
            .unwrap();
        assert_eq!(
            signature_check(&e).map(|(_, n)| n),
            Some(vec!["k".to_string()])
        );
        let e = parse(
            "images.containers.map(i, verifyImageSignatures(i, [attestors.k])).all(e, e > 1)",
        )
        .unwrap();
        assert_eq!(signature_check(&e), None);
    }
}
