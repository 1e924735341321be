//! Attestation conditions in CEL, on cel-rust's `cel` crate (the only
//! module that names it; it is pinned exactly in `core/Cargo.toml`).
//!
//! - [`Condition::compile`] (at policy load): parse with a bounded
//!   recursion depth and length, type-check (`check`: cel-rust has no
//!   checker of its own), and instrument for cost (`meter`).
//! - [`Inputs`] (once per verified statement, cacheable): the predicate,
//!   subject, predicate type and signer as CEL values, built straight from
//!   the JSON (`json`).
//! - [`Condition::evaluate`] (every review, cheap): borrows the inputs (no
//!   copy), adds `now`, evaluates under a cost budget, and for a false
//!   condition says what value it saw.
//!
//! Variables: `predicate` (the statement's predicate, any JSON), `subject`
//! (the statement's subject naming the image: `name`, `digest`,
//! `annotations`), `predicateType` (string), `signer` (`kind`: `key` or
//! `keyless`; `key`: the key's name; `identity` and `issuer`: the keyless
//! signer's certificate identity and OIDC issuer) and `now` (timestamp of
//! the evaluation).

mod check;
pub(crate) mod json;
mod meter;

use std::sync::{Arc, OnceLock};

use cel::common::ast::{operators, Expr, IdedExpr};
use cel::common::types::{CelBool, CelList, CelMap, CelString, CelTimestamp};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Value};

use json::CelValue;

pub use check::FUNCTIONS;

/// Longest condition accepted, in bytes of source.
pub const MAX_CONDITION_LEN: usize = 4096;
/// Deepest nesting the parser accepts (bounds the interpreter's recursion).
const MAX_DEPTH: u16 = 48;
/// Cost units one evaluation may spend (see `meter`): one per list element
/// or map entry consumed, one per 64 bytes of strings. One pass over every
/// element of a statement at the default size cap (8 MiB, some 80,000
/// SBOM packages) fits. Measured with `cargo bench --bench conditions`
/// (release build): a provenance condition takes about 1.5 µs, a pass over
/// 1,000 packages about 2 ms, and a condition that spends the whole budget
/// (a loop over a loop of 20,000 entries) about 0.6 s.
pub const DEFAULT_BUDGET: u64 = 1_000_000;
/// Longest rendering of a value in a denial.
const SAW_LEN: usize = 160;

/// The variables conditions may use.
pub fn variables() -> Vec<&'static str> {
    check::VARIABLES.iter().map(|(name, _)| *name).collect()
}

fn env() -> Result<Arc<cel::Env>, String> {
    static ENV: OnceLock<Result<Arc<cel::Env>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib().with_optional_support(false);
        meter::declare(&mut env).map_err(|err| err.to_string())?;
        Ok(Arc::new(env))
    })
    .clone()
}

/// A compiled, checked condition.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    expr: IdedExpr,
}

impl Condition {
    /// Compiles and type-checks `source`; the error says what is wrong.
    pub fn compile(source: &str) -> Result<Condition, String> {
        if source.len() > MAX_CONDITION_LEN {
            return Err(format!(
                "{} bytes, more than the {MAX_CONDITION_LEN} a condition may have",
                source.len()
            ));
        }
        let env = env()?;
        let mut expr = env
            .parser()
            .max_recursion_depth(MAX_DEPTH)
            .parse(source)
            .map_err(|err| format!("does not parse: {}", err.to_string().trim()))?;
        check::check(&expr)?;
        meter::instrument(&mut expr);
        Ok(Condition {
            source: source.to_string(),
            expr,
        })
    }

    /// The condition as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition on `inputs` at `now`, spending at most `budget`.
    pub fn evaluate(&self, inputs: &Inputs, now: &Now, budget: u64) -> Outcome {
        let env = match env() {
            Ok(env) => env,
            Err(err) => return Outcome::Error(err),
        };
        let resolver = Resolver {
            inputs,
            now: &now.0,
        };
        let mut ctx = Context::with_env(env);
        ctx.set_variable_resolver(&resolver);
        let (result, spent) = meter::with_budget(budget, || {
            Value::resolve_val(&self.expr, &ctx)
                .map(|v| v.downcast_ref::<CelBool>().map(|b| *b.inner()))
        });
        if spent {
            return Outcome::OverBudget { budget };
        }
        match result {
            Ok(Some(true)) => Outcome::Holds,
            Ok(Some(false)) => {
                let (saw, _) = meter::with_budget(budget, || explain(&self.expr, &ctx));
                Outcome::Fails { saw }
            }
            Ok(None) => Outcome::Error("the condition did not evaluate to a bool".to_string()),
            Err(err) => Outcome::Error(err.to_string()),
        }
    }
}

