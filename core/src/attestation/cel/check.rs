//! Type-checking a condition when the policy loads. cel-rust parses and
//! evaluates but has no checker, so imgate walks the parsed expression
//! itself: every identifier must be a declared variable (or a
//! comprehension's), every function one of the standard library's that
//! imgate offers, every call's argument types (where they are known)
//! must fit one of its overloads, and the whole must be able to yield a
//! `bool`. JSON from the statement is `dyn` (any type), so a mistake in a
//! field name shows at evaluation, as an unmet condition naming it; a
//! mistake in the expression's own shape (`size(1)`, `"a" + 1`, `x.y()`,
//! a condition that is a string) shows at load.
//!
//! Calls whose arguments are all literals (`duration("168h")`,
//! `timestamp("…")`, the pattern of `matches`) are evaluated here too, so a
//! malformed duration or regex is refused at load, not at the first review.

use std::collections::BTreeMap;

use cel::common::ast::{operators, CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue};

/// A statically known CEL type; `Dyn` is "known only at evaluation".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    Timestamp,
    Duration,
    Type,
    Dyn,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Uint => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Bytes => "bytes",
            Ty::Null => "null",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Timestamp => "timestamp",
            Ty::Duration => "duration",
            Ty::Type => "type",
            Ty::Dyn => "dyn",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    /// Whether a value of this static type may be one of `allowed`.
    fn fits(self, allowed: &[Ty]) -> bool {
        self == Ty::Dyn || allowed.contains(&self)
    }
}

/// The variables a condition may use, and their types.
pub(crate) const VARIABLES: &[(&str, Ty)] = &[
    ("predicate", Ty::Dyn),
    ("predicateType", Ty::String),
    ("subject", Ty::Map),
    ("signer", Ty::Map),
    ("now", Ty::Timestamp),
];

/// Type names usable as values (`type(x) == string`).
const TYPE_NAMES: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
];

/// Functions of cel-rust's standard library that conditions may call
/// (member or global, as CEL allows). Everything else, including the
/// optional-value library, is refused at load.
pub const FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "string",
    "int",
    "uint",
    "double",
    "bool",
    "bytes",
    "type",
    "dyn",
    "duration",
    "timestamp",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getFullYear",
    "getHours",
    "getMilliseconds",
    "getMinutes",
    "getMonth",
    "getSeconds",
];

/// Scope: comprehension variables in force, with their types.
type Scope = BTreeMap<String, Ty>;

/// Checks `expr`; the error says what is wrong, in words for the policy author.
pub(crate) fn check(expr: &IdedExpr) -> Result<(), String> {
    let ty = infer(expr, &Scope::new())?;
    if ty.fits(&[Ty::Bool]) {
        Ok(())
    } else {
        Err(format!(
            "the condition evaluates to a {}, not a bool",
            ty.name()
        ))
    }
}

fn infer(expr: &IdedExpr, scope: &Scope) -> Result<Ty, String> {
    match &expr.expr {
        Expr::Literal(lit) => Ok(match lit {
            LiteralValue::Boolean(_) => Ty::Bool,
            LiteralValue::Bytes(_) => Ty::Bytes,
            LiteralValue::Double(_) => Ty::Double,
            LiteralValue::Int(_) => Ty::Int,
            LiteralValue::Null => Ty::Null,
            LiteralValue::String(_) => Ty::String,
            LiteralValue::UInt(_) => Ty::Uint,
        }),
        Expr::Ident(name) => ident(name, scope),
        Expr::Select(select) => {
            let operand = infer(&select.operand, scope)?;
            if !operand.fits(&[Ty::Map]) {
                return Err(format!(
                    "cannot select field {:?} of a {}",
                    select.field,
                    operand.name()
                ));
            }
            Ok(if select.test { Ty::Bool } else { Ty::Dyn })
        }
        Expr::List(list) => {
            for element in &list.elements {
                infer(element, scope)?;
            }
            Ok(Ty::List)
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(e) => {
                        let key = infer(&e.key, scope)?;
                        if !key.fits(&[Ty::String, Ty::Int, Ty::Uint, Ty::Bool]) {
                            return Err(format!("a {} cannot be a map key", key.name()));
                        }
                        infer(&e.value, scope)?;
                    }
                    EntryExpr::StructField(f) => {
                        return Err(format!(
                            "field {:?} of a message: conditions build no messages",
                            f.field
                        ))
                    }
                }
            }
            Ok(Ty::Map)
        }
        Expr::Struct(s) => Err(format!(
            "message {:?}: conditions build no messages",
            s.type_name
        )),
        Expr::Comprehension(c) => {
            let range = infer(&c.iter_range, scope)?;
            if !range.fits(&[Ty::List, Ty::Map]) {
                return Err(format!("cannot iterate over a {}", range.name()));
            }
            let accu = infer(&c.accu_init, scope)?;
            let mut inner = scope.clone();
            inner.insert(c.iter_var.clone(), Ty::Dyn);
            if let Some(second) = &c.iter_var2 {
                inner.insert(second.clone(), Ty::Dyn);
            }
            inner.insert(c.accu_var.clone(), accu);
            infer(&c.loop_cond, &inner)?;
            infer(&c.loop_step, &inner)?;
            infer(&c.result, &inner)
        }
        Expr::Call(call) => self::call(call, scope),
        Expr::Unspecified => Err("an empty expression".to_string()),
    }
}

