//! Kyverno's attestation `conditions` (blocks of `any`/`all` lists of
//! `key`/`operator`/`value`, the key a `{{ JMESPath }}` into the predicate)
//! as imgate CEL conditions: exactly where CEL says the same, more strictly
//! where the difference is reported, and refused by field path otherwise.
//!
//! How Kyverno evaluates them (its `EvaluateConditions` in
//! `pkg/engine/internal/imageverifier.go` and the operators of
//! `pkg/engine/variables/operator`): the predicate's fields are merged into
//! the policy's JSON context, every `{{ }}` of every block is substituted
//! first (a path that does not resolve is an error: the image is denied),
//! then in each block `any` (when present, one must hold) and `all` must
//! hold, and every block must.
//!
//! Each `all` entry and each `any` list becomes one imgate condition,
//! `GUARD && TEST`. GUARD says every path it uses resolves (each step a
//! map holding the next key, the value not null), so a missing field fails
//! as in Kyverno and never reaches an `||`, which in CEL could still pass.
//! TEST is the operator's meaning per JSON type of the key:
//!
//! | Operator | Value | imgate |
//! |---|---|---|
//! | `Equals` | a string (`*` and `?` wildcards) | a string key matching it (with a wildcard: and no quantity, which Kyverno compares only with quantities); exact |
//! | `Equals` | a bool | the same bool; exact |
//! | `Equals` | a number | a number key equal to it; Kyverno also took a duration string (`60s`) as seconds: stricter |
//! | `NotEquals` | a string | keys of other types pass, a string key passes when it does not match and is no quantity (Kyverno fails NotEquals on those); exact |
//! | `NotEquals` | a bool, a number | the negation, keys of other types passing; number: duration-like strings fail (stricter) |
//! | `GreaterThan`, `GreaterThanOrEquals`, `LessThan`, `LessThanOrEquals` | a number | a number key compared as a 64-bit float; Kyverno also parsed numbers, durations and quantities out of strings: stricter |
//! | `AnyIn`, `AllIn`, `AnyNotIn`, `AllNotIn` | a list of strings (wildcards) | a string key, or each string of a list key, matched against the list; Kyverno also read a key holding `*` or `?` as a pattern and compared numbers and booleans as text: those fail (stricter) |
//!
//! Keys are JSON values, null fails every operator (as in Kyverno). A
//! string value Kyverno may read as a duration, a number or a resource
//! quantity (it then compares by value when the key parses too),
//! `In`/`NotIn` (deprecated, their meaning changed across Kyverno versions), the `Duration*` operators, a
//! templated value, a key that is not one plain path (functions, filters,
//! projections, pipes) or that names Kyverno's own context (`request`,
//! `images`, ... or the rule's `context` entries) are refused.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;

use crate::attestation::cel::Condition;

/// Most segments of one path.
const MAX_SEGMENTS: usize = 32;

/// Names Kyverno's JSON context holds besides the predicate's fields.
const CONTEXT_ROOTS: &[&str] = &[
    "request",
    "images",
    "image",
    "serviceAccountName",
    "serviceAccountNamespace",
    "target",
];

/// CEL's reserved words: fields by these names are read with `["..."]`.
const RESERVED: &str = "false in null true as break const continue else for function if import let loop package namespace return var void while";

/// The conditions as imgate conditions.
#[derive(Debug, Default)]
pub(super) struct Translated {
    /// CEL conditions with Kyverno's messages.
    pub conditions: Vec<(String, Option<String>)>,
    /// Where imgate is stricter than Kyverno, each said once.
    pub stricter: BTreeSet<String>,
    /// What was refused: field path and reason.
    pub refused: Vec<(String, String)>,
}

impl Translated {
    fn refuse(&mut self, path: &str, why: impl Into<String>) {
        self.refused.push((path.to_string(), why.into()));
    }
}