/// The time a review is evaluated at.
#[derive(Debug)]
pub struct Now(CelValue);

impl Now {
    /// `now` as Unix seconds.
    pub fn from_unix(seconds: i64) -> Now {
        let time = chrono::DateTime::from_timestamp(seconds, 0)
            .unwrap_or_default()
            .fixed_offset();
        Now(Box::new(CelTimestamp::from(time)))
    }

    /// The current time.
    pub fn current() -> Now {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Now::from_unix(seconds)
    }
}

/// What one evaluation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The condition holds.
    Holds,
    /// It is false; `saw` renders the value that made it so.
    Fails {
        /// The value seen (truncated).
        saw: String,
    },
    /// It could not be evaluated (a missing field, a type mismatch at run
    /// time): unmet, like a false condition.
    Error(String),
    /// It spent its cost budget: unmet.
    OverBudget {
        /// The budget.
        budget: u64,
    },
}

/// A statement's variables as CEL values: built once when the statement
/// is collected, borrowed by every evaluation.
#[derive(Debug)]
pub struct Inputs {
    predicate: CelValue,
    subject: CelValue,
    predicate_type: CelValue,
    signer: CelValue,
}

impl Inputs {
    /// The inputs of the statement `payload` (JSON) whose subject naming the
    /// image is `subject`, signed by `signer`.
    pub fn new(
        payload: &[u8],
        predicate_type: &str,
        subject: &impl serde::Serialize,
        signer: &impl serde::Serialize,
    ) -> Result<Inputs, String> {
        Ok(Inputs {
            predicate: json::predicate(payload)?,
            subject: json::from_serde(subject)?,
            predicate_type: Box::new(CelString::from(predicate_type.to_string())),
            signer: json::from_serde(signer)?,
        })
    }
}

struct Resolver<'a> {
    inputs: &'a Inputs,
    now: &'a CelValue,
}

impl VariableResolver for Resolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value: &'b CelValue = match variable {
            "predicate" => &self.inputs.predicate,
            "subject" => &self.inputs.subject,
            "predicateType" => &self.inputs.predicate_type,
            "signer" => &self.inputs.signer,
            "now" => self.now,
            _ => return None,
        };
        Some(CowVal::Borrowed(value.as_ref()))
    }
}

/// Why a (false) condition is false, as the value it saw: the first false
/// operand of `&&`, the non-literal side of a comparison, the receiver of
/// a string test, the element that decided `exists`/`all`.
fn explain(expr: &IdedExpr, ctx: &Context<'_, '_>) -> String {
    let expr = meter::unwrapped(expr);
    let eval = |e: &IdedExpr| Value::resolve_val(e, ctx).map(|v| render(v.as_ref()));
    match &expr.expr {
        Expr::Call(call) if call.func_name == operators::LOGICAL_AND => {
            for arg in &call.args {
                let holds = Value::resolve_val(arg, ctx)
                    .ok()
                    .and_then(|v| v.downcast_ref::<CelBool>().map(|b| *b.inner()));
                if holds != Some(true) {
                    return explain(arg, ctx);
                }
            }
            "false".to_string()
        }
        Expr::Call(call) if call.func_name == operators::LOGICAL_NOT => {
            match call.args.first().map(meter::unwrapped) {
                Some(inner) if matches!(inner.expr, Expr::Comprehension(_)) => {
                    witness(inner, ctx, true).unwrap_or_else(|| "true".to_string())
                }
                Some(inner) => eval(inner).unwrap_or_else(|e| e.to_string()),
                None => "false".to_string(),
            }
        }
        Expr::Call(call)
            if [
                operators::EQUALS,
                operators::NOT_EQUALS,
                operators::LESS,
                operators::LESS_EQUALS,
                operators::GREATER,
                operators::GREATER_EQUALS,
                operators::IN,
            ]
            .contains(&call.func_name.as_str()) =>
        {
            let sides: Vec<String> = call
                .args
                .iter()
                .map(meter::unwrapped)
                .filter(|a| !constant(a))
                .map(|a| eval(a).unwrap_or_else(|e| e.to_string()))
                .collect();
            sides.join(" vs ")
        }
        Expr::Call(call) if call.target.is_some() => call
            .target
            .as_deref()
            .map(|t| eval(meter::unwrapped(t)).unwrap_or_else(|e| e.to_string()))
            .unwrap_or_default(),
        Expr::Comprehension(_) => witness(expr, ctx, false).unwrap_or_else(|| "false".to_string()),
        _ => eval(expr).unwrap_or_else(|e| e.to_string()),
    }
}

