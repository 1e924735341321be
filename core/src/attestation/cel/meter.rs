//! A cost bound for every evaluation, which cel-rust does not have (no cost
//! estimator, no runtime limit, no way to interrupt an evaluation).
//!
//! When a condition compiles, its expression is rewritten so that every
//! value a function, an operator or a comprehension consumes first passes
//! through `@cost(v)`, an identity function (it hands the very value back,
//! borrowed, no copy) that charges `v`'s size to a per-evaluation budget:
//! one unit per list element or map entry, one per 64 bytes of strings
//! and bytes, one for anything else, all counted deep (a list of maps
//! costs its maps' entries too). The walk that measures stops as soon as
//! the budget is spent, so measuring never costs more than the budget.
//! When the budget is spent, `@cost` fails and keeps failing; the
//! evaluation unwinds and the condition is unmet ("over its cost budget"),
//! whatever the expression would have made of the error.
//!
//! Why this bounds the work: the interpreter evaluates each node of the
//! expression once per iteration of the comprehensions around it, and each
//! iteration's element was charged when its list went through `@cost`
//! (comprehension ranges are charged whole, deep, so cloning each element
//! into the loop variable is paid for); every function's work is linear in
//! the sizes of its arguments, which are charged before it runs. So the
//! work of one evaluation is at most a constant times the budget plus the
//! size of the expression. Left alone (not charged) are what costs O(1):
//! literals, the accumulator of a comprehension (`@result`, which cel-rust
//! appends to in place), the container of `x[i]` and the argument of
//! `size`, and the branches of `?:` (which only pick a value); their
//! elements are charged where they are consumed.
//!
//! `@cost` cannot be written in a condition (an identifier cannot start
//! with `@`), and the type checker runs on the expression as written.

use std::cell::Cell;

use cel::common::ast::{operators, CallExpr, EntryExpr, Expr, IdedExpr};
use cel::common::types::{CelBytes, CelList, CelMap, CelString, DYN_TYPE};
use cel::common::value::{CowVal, Val};
use cel::ExecutionError;

/// The name of the charging function.
pub(crate) const COST: &str = "@cost";

/// Bytes of string or bytes per cost unit.
const BYTES_PER_UNIT: u64 = 64;

thread_local! {
    /// Units left for the evaluation running on this thread (evaluation is
    /// synchronous: it never yields, so a thread-local is its own).
    static LEFT: Cell<u64> = const { Cell::new(0) };
    /// Whether the running evaluation ran out.
    static SPENT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with `budget` units; returns its result and whether the
/// budget ran out (in which case the result means nothing).
pub(crate) fn with_budget<T>(budget: u64, f: impl FnOnce() -> T) -> (T, bool) {
    let outer = (LEFT.get(), SPENT.get());
    LEFT.set(budget);
    SPENT.set(false);
    let result = f();
    let spent = SPENT.get();
    LEFT.set(outer.0);
    SPENT.set(outer.1);
    (result, spent)
}

/// Charges `units`; false when the budget is spent.
fn charge(units: u64) -> bool {
    let left = LEFT.get();
    if SPENT.get() || units > left {
        LEFT.set(0);
        SPENT.set(true);
        return false;
    }
    LEFT.set(left - units);
    true
}

/// The deep size of `value` in units, walking at most until `limit`
/// units are counted (the walk itself is what may not exceed the budget).
fn weight(value: &dyn Val, limit: u64) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<&dyn Val> = vec![value];
    while let Some(v) = stack.pop() {
        if total > limit {
            break;
        }
        total += 1;
        if let Some(s) = v.downcast_ref::<CelString>() {
            total += s.inner().len() as u64 / BYTES_PER_UNIT;
        } else if let Some(b) = v.downcast_ref::<CelBytes>() {
            total += b.inner().len() as u64 / BYTES_PER_UNIT;
        } else if let Some(list) = v.downcast_ref::<CelList>() {
            stack.extend(list.inner().iter().map(|b| b.as_ref()));
        } else if let Some(map) = v.downcast_ref::<CelMap>() {
            for (key, value) in map.inner() {
                stack.push(key.inner());
                stack.push(value.as_ref());
            }
        }
    }
    total
}