fn ident(name: &str, scope: &Scope) -> Result<Ty, String> {
    if let Some(ty) = scope.get(name) {
        return Ok(*ty);
    }
    if let Some((_, ty)) = VARIABLES.iter().find(|(n, _)| *n == name) {
        return Ok(*ty);
    }
    if TYPE_NAMES.contains(&name) {
        return Ok(Ty::Type);
    }
    Err(format!(
        "undeclared reference to {name:?} (the variables are {})",
        VARIABLES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn no_overload(name: &str, args: &[Ty]) -> String {
    format!(
        "no overload of {name} takes ({})",
        args.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
    )
}

/// The result type of a binary arithmetic operator, or why it cannot apply.
fn arithmetic(op: &str, a: Ty, b: Ty) -> Result<Ty, String> {
    use Ty::*;
    if a == Dyn || b == Dyn {
        return Ok(Dyn);
    }
    let result = match (op, a, b) {
        (_, x, y) if x == y && x.numeric() && op != operators::MODULO => Some(x),
        (operators::MODULO, Int, Int) => Some(Int),
        (operators::MODULO, Uint, Uint) => Some(Uint),
        (operators::ADD, String, String) => Some(String),
        (operators::ADD, Bytes, Bytes) => Some(Bytes),
        (operators::ADD, List, List) => Some(List),
        (operators::ADD, Duration, Duration) | (operators::SUBSTRACT, Duration, Duration) => {
            Some(Duration)
        }
        (operators::ADD, Timestamp, Duration)
        | (operators::ADD, Duration, Timestamp)
        | (operators::SUBSTRACT, Timestamp, Duration) => Some(Timestamp),
        (operators::SUBSTRACT, Timestamp, Timestamp) => Some(Duration),
        _ => None,
    };
    result.ok_or_else(|| no_overload(op, &[a, b]))
}

fn comparable(op: &str, a: Ty, b: Ty) -> Result<Ty, String> {
    let ok = a == Ty::Dyn
        || b == Ty::Dyn
        || a == b
        || (a.numeric() && b.numeric())
        || (op == operators::EQUALS || op == operators::NOT_EQUALS)
            && (a == Ty::Null || b == Ty::Null);
    let ordered = matches!(
        a,
        Ty::Int
            | Ty::Uint
            | Ty::Double
            | Ty::String
            | Ty::Bytes
            | Ty::Bool
            | Ty::Timestamp
            | Ty::Duration
            | Ty::Dyn
    );
    let ordering = !(op == operators::EQUALS || op == operators::NOT_EQUALS);
    if ok && (!ordering || ordered) {
        Ok(Ty::Bool)
    } else {
        Err(no_overload(op, &[a, b]))
    }
}

fn call(call: &CallExpr, scope: &Scope) -> Result<Ty, String> {
    let name = call.func_name.as_str();
    let mut args = Vec::with_capacity(call.args.len() + 1);
    if let Some(target) = &call.target {
        args.push(infer(target, scope)?);
    }
    for arg in &call.args {
        args.push(infer(arg, scope)?);
    }
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{name} takes {n} argument{}, not {}",
                if n == 1 { "" } else { "s" },
                args.len()
            ))
        }
    };
    let want = |i: usize, allowed: &[Ty]| -> Result<(), String> {
        if args[i].fits(allowed) {
            Ok(())
        } else {
            Err(no_overload(name, &args))
        }
    };
    match name {
        operators::LOGICAL_AND | operators::LOGICAL_OR => {
            arity(2)?;
            want(0, &[Ty::Bool])?;
            want(1, &[Ty::Bool])?;
            Ok(Ty::Bool)
        }
        operators::LOGICAL_NOT | operators::NOT_STRICTLY_FALSE => {
            arity(1)?;
            want(0, &[Ty::Bool])?;
            Ok(Ty::Bool)
        }
        operators::CONDITIONAL => {
            arity(3)?;
            want(0, &[Ty::Bool])?;
            Ok(if args[1] == args[2] { args[1] } else { Ty::Dyn })
        }
        operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS => {
            arity(2)?;
            comparable(name, args[0], args[1])
        }
        operators::ADD
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO => {
            arity(2)?;
            arithmetic(name, args[0], args[1])
        }
        operators::NEGATE => {
            arity(1)?;
            want(0, &[Ty::Int, Ty::Double, Ty::Duration])?;
            Ok(args[0])
        }
        operators::INDEX => {
            arity(2)?;
            match args[0] {
                Ty::List => want(1, &[Ty::Int, Ty::Uint])?,
                Ty::Map | Ty::Dyn => {}
                _ => return Err(no_overload("_[_]", &args)),
            }
            Ok(Ty::Dyn)
        }
        operators::IN => {
            arity(2)?;
            want(1, &[Ty::List, Ty::Map])?;
            Ok(Ty::Bool)
        }
        "size" => {
            arity(1)?;
            want(0, &[Ty::String, Ty::Bytes, Ty::List, Ty::Map])?;
            Ok(Ty::Int)
        }
        "contains" | "startsWith" | "endsWith" => {
            member(call, name)?;
            arity(2)?;
            want(0, &[Ty::String])?;
            want(1, &[Ty::String])?;
            Ok(Ty::Bool)
        }
        "matches" => {
            arity(2)?;
            want(0, &[Ty::String])?;
            want(1, &[Ty::String])?;
            // A pattern from the statement could be megabytes of regex to
            // compile on every review; a literal is compiled (and checked) once here.
            let pattern = call.args.last().map(|p| &p.expr);
            let Some(Expr::Literal(LiteralValue::String(pattern))) = pattern else {
                return Err("the pattern of matches must be a string literal".to_string());
            };
            regex::Regex::new(pattern.inner())
                .map_err(|err| format!("invalid pattern in matches: {err}"))?;
            Ok(Ty::Bool)
        }
        "string" | "int" | "uint" | "double" | "bool" | "bytes" => {
            global(call, name)?;
            arity(1)?;
            Ok(match name {
                "string" => Ty::String,
                "int" => Ty::Int,
                "uint" => Ty::Uint,
                "double" => Ty::Double,
                "bool" => Ty::Bool,
                _ => Ty::Bytes,
            })
        }
        "type" => {
            global(call, name)?;
            arity(1)?;
            Ok(Ty::Type)
        }
        "dyn" => {
            global(call, name)?;
            arity(1)?;
            Ok(Ty::Dyn)
        }
        "duration" => {
            global(call, name)?;
            arity(1)?;
            want(0, &[Ty::String, Ty::Duration])?;
            literal_converts(call, name)?;
            Ok(Ty::Duration)
        }
        "timestamp" => {
            global(call, name)?;
            arity(1)?;
            want(0, &[Ty::String, Ty::Int, Ty::Timestamp])?;
            literal_converts(call, name)?;
            Ok(Ty::Timestamp)
        }
        getter if getter.starts_with("get") && FUNCTIONS.contains(&getter) => {
            member(call, name)?;
            if args.len() != 1 && args.len() != 2 {
                return Err(format!("{name} takes a timestamp and at most a time zone"));
            }
            want(0, &[Ty::Timestamp])?;
            if args.len() == 2 {
                want(1, &[Ty::String])?;
            }
            Ok(Ty::Int)
        }
        other => Err(format!(
            "unknown function {other:?} (conditions may call {})",
            FUNCTIONS.join(", ")
        )),
    }
}