/// For `exists`/`all`: the element that decided it (`satisfied`: one for
/// which the predicate holds, else one for which it does not).
fn witness(expr: &IdedExpr, ctx: &Context<'_, '_>, satisfied: bool) -> Option<String> {
    let Expr::Comprehension(c) = &expr.expr else {
        return None;
    };
    let Expr::Call(step) = &c.loop_step.expr else {
        return None;
    };
    let predicate = step.args.get(1).map(meter::unwrapped)?;
    let range = Value::resolve_val(&c.iter_range, ctx).ok()?;
    let mut items = range.as_iterable()?.iter();
    while let Some(item) = items.next() {
        let mut scope = ctx.new_inner_scope();
        scope.add_variable_as_val(&c.iter_var, item.clone_as_boxed());
        let holds = Value::resolve_val(predicate, &scope)
            .ok()
            .and_then(|v| v.downcast_ref::<CelBool>().map(|b| *b.inner()));
        if holds == Some(satisfied) {
            // Nested (`exists(r, r.v.exists(x, ...))`): the inner element
            // that decided says more than the outer one.
            let inner =
                inner_comprehension(predicate).and_then(|inner| witness(inner, &scope, satisfied));
            return Some(inner.unwrap_or_else(|| render(item)));
        }
    }
    None
}

/// Whether `expr` is the same whatever the inputs (`'x'`, `duration('1h')`):
/// not worth showing as a value seen.
fn constant(expr: &IdedExpr) -> bool {
    match &meter::unwrapped(expr).expr {
        Expr::Literal(_) => true,
        Expr::Call(call) => {
            call.target.as_deref().is_none_or(constant) && call.args.iter().all(constant)
        }
        Expr::List(list) => list.elements.iter().all(constant),
        _ => false,
    }
}

/// The comprehension a loop predicate is, or ends its `&&` chain with.
fn inner_comprehension(predicate: &IdedExpr) -> Option<&IdedExpr> {
    match &predicate.expr {
        Expr::Comprehension(_) => Some(predicate),
        Expr::Call(call) if call.func_name == operators::LOGICAL_AND => call
            .args
            .last()
            .map(meter::unwrapped)
            .and_then(inner_comprehension),
        _ => None,
    }
}

/// A value as short JSON-like text.
fn render(value: &dyn Val) -> String {
    let mut out = String::new();
    render_into(value, &mut out);
    if out.len() > SAW_LEN {
        let mut cut = SAW_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

fn render_into(value: &dyn Val, out: &mut String) {
    if out.len() > SAW_LEN {
        return;
    }
    if let Some(s) = value.downcast_ref::<CelString>() {
        out.push_str(&format!("{:?}", s.inner()));
    } else if let Some(list) = value.downcast_ref::<CelList>() {
        out.push('[');
        for (i, item) in list.inner().iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            render_into(item.as_ref(), out);
            if out.len() > SAW_LEN {
                break;
            }
        }
        out.push(']');
    } else if let Some(map) = value.downcast_ref::<CelMap>() {
        out.push('{');
        let mut entries: Vec<_> = map.inner().iter().collect();
        entries.sort_by_key(|(k, _)| format!("{k:?}"));
        for (i, (key, item)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            render_into(key.inner(), out);
            out.push_str(": ");
            render_into(item.as_ref(), out);
            if out.len() > SAW_LEN {
                break;
            }
        }
        out.push('}');
    } else {
        let text = match Value::try_from(value) {
            Ok(Value::Int(i)) => i.to_string(),
            Ok(Value::UInt(u)) => format!("{u}u"),
            Ok(Value::Float(f)) => f.to_string(),
            Ok(Value::Bool(b)) => b.to_string(),
            Ok(Value::Null) => "null".to_string(),
            Ok(Value::Timestamp(t)) => t.to_rfc3339(),
            Ok(Value::Duration(d)) => format!("{}s", d.num_seconds()),
            _ => value.get_type().name().to_string(),
        };
        out.push_str(&text);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