/// `@cost(v)`: charges `v`'s weight and hands `v` back unchanged.
fn cost<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let Some(value) = args.pop() else {
        return Err(ExecutionError::invalid_argument_count(1, 0));
    };
    let left = LEFT.get();
    if charge(weight(value.as_ref(), left)) {
        Ok(value)
    } else {
        Err(ExecutionError::function_error(
            COST,
            "the condition's cost budget is spent",
        ))
    }
}

/// Declares `@cost` in `env`.
pub(crate) fn declare(env: &mut cel::Env) -> Result<(), cel::DeclarationError> {
    env.add_overload(COST, "imgate_cost_dyn", vec![DYN_TYPE], cost)
}

/// Rewrites `expr` so what it consumes is charged (see the module docs).
pub(crate) fn instrument(expr: &mut IdedExpr) {
    let mut next = max_id(expr) + 1;
    walk(expr, &mut next);
}

fn max_id(expr: &IdedExpr) -> u64 {
    let mut max = expr.id;
    visit(expr, &mut |e| max = max.max(e.id));
    max
}

fn visit(expr: &IdedExpr, f: &mut impl FnMut(&IdedExpr)) {
    f(expr);
    match &expr.expr {
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                visit(t, f);
            }
            call.args.iter().for_each(|a| visit(a, f));
        }
        Expr::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(e, f);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(|e| visit(e, f)),
        Expr::Map(map) => map.entries.iter().for_each(|entry| {
            if let EntryExpr::MapEntry(e) = &entry.expr {
                visit(&e.key, f);
                visit(&e.value, f);
            }
        }),
        Expr::Select(s) => visit(&s.operand, f),
        _ => {}
    }
}

/// Whether a consumed value needs no charge of its own.
fn free(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Literal(_) => true,
        // The comprehension accumulator.
        Expr::Ident(name) => name.starts_with('@'),
        // Literals whose elements are charged one by one instead; for the
        // `@result + [x]` step this also keeps the shape cel-rust
        // recognises to append in place.
        Expr::List(_) | Expr::Map(_) => true,
        _ => false,
    }
}

fn wrap(expr: &mut IdedExpr, next: &mut u64) {
    if free(expr) {
        return;
    }
    let inner = std::mem::take(expr);
    *expr = IdedExpr {
        id: *next,
        expr: Expr::Call(CallExpr {
            func_name: COST.to_string(),
            target: None,
            args: vec![inner],
        }),
    };
    *next += 1;
}

fn walk(expr: &mut IdedExpr, next: &mut u64) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if let Some(t) = &mut call.target {
                walk(t, next);
            }
            call.args.iter_mut().for_each(|a| walk(a, next));
            match call.func_name.as_str() {
                // Picks a branch (charged where consumed); O(1).
                operators::CONDITIONAL | "size" => {}
                // O(1) on the container; the key is charged.
                operators::INDEX => call.args.iter_mut().skip(1).for_each(|a| wrap(a, next)),
                _ => {
                    if let Some(t) = &mut call.target {
                        wrap(t, next);
                    }
                    call.args.iter_mut().for_each(|a| wrap(a, next));
                }
            }
        }
        Expr::Comprehension(c) => {
            walk(&mut c.iter_range, next);
            walk(&mut c.accu_init, next);
            walk(&mut c.loop_cond, next);
            walk(&mut c.loop_step, next);
            walk(&mut c.result, next);
            wrap(&mut c.iter_range, next);
        }
        Expr::List(list) => {
            for e in &mut list.elements {
                walk(e, next);
                wrap(e, next);
            }
        }
        Expr::Map(map) => {
            for entry in &mut map.entries {
                if let EntryExpr::MapEntry(e) = &mut entry.expr {
                    walk(&mut e.key, next);
                    walk(&mut e.value, next);
                    wrap(&mut e.value, next);
                }
            }
        }
        Expr::Select(s) => walk(&mut s.operand, next),
        _ => {}
    }
}

/// `expr` without the `@cost` wrapper around it, for explaining a result.
pub(crate) fn unwrapped(expr: &IdedExpr) -> &IdedExpr {
    match &expr.expr {
        Expr::Call(call) if call.func_name == COST && call.args.len() == 1 => &call.args[0],
        _ => expr,
    }
}