fn member(call: &CallExpr, name: &str) -> Result<(), String> {
    if call.target.is_none() && name != "matches" {
        return Err(format!("{name} is called on a value: x.{name}(...)"));
    }
    Ok(())
}

fn global(call: &CallExpr, name: &str) -> Result<(), String> {
    if call.target.is_some() {
        return Err(format!("{name} is a function, not a method: {name}(x)"));
    }
    Ok(())
}

/// `duration("…")` and `timestamp("…")` with a literal: converted now, so
/// a typo is refused at load.
fn literal_converts(call: &CallExpr, name: &str) -> Result<(), String> {
    let Some(Expr::Literal(LiteralValue::String(text))) = call.args.first().map(|a| &a.expr) else {
        return Ok(());
    };
    let text = text.inner();
    let ok = match name {
        "duration" => cel::Env::stdlib()
            .compile(&format!("duration({text:?})"))
            .ok()
            .map(|p| p.execute(&cel::Context::default()).is_ok()),
        _ => Some(chrono::DateTime::parse_from_rfc3339(text).is_ok()),
    };
    if ok == Some(true) {
        Ok(())
    } else {
        Err(format!("{name}({text:?}) is not a valid {name}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn checked(src: &str) -> Result<(), String> {
        let expr = cel::Env::stdlib()
            .parser()
            .parse(src)
            .map_err(|e| e.to_string())?;
        check(&expr)
    }

    #[rstest]
    #[case("predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'")]
    #[case("predicate.runDetails.builder.id.startsWith('https://github.com/')")]
    #[case("now - timestamp(predicate.metadata.scanFinishedOn) <= duration('168h')")]
    #[case("!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))")]
    #[case("size(predicate.packages) > 0 && predicate.packages.all(p, p.name != 'evil')")]
    #[case("signer.identity.matches('^https://github\\\\.com/example/')")]
    #[case("subject.digest.sha256 != '' && predicateType == 'https://slsa.dev/provenance/v1'")]
    #[case("type(predicate) == map && 'x' in predicate")]
    #[case("predicate.list.map(x, x.name).filter(n, n.endsWith('.so')).size() == 0")]
    #[case("now.getFullYear() >= 2024")]
    fn accepts_real_conditions(#[case] src: &str) {
        checked(src).unwrap();
    }

    #[rstest]
    #[case("predicat.x == 1", "undeclared reference to \"predicat\"")]
    #[case("size(1) == 1", "no overload of size takes (int)")]
    #[case("'a' + 1 == 'a1'", "no overload of _+_ takes (string, int)")]
    #[case("predicate.x", "")]
    #[case("'yes'", "evaluates to a string, not a bool")]
    #[case("predicate.x.frobnicate()", "unknown function \"frobnicate\"")]
    #[case("predicate.x.matches(predicate.y)", "must be a string literal")]
    #[case("predicate.x.matches('(')", "invalid pattern")]
    #[case(
        "now - timestamp(predicate.t) < duration('7 days')",
        "is not a valid duration"
    )]
    #[case("timestamp('yesterday') < now", "is not a valid timestamp")]
    #[case("1.contains('a')", "no overload of contains")]
    #[case("now.x == 1", "cannot select field \"x\" of a timestamp")]
    #[case("optional.of(1).hasValue()", "")]
    fn refuses_what_cannot_work(#[case] src: &str, #[case] needle: &str) {
        match checked(src) {
            Ok(()) if needle.is_empty() => {}
            Ok(()) => panic!("{src} passed"),
            Err(err) => assert!(err.contains(needle), "{src}: {err}"),
        }
    }

    #[test]
    fn every_offered_function_exists_in_cel_rust() {
        // The allow-list must name what the interpreter implements, or a
        // condition that loads would fail at every review.
        let env = std::sync::Arc::new(cel::Env::stdlib());
        let samples = [
            "size('ab') == 2",
            "'ab'.contains('a')",
            "'ab'.startsWith('a')",
            "'ab'.endsWith('b')",
            "'ab'.matches('a.')",
            "string(1) == '1'",
            "int('1') == 1",
            "uint(1) == 1u",
            "double(1) == 1.0",
            "bool('true')",
            "bytes('a') == b'a'",
            "type(1) == int",
            "dyn(1) == 1",
            "duration('1h') > duration('1m')",
            "timestamp('2024-01-01T00:00:00Z').getDate() == 1",
            "timestamp('2024-01-01T00:00:00Z').getDayOfMonth() == 0",
            "timestamp('2024-01-01T00:00:00Z').getDayOfWeek() == 1",
            "timestamp('2024-01-01T00:00:00Z').getDayOfYear() == 0",
            "timestamp('2024-01-01T00:00:00Z').getFullYear() == 2024",
            "timestamp('2024-01-01T00:00:00Z').getHours() == 0",
            "timestamp('2024-01-01T00:00:00Z').getMilliseconds() == 0",
            "timestamp('2024-01-01T00:00:00Z').getMinutes() == 0",
            "timestamp('2024-01-01T00:00:00Z').getMonth() == 0",
            "timestamp('2024-01-01T00:00:00Z').getSeconds() == 0",
        ];
        for function in FUNCTIONS {
            assert!(
                samples.iter().any(|s| s.contains(&format!("{function}("))),
                "{function} has no sample"
            );
        }
        for sample in samples {
            let program = env.compile(sample).unwrap();
            let ctx = cel::Context::with_env(std::sync::Arc::clone(&env));
            assert_eq!(
                program.execute(&ctx),
                Ok(cel::Value::Bool(true)),
                "{sample}"
            );
            checked(sample).unwrap();
        }
    }
}
