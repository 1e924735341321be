//! Attestation conditions: never more permissive than Kyverno. Every
//! operator, over values and keys of every JSON type, translated and
//! evaluated as imgate evaluates it, against a model of Kyverno's own
//! evaluation written here from Kyverno's source (the substitution of
//! `EvaluateConditions`, the handlers of `pkg/engine/variables/operator`,
//! Go's `time.ParseDuration` and Kubernetes' `resource.ParseQuantity`),
//! not with the importer's translation. Where Kyverno versions differ
//! (`AllNotIn` over a list), the model takes the least permissive reading.

use serde_json::{json, Value};

use super::super::conditions::translate;
use super::*;

/// Kyverno's verdict on `conditions` for one statement's `predicate`.
fn kyverno(conditions: &Value, predicate: &Value) -> bool {
    if !predicate.is_object() {
        return false;
    }
    let Some(blocks) = conditions.as_array() else {
        return false;
    };
    // Every variable is substituted first; one that does not resolve fails.
    let mut substituted = Vec::new();
    for block in blocks {
        let mut lists = Vec::new();
        for (name, list) in block.as_object().unwrap() {
            let mut leaves = Vec::new();
            for c in list.as_array().unwrap() {
                let Some(key) = resolve(predicate, c["key"].as_str().unwrap()) else {
                    return false;
                };
                if let Some(message) = c.get("message").and_then(Value::as_str) {
                    for inner in message.split("{{").skip(1) {
                        let path = inner.split("}}").next().unwrap();
                        if resolve(predicate, &format!("{{{{{path}}}}}")).is_none() {
                            return false;
                        }
                    }
                }
                leaves.push((
                    key,
                    c["operator"].as_str().unwrap().to_ascii_lowercase(),
                    &c["value"],
                ));
            }
            lists.push((name.as_str(), leaves));
        }
        substituted.push(lists);
    }
    substituted.iter().all(|lists| {
        lists.iter().all(|(name, leaves)| {
            let mut results = leaves.iter().map(|(k, op, v)| operator(op, k, v));
            if *name == "any" {
                results.any(|r| r)
            } else {
                results.all(|r| r)
            }
        })
    })
}

/// `{{ a.b }}` (plain or quoted fields) in the predicate: JMESPath's
/// field access, a missing field being Kyverno's "not found" error.
fn resolve(predicate: &Value, key: &str) -> Option<Value> {
    let inner = key.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let mut at = predicate;
    let mut rest = inner;
    while !rest.is_empty() {
        let (field, tail) = match rest.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => rest.split_at(rest.find('.').unwrap_or(rest.len())),
        };
        at = at.as_object()?.get(field.trim())?;
        rest = tail.trim().strip_prefix('.').unwrap_or(tail.trim());
    }
    Some(at.clone())
}

fn operator(op: &str, key: &Value, value: &Value) -> bool {
    match op {
        "equals" | "equal" => equal(key, value),
        "notequals" | "notequal" => not_equal(key, value),
        "greaterthan" => numeric(key, value, |a, b| a > b),
        "greaterthanorequals" => numeric(key, value, |a, b| a >= b),
        "lessthan" => numeric(key, value, |a, b| a < b),
        "lessthanorequals" => numeric(key, value, |a, b| a <= b),
        "anyin" | "allin" | "anynotin" | "allnotin" => in_list(op, key, value),
        other => panic!("the model has no {other}"),
    }
}

/// `EqualHandler`.
fn equal(key: &Value, value: &Value) -> bool {
    match key {
        Value::Bool(k) => value.as_bool() == Some(*k),
        Value::Number(k) => {
            let k = k.as_f64().unwrap();
            match value {
                Value::Number(v) if v.is_i64() => {
                    k.fract() == 0.0 && k as i64 == v.as_i64().unwrap()
                }
                Value::Number(v) => Some(k) == v.as_f64(),
                Value::String(v) => go_float(v) == Some(k),
                _ => false,
            }
        }
        Value::String(k) => {
            if let Some((a, b)) = durations(key, value) {
                return a == b;
            }
            if let (Some(q), Value::String(v)) = (quantity(k), value) {
                return quantity(v) == Some(q);
            }
            matches!(value, Value::String(v) if wildcard_match(v, k))
        }
        Value::Array(_) | Value::Object(_) => key == value,
        Value::Null => false,
    }
}

/// `NotEqualHandler`: not quite the negation.
fn not_equal(key: &Value, value: &Value) -> bool {
    match key {
        Value::Bool(k) => value.as_bool() != Some(*k),
        Value::Number(k) => {
            let k = k.as_f64().unwrap();
            match value {
                Value::Number(v) if v.is_i64() => {
                    k.fract() != 0.0 || k as i64 != v.as_i64().unwrap()
                }
                Value::Number(v) => Some(k) != v.as_f64(),
                Value::String(v) => go_float(v) != Some(k),
                _ => true,
            }
        }
        Value::String(k) => {
            if let Some((a, b)) = durations(key, value) {
                return a != b;
            }
            if let (Some(q), Value::String(v)) = (quantity(k), value) {
                return quantity(v).is_some_and(|w| w != q);
            }
            !matches!(value, Value::String(v) if wildcard_match(v, k))
        }
        Value::Array(_) | Value::Object(_) => key != value,
        Value::Null => false,
    }
}