/// Translates `conditions` (at `path`); `context` names the rule's
/// `context` entries, which Kyverno's paths could also reach.
pub(super) fn translate(conditions: &Value, path: &str, context: &[String]) -> Translated {
    let mut out = Translated::default();
    let Some(blocks) = conditions.as_array() else {
        out.refuse(path, "not a list of any/all blocks");
        return out;
    };
    for (b, block) in blocks.iter().enumerate() {
        let at = format!("{path}[{b}]");
        let Some(map) = block.as_object() else {
            out.refuse(&at, "not an any/all block");
            continue;
        };
        for (name, list) in map {
            let at = format!("{at}.{name}");
            let Some(list) = list.as_array() else {
                out.refuse(&at, "not a list of conditions");
                continue;
            };
            match name.as_str() {
                "any" if list.is_empty() => out.refuse(
                    &at,
                    "an empty `any`: whether Kyverno reads it as met depends on how it was decoded",
                ),
                "any" => {
                    let leaves: Vec<(String, &Value)> = list
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (format!("{at}[{i}]"), c))
                        .collect();
                    condition(&mut out, &leaves, &at, context);
                }
                "all" => {
                    for (i, c) in list.iter().enumerate() {
                        let leaf = format!("{at}[{i}]");
                        condition(&mut out, &[(leaf.clone(), c)], &leaf, context);
                    }
                }
                _ => out.refuse(&at, format!("`{name}` is not understood by the importer")),
            }
        }
    }
    out
}