/// `NumericOperatorHandler` with a number value.
fn numeric(key: &Value, value: &Value, cmp: fn(f64, f64) -> bool) -> bool {
    let v = value.as_f64().unwrap();
    match key {
        Value::Number(k) => cmp(k.as_f64().unwrap(), v),
        Value::String(k) => match durations(key, value) {
            Some((a, b)) => cmp(a, b),
            None => go_float(k).is_some_and(|f| cmp(f, v)),
        },
        _ => false,
    }
}

/// `AnyIn`, `AllIn`, `AnyNotIn`, `AllNotIn` with a list of strings: a key
/// is found when it matches a value or a value matches it (both ways).
fn in_list(op: &str, key: &Value, value: &Value) -> bool {
    let items: Vec<&str> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let found = |k: &str| {
        items
            .iter()
            .any(|v| wildcard_match(v, k) || wildcard_match(k, v))
    };
    let negated = op.contains("not");
    match key {
        Value::Array(keys) => {
            let keys: Vec<String> = keys.iter().map(sprint).collect();
            match op {
                "anyin" => keys.iter().any(|k| found(k)),
                "allin" => keys.iter().all(|k| found(k)),
                "anynotin" => keys.iter().any(|k| !found(k)),
                _ => !keys.is_empty() && keys.iter().all(|k| !found(k)),
            }
        }
        Value::String(_) | Value::Number(_) => found(&sprint(key)) != negated,
        Value::Bool(_) if !negated => found(&sprint(key)),
        _ => false,
    }
}

/// Go's `fmt.Sprint` of a JSON value (enough of it for these keys).
fn sprint(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            let f = n.as_f64().unwrap();
            if f.fract() == 0.0 && f.abs() < 1e21 {
                format!("{f:.0}")
            } else {
                f.to_string()
            }
        }
        Value::Bool(b) => b.to_string(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

/// Go's `strconv.ParseFloat` on the strings used here.
fn go_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

/// Kyverno's `parseDuration`: both durations (a number being seconds),
/// at least one written as a Go duration other than `0`.
fn durations(key: &Value, value: &Value) -> Option<(f64, f64)> {
    let written = |v: &Value| v.as_str().filter(|s| *s != "0").and_then(go_duration);
    let (k, v) = (written(key), written(value));
    if k.is_none() && v.is_none() {
        return None;
    }
    let seconds = |v: &Value| v.as_f64().map(f64::trunc);
    Some((k.or_else(|| seconds(key))?, v.or_else(|| seconds(value))?))
}

/// Go's `time.ParseDuration`, in seconds.
fn go_duration(s: &str) -> Option<f64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..end];
        if number.is_empty() || number == "." {
            return None;
        }
        let n: f64 = number
            .parse()
            .ok()
            .or_else(|| format!("{number}0").parse().ok())?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(sign * total)
}

/// Kubernetes' `resource.ParseQuantity`, as a number.
fn quantity(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits);
    if number.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = match number {
        "" | "." => 0.0,
        n => n.parse().ok().or_else(|| format!("{n}0").parse().ok())?,
    };
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let sign = if s.starts_with('-') { -1.0 } else { 1.0 };
    Some(sign * n * scale)
}

#[test]
fn the_model_reads_values_as_kyverno_does() {
    assert_eq!(go_duration("1h30m"), Some(5400.0));
    assert_eq!(go_duration("100m"), Some(6000.0));
    assert_eq!(go_duration("5"), None);
    assert_eq!(quantity("100m"), Some(0.1));
    assert_eq!(quantity("1Gi"), Some(1073741824.0));
    assert_eq!(quantity("main"), None);
    assert_eq!(quantity("+"), Some(0.0));
    assert!(equal(&json!("60s"), &json!(60)));
    assert!(equal(&json!("5000m"), &json!("5")));
    assert!(!not_equal(&json!("5"), &json!("main")));
    assert!(not_equal(&json!("x"), &json!(true)));
    assert!(in_list(
        "anyin",
        &json!("refs/*"),
        &json!(["refs/heads/main"])
    ));
    assert!(in_list("anyin", &json!(5), &json!(["5"])));
}

const OPERATORS: &[&str] = &[
    "Equals",
    "Equal",
    "NotEquals",
    "notequal",
    "GreaterThan",
    "GreaterThanOrEquals",
    "LessThan",
    "LessThanOrEquals",
    "AnyIn",
    "AllIn",
    "AnyNotIn",
    "AllNotIn",
];