/// One imgate condition: the disjunction of `leaves` (one leaf: itself).
fn condition(out: &mut Translated, leaves: &[(String, &Value)], at: &str, context: &[String]) {
    let mut guard = Guard::default();
    let mut tests = Vec::new();
    let mut messages = Vec::new();
    let refused = out.refused.len();
    for (path, leaf) in leaves {
        match self::leaf(leaf, path, context, &mut guard) {
            Ok((test, stricter, message)) => {
                tests.push(test);
                out.stricter.extend(stricter);
                messages.extend(message);
            }
            Err((path, why)) => out.refuse(&path, why),
        }
    }
    if out.refused.len() > refused {
        return;
    }
    let test = if tests.len() == 1 {
        tests.remove(0)
    } else {
        tests
            .iter()
            .map(|t| format!("({t})"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    let text = format!("{} && ({test})", guard.atoms.join(" && "));
    match Condition::compile(&text) {
        Ok(_) => out
            .conditions
            .push((text, (!messages.is_empty()).then(|| messages.join("; ")))),
        Err(err) => out.refuse(at, format!("its imgate condition does not load: {err}")),
    }
}

/// Every path a condition reads resolves and is not null: `has()` over
/// each run of plain fields, `"key" in` for a field CEL cannot spell after
/// a dot. A step through something that is not a map is an error in CEL,
/// which leaves the whole condition unmet. Atoms in order, each once.
#[derive(Debug, Default)]
struct Guard {
    atoms: Vec<String>,
}

impl Guard {
    fn add(&mut self, atom: String) {
        if !self.atoms.contains(&atom) {
            self.atoms.push(atom);
        }
    }

    /// Guards `segments` and returns the CEL that reads them.
    fn path(&mut self, segments: &[String]) -> String {
        let mut at = "predicate".to_string();
        for (i, segment) in segments.iter().enumerate() {
            let next = select(&at, segment);
            if !is_field(segment) {
                self.add(format!("{} in {at}", cel_str(segment)));
            } else if segments.get(i + 1).is_none_or(|s| !is_field(s)) {
                // The last of a run of fields: has() checks the run.
                self.add(format!("has({next})"));
            }
            at = next;
        }
        self.add(format!("type({at}) != null_type"));
        at
    }
}

/// One `key`/`operator`/`value` condition: its CEL test, what is stricter
/// about it, and its message; or the refused field and why.
type Leaf = (String, Vec<String>, Option<String>);

fn leaf(
    c: &Value,
    path: &str,
    context: &[String],
    guard: &mut Guard,
) -> Result<Leaf, (String, String)> {
    let refuse = |field: &str, why: &str| Err((format!("{path}.{field}"), why.to_string()));
    let Some(map) = c.as_object() else {
        return Err((path.to_string(), "not a condition".into()));
    };
    if let Some(extra) = map
        .keys()
        .find(|k| !["key", "operator", "value", "message"].contains(&k.as_str()))
    {
        return refuse(extra, "not understood by the importer");
    }
    let Some(key) = map.get("key").and_then(Value::as_str) else {
        return refuse("key", "not a `{{ path }}` into the predicate");
    };
    let segments = match variable(key) {
        Some(inner) => parse_path(inner, context).map_err(|why| (format!("{path}.key"), why))?,
        None => return refuse("key", "not a `{{ path }}` into the predicate"),
    };
    let message = match map.get("message") {
        None => None,
        Some(Value::String(m)) => {
            // Kyverno substitutes messages too: their paths must resolve.
            for inner in variables(m).ok_or((
                format!("{path}.message"),
                "a message with an unterminated `{{`".to_string(),
            ))? {
                let segments =
                    parse_path(inner, context).map_err(|why| (format!("{path}.message"), why))?;
                guard.path(&segments);
            }
            Some(m.clone())
        }
        Some(_) => return refuse("message", "not a string"),
    };
    let k = guard.path(&segments);
    let operator = map
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let value = map.get("value").unwrap_or(&Value::Null);
    if value.to_string().contains("{{") {
        return refuse(
            "value",
            "a templated value ({{ }}): the importer compares with literals only",
        );
    }
    let (test, stricter) =
        test(&operator, value, &k).map_err(|(field, why)| (format!("{path}.{field}"), why))?;
    Ok((test, stricter, message))
}

/// The test for `operator` and `value` on the key read by `k`.
fn test(operator: &str, value: &Value, k: &str) -> Result<(String, Vec<String>), (String, String)> {
    const DURATION_STRICTER: &str = "a string holding a duration (`60s`) Kyverno compared with a number as seconds; imgate compares numbers only";
    const PARSED_STRICTER: &str = "a string holding a number, duration or quantity Kyverno parsed and compared; imgate compares number keys only";
    const IN_STRICTER: &str = "a key holding `*` or `?` Kyverno also read as a pattern, and numbers or booleans it compared as text; imgate fails them";
    let refuse = |field: &str, why: &str| Err((field.to_string(), why.to_string()));
    match operator {
        "equals" | "equal" | "notequals" | "notequal" | "greaterthan" | "greaterthanorequals"
        | "lessthan" | "lessthanorequals" | "anyin" | "allin" | "anynotin" | "allnotin" => {}
        "in" | "notin" => {
            return refuse(
                "operator",
                "In and NotIn are deprecated and their meaning changed across Kyverno versions (use AnyIn, AllIn, AnyNotIn, AllNotIn)",
            )
        }
        "" => return refuse("operator", "missing"),
        other => {
            return refuse(
                "operator",
                &format!("`{other}` has no imgate equivalent the importer writes"),
            )
        }
    }
    let numeric = format!("(type({k}) == int || type({k}) == uint || type({k}) == double)");
    let scalar = match value {
        Value::String(s) => Some(Scalar::Str(
            string_test(k, s).map_err(|why| ("value".to_string(), why))?,
        )),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(Scalar::Num),
        _ => None,
    };
    let compare = |op: &str| -> Result<(String, Vec<String>), (String, String)> {
        match scalar {
            Some(Scalar::Num(n)) => Ok((
                format!("{numeric} && double({k}) {op} {}", number(n)),
                vec![PARSED_STRICTER.into()],
            )),
            _ => refuse(
                "value",
                "not a number: Kyverno compares durations, numbers and quantities parsed from strings",
            ),
        }
    };
    Ok(match operator {
        "equals" | "equal" => match &scalar {
            Some(Scalar::Str(m)) => (format!("type({k}) == string && {m}"), vec![]),
            Some(Scalar::Bool(b)) => (format!("type({k}) == bool && {k} == {b}"), vec![]),
            Some(Scalar::Num(n)) => (
                format!("{numeric} && double({k}) == {}", number(*n)),
                vec![DURATION_STRICTER.into()],
            ),
            None => return refuse("value", "not a string, number or bool"),
        },
        "notequals" | "notequal" => match &scalar {
            // Kyverno fails NotEquals on a string key it reads as a
            // quantity, whatever the value.
            Some(Scalar::Str(m)) => (
                format!("type({k}) != string || (!{} && !({m}))", quantity(k)),
                vec![],
            ),
            Some(Scalar::Bool(b)) => (format!("type({k}) != bool || {k} != {b}"), vec![]),
            Some(Scalar::Num(n)) => (
                format!(
                    "{numeric} ? double({k}) != {} : (type({k}) != string || !{k}.matches({}))",
                    number(*n),
                    cel_str(DURATION_LIKE)
                ),
                vec![DURATION_STRICTER.into()],
            ),
            None => return refuse("value", "not a string, number or bool"),
        },
        "greaterthan" => compare(">")?,
        "greaterthanorequals" => compare(">=")?,
        "lessthan" => compare("<")?,
        "lessthanorequals" => compare("<=")?,
        // The In family: the operators were checked above.
        _ => {
            let Some(items) = value.as_array() else {
                return refuse("value", "not a list of strings");
            };
            let Some(items) = items
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<&str>>>()
            else {
                return refuse("value", "not a list of strings");
            };
            let negated = operator.contains("not");
            // One string: no wildcard of its own, and (not) in the list.
            let one = |var: &str| {
                let listed = if items.is_empty() {
                    "false".to_string()
                } else {
                    items
                        .iter()
                        .map(|item| wildcard_test(var, item))
                        .collect::<Vec<_>>()
                        .join(" || ")
                };
                format!(
                    "type({var}) == string && !{var}.contains(\"*\") && !{var}.contains(\"?\") && {}({listed})",
                    if negated { "!" } else { "" }
                )
            };
            let list = if operator.starts_with("all") {
                format!("size({k}) > 0 && {k}.all(x, {})", one("x"))
            } else {
                format!("{k}.exists(x, {})", one("x"))
            };
            (
                format!(
                    "type({k}) == string ? ({}) : (type({k}) == list && {list})",
                    one(k)
                ),
                vec![IN_STRICTER.into()],
            )
        }
    })
}

/// A scalar value, a string already as its test.
enum Scalar {
    Str(String),
    Bool(bool),
    Num(f64),
}

/// Kyverno's `Equals` with a string value, as a test on the string read
/// by `k`: `==` for a literal; for a wildcard, also not a quantity (Kyverno
/// compares a quantity key only with a quantity value). Refused when
/// Kyverno may compare the value by value (a duration, number or
/// quantity).
fn string_test(k: &str, value: &str) -> Result<String, String> {
    if !value.is_empty() && parses_as_value(value) {
        return Err(format!("`{value}` may be compared as a duration, number or quantity by Kyverno: the importer does not translate it"));
    }
    let matches = wildcard_test(k, value);
    Ok(if value.contains(['*', '?']) {
        format!("!{} && {matches}", quantity(k))
    } else {
        matches
    })
}

/// Kyverno's wildcard match of `pattern` on the string `var` (`*` any run,
/// `?` one character, as the importer reads Kyverno's wildcards).
fn wildcard_test(var: &str, pattern: &str) -> String {
    if !pattern.contains(['*', '?']) {
        return format!("{var} == {}", cel_str(pattern));
    }
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str("(?s:.*)"),
            '?' => re.push_str("(?s:.)"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    format!("{var}.matches({})", cel_str(&re))
}

/// Whether the string read by `k` may be a resource quantity to Kyverno.
fn quantity(k: &str) -> String {
    format!("({k} != \"\" && {k}.matches({}))", cel_str(QUANTITY))
}

/// A pattern every string Kubernetes' `resource.ParseQuantity` takes
/// matches: a signed decimal and one of its suffixes. It also matches the
/// empty string and numbers too large to hold, which are no quantities.
const QUANTITY: &str = "^[+-]?[0-9]*(\\.[0-9]*)?([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$";

/// A pattern every string Go's `time.ParseDuration` takes matches.
const DURATION_LIKE: &str = "^[-+]?([0-9]*(\\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+$";

/// Whether Kyverno could read `s` as a duration, a number (Go's
/// `ParseFloat`, hexadecimal and `inf` included) or a resource quantity: a
/// superset of each, so a string passing here is compared as a string.
fn parses_as_value(s: &str) -> bool {
    static SHAPES: OnceLock<Vec<regex::Regex>> = OnceLock::new();
    let shapes = SHAPES.get_or_init(|| {
        [
            QUANTITY,
            DURATION_LIKE,
            "(?i)^[+-]?(inf|infinity|nan|0x[0-9a-f_.]*(p[+-]?[0-9_]*)?)$",
        ]
        .iter()
        .filter_map(|p| regex::Regex::new(p).ok())
        .collect()
    });
    // A shape that did not compile reads everything as a value: refused.
    shapes.len() < 3 || shapes.iter().any(|re| re.is_match(s))
}

/// A finite number as a CEL double literal.
fn number(n: f64) -> String {
    let text = format!("{n:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// A CEL string literal.
pub(super) fn cel_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether CEL can select `field` after a dot.
fn is_field(field: &str) -> bool {
    field.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.split(' ').any(|w| w == field)
}

/// `base.field` where CEL can spell it so, else `base["field"]`.
fn select(base: &str, field: &str) -> String {
    if is_field(field) {
        format!("{base}.{field}")
    } else {
        format!("{base}[{}]", cel_str(field))
    }
}

/// The inside of a key that is exactly one `{{ ... }}`.
fn variable(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner)
}

/// The insides of every `{{ ... }}` in `text` (`None`: one is not closed).
fn variables(text: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        out.push(&after[..end]);
        rest = &after[end + 2..];
    }
    Some(out)
}

/// A JMESPath of plain fields (`a.b`, `"a-b".c`) into the predicate.
fn parse_path(text: &str, context: &[String]) -> Result<Vec<String>, String> {
    let unsupported = || {
        format!("`{}` is not a plain path of fields into the predicate (functions, filters, indexes, projections and pipes are not translated)", text.trim())
    };
    let chars: Vec<char> = text.trim().chars().collect();
    let mut segments = Vec::new();
    let mut i = 0;
    loop {
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
        match chars.get(i) {
            Some('"') => {
                // A quoted identifier: a JSON string.
                let start = i;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(unsupported()),
                        Some('\\') => i += 2,
                        Some('"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                let quoted: String = chars[start..i].iter().collect();
                segments.push(serde_json::from_str::<String>(&quoted).map_err(|_| unsupported())?);
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                segments.push(chars[start..i].iter().collect());
            }
            _ => return Err(unsupported()),
        }
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
        match chars.get(i) {
            None => break,
            Some('.') => i += 1,
            Some(_) => return Err(unsupported()),
        }
        if segments.len() >= MAX_SEGMENTS {
            return Err(format!("a path of more than {MAX_SEGMENTS} fields"));
        }
    }
    let root = segments[0].as_str();
    if CONTEXT_ROOTS.contains(&root)
        || root.starts_with("element")
        || context.iter().any(|c| c == root)
    {
        return Err(format!("`{root}` is also a name in Kyverno's context (the admission request, images, the rule's context entries): the path may not read the predicate"));
    }
    Ok(segments)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