fn values() -> Vec<Value> {
    vec![
        json!("main"),
        json!("refs/heads/*"),
        json!("v?"),
        json!(""),
        json!("*"),
        json!("1*"),
        json!("ma*n"),
        json!("x.y"),
        json!("nine"),
        json!("1h"),
        json!("5"),
        json!(true),
        json!(false),
        json!(5),
        json!(5.5),
        json!(0),
        json!(-1),
        json!(60),
        json!(["main"]),
        json!(["refs/*", "v1"]),
        json!([]),
        json!(["*"]),
        json!(["5", "true"]),
        json!({"a": 1}),
    ]
}

fn keys() -> Vec<Value> {
    vec![
        json!("main"),
        json!("refs/heads/main"),
        json!("refs/heads/dev"),
        json!("v1"),
        json!("v"),
        json!(""),
        json!("*"),
        json!("ma*n"),
        json!("maxn"),
        json!("5"),
        json!("10"),
        json!("1Gi"),
        json!("100m"),
        json!("60s"),
        json!("1h"),
        json!("x.y"),
        json!("xzy"),
        json!("nine"),
        json!("main\n"),
        json!(5),
        json!(5.5),
        json!(60),
        json!(0),
        json!(-1),
        json!(true),
        json!(false),
        json!(null),
        json!(["main", "v1"]),
        json!(["refs/heads/x"]),
        json!([]),
        json!([5]),
        json!(["*"]),
        json!({"c": 1}),
    ]
}

/// Every operator, value and key: what imgate admits Kyverno admitted, and
/// where the translation reports nothing stricter, they agree.
#[test]
fn never_more_permissive_for_every_operator_value_and_key() {
    let (mut translated, mut refused, mut agreed, mut stricter) = (0, 0, 0, 0);
    for op in OPERATORS {
        for value in values() {
            let conditions =
                json!([{"all": [{"key": "{{ a.b }}", "operator": op, "value": value}]}]);
            let t = translate(&conditions, "conditions", &[]);
            if !t.refused.is_empty() {
                refused += 1;
                continue;
            }
            translated += 1;
            let cel = &t.conditions[0].0;
            let mut predicates: Vec<Value> =
                keys().into_iter().map(|k| json!({"a": {"b": k}})).collect();
            predicates.extend([
                json!({}),
                json!({"a": "b"}),
                json!({"a": {"c": 1}}),
                json!([1]),
            ]);
            for predicate in predicates {
                let (ours, theirs) = (holds(cel, &predicate), kyverno(&conditions, &predicate));
                assert!(
                    !ours || theirs,
                    "{op} {value}: imgate admits {predicate}, Kyverno denied it\n{cel}"
                );
                if t.stricter.is_empty() {
                    assert_eq!(
                        ours, theirs,
                        "{op} {value} on {predicate}: exact, yet\n{cel}"
                    );
                    agreed += 1;
                } else {
                    stricter += usize::from(ours != theirs);
                }
            }
        }
    }
    // The table covers what it means to: most constructs translate, those
    // that cannot are refused, and the stricter ones are reported so.
    assert!(
        translated >= 100 && refused >= 100,
        "{translated} translated, {refused} refused"
    );
    assert!(
        agreed > 1500 && stricter > 100,
        "{agreed} exact, {stricter} stricter"
    );
}

/// `any` and `all` together, with fields present or missing: the same.
#[test]
fn never_more_permissive_for_blocks() {
    let leaf = |key: &str, op: &str, value: Value| json!({"key": format!("{{{{ {key} }}}}"), "operator": op, "value": value});
    let leaves = [
        leaf("a", "Equals", json!("x")),
        leaf("b.c", "NotEquals", json!("y")),
        leaf("\"d-e\".f", "AnyIn", json!(["z*"])),
        leaf("n", "GreaterThan", json!(1)),
    ];
    let predicates = [
        json!({"a": "x", "b": {"c": "y"}, "d-e": {"f": "zz"}, "n": 2}),
        json!({"a": "x", "b": {"c": "q"}, "n": 2}),
        json!({"a": "w", "b": {"c": "q"}, "d-e": {"f": "q"}, "n": 0}),
        json!({"b": {"c": "q"}, "d-e": {"f": "zz"}, "n": 5}),
        json!({"a": null, "b": {"c": "q"}, "d-e": {"f": "zz"}, "n": 5}),
    ];
    let mut checked = 0;
    for i in 0..leaves.len() {
        for j in 0..leaves.len() {
            for conditions in [
                json!([{"any": [leaves[i], leaves[j]]}]),
                json!([{"all": [leaves[i]], "any": [leaves[j]]}]),
                json!([{"all": [leaves[i]]}, {"any": [leaves[j], leaves[i]]}]),
            ] {
                let t = translate(&conditions, "conditions", &[]);
                assert!(t.refused.is_empty(), "{conditions}: {:?}", t.refused);
                for predicate in &predicates {
                    let ours = t.conditions.iter().all(|(cel, _)| holds(cel, predicate));
                    let theirs = kyverno(&conditions, predicate);
                    assert!(!ours || theirs, "{conditions}: imgate admits {predicate}");
                    checked += usize::from(ours);
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} admitted: nothing to compare");
}
