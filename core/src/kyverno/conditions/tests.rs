//! Each construct of Kyverno's attestation conditions, translated (and the
//! CEL it becomes evaluated on statements) or refused by field path. The
//! comparison with a model of Kyverno's own evaluation, over every
//! operator, value and key type, is in `kyverno::tests::attestation`.

use serde_json::json;

use super::super::tests::holds;
use super::*;

const PATH: &str = "spec.rules[0].verifyImages[0].attestations[0].conditions";

fn translated(yaml: &str) -> Translated {
    translate(
        &serde_yaml::from_str(yaml).unwrap(),
        PATH,
        &["registries".into()],
    )
}

/// The one condition `yaml` translates to (panics on a refusal).
fn only(yaml: &str) -> String {
    let t = translated(yaml);
    assert!(t.refused.is_empty(), "{yaml}: {:?}", t.refused);
    assert_eq!(t.conditions.len(), 1, "{yaml}");
    t.conditions[0].0.clone()
}

/// One `all` condition on `{{ a.b }}`.
fn leaf(operator: &str, value: &str) -> String {
    only(&format!(
        "[{{all: [{{key: '{{{{ a.b }}}}', operator: {operator}, value: {value}}}]}}]"
    ))
}

fn on(value: serde_json::Value) -> serde_json::Value {
    json!({"a": {"b": value}})
}

#[test]
fn equals_strings_with_wildcards() {
    let literal = leaf("Equals", "'git+https://github.com/acme/app'");
    assert!(holds(
        &literal,
        &on(json!("git+https://github.com/acme/app"))
    ));
    assert!(!holds(
        &literal,
        &on(json!("git+https://github.com/acme/app2"))
    ));
    assert!(!holds(
        &literal,
        &on(json!(["git+https://github.com/acme/app"]))
    ));
    let wildcard = leaf("Equals", "'https://github.com/acme/*'");
    assert!(holds(
        &wildcard,
        &on(json!("https://github.com/acme/app/x"))
    ));
    assert!(holds(&wildcard, &on(json!("https://github.com/acme/"))));
    assert!(!holds(&wildcard, &on(json!("https://github.com/evil/app"))));
    // `.` is itself, `?` one character, a newline is a character.
    let one = leaf("equals", "'v?.0'");
    assert!(holds(&one, &on(json!("v1.0"))));
    assert!(!holds(&one, &on(json!("v1x0"))));
    assert!(!holds(&one, &on(json!("v.0"))));
    assert!(holds(&leaf("Equals", "'a*'"), &on(json!("a\nb"))));
    // A quantity key is never equal to a wildcard in Kyverno.
    let star = leaf("Equals", "'*'");
    assert!(holds(&star, &on(json!("main"))));
    assert!(!holds(&star, &on(json!("10"))));
    assert!(!holds(&star, &on(json!("1Gi"))));
    // The deprecated spelling, any case.
    assert_eq!(leaf("Equal", "x"), leaf("EQUALS", "x"));
}

#[test]
fn not_equals_passes_other_types_and_fails_quantities() {
    let c = leaf("NotEquals", "main");
    assert!(holds(&c, &on(json!("dev"))));
    assert!(!holds(&c, &on(json!("main"))));
    assert!(holds(&c, &on(json!(5))));
    assert!(holds(&c, &on(json!({"x": 1}))));
    // Kyverno read `5` as a quantity, and then compared it only with
    // quantities: NotEquals failed.
    assert!(!holds(&c, &on(json!("5"))));
    // A null key is no string; Kyverno fails every operator on it.
    assert!(!holds(&c, &on(json!(null))));
}

#[test]
fn bools_and_numbers() {
    let t = leaf("Equals", "true");
    assert!(holds(&t, &on(json!(true))));
    assert!(!holds(&t, &on(json!("true"))));
    let n = leaf("NotEquals", "false");
    assert!(holds(&n, &on(json!("false"))));
    assert!(!holds(&n, &on(json!(false))));
    let zero = leaf("Equals", "0");
    assert!(holds(&zero, &on(json!(0))));
    assert!(holds(&zero, &on(json!(0.0))));
    assert!(!holds(&zero, &on(json!("0"))));
    let ne = leaf("NotEquals", "60");
    assert!(holds(&ne, &on(json!(59))));
    assert!(holds(&ne, &on(json!("sixty"))));
    // `60s` may be 60 seconds to Kyverno: not passed.
    assert!(!holds(&ne, &on(json!("60s"))));
    for (op, key, expected) in [
        ("GreaterThan", json!(3), true),
        ("GreaterThan", json!(2), false),
        ("GreaterThanOrEquals", json!(2), true),
        ("LessThan", json!(2.5), false),
        ("LessThanOrEquals", json!(2), true),
        ("LessThan", json!("1"), false),
    ] {
        assert_eq!(
            holds(&leaf(op, "2"), &on(key.clone())),
            expected,
            "{op} {key}"
        );
    }
}

#[test]
fn in_operators_over_strings_and_lists() {
    let values = "['refs/heads/main', 'refs/tags/v*']";
    let any_in = leaf("AnyIn", values);
    assert!(holds(&any_in, &on(json!("refs/tags/v1.2"))));
    assert!(holds(
        &any_in,
        &on(json!(["refs/heads/dev", "refs/heads/main"]))
    ));
    assert!(!holds(&any_in, &on(json!(["refs/heads/dev"]))));
    assert!(!holds(&any_in, &on(json!([]))));
    // A key holding a wildcard, which Kyverno also read as a pattern.
    assert!(!holds(&any_in, &on(json!("refs/*"))));
    let all_in = leaf("AllIn", values);
    assert!(holds(
        &all_in,
        &on(json!(["refs/heads/main", "refs/tags/v2"]))
    ));
    assert!(!holds(
        &all_in,
        &on(json!(["refs/heads/main", "refs/heads/dev"]))
    ));
    assert!(!holds(&all_in, &on(json!([]))));
    let any_not = leaf("AnyNotIn", values);
    assert!(holds(
        &any_not,
        &on(json!(["refs/heads/main", "refs/heads/dev"]))
    ));
    assert!(!holds(&any_not, &on(json!("refs/heads/main"))));
    let all_not = leaf("AllNotIn", values);
    assert!(holds(&all_not, &on(json!(["refs/heads/dev", "x"]))));
    assert!(!holds(
        &all_not,
        &on(json!(["refs/heads/dev", "refs/heads/main"]))
    ));
    assert!(!holds(&leaf("AnyIn", "[]"), &on(json!("x"))));
    assert!(holds(&leaf("AnyNotIn", "[]"), &on(json!("x"))));
    assert!(!translated(&format!(
        "[{{all: [{{key: '{{{{ a.b }}}}', operator: AnyIn, value: {values}}}]}}]"
    ))
    .stricter
    .is_empty());
}

#[test]
fn a_missing_path_fails_even_inside_any() {
    let c = only("[{any: [{key: '{{ a.b }}', operator: Equals, value: x}, {key: '{{ c }}', operator: NotEquals, value: y}]}]");
    assert!(holds(&c, &json!({"a": {"b": "x"}, "c": "z"})));
    assert!(holds(&c, &json!({"a": {"b": "q"}, "c": "z"})));
    // Kyverno substitutes every variable first: `c` missing is an error.
    assert!(!holds(&c, &json!({"a": {"b": "x"}})));
    // Through something that is not a map, or no map at all.
    assert!(!holds(&c, &json!({"a": "b", "c": "z"})));
    assert!(!holds(&c, &json!({"a": ["b"], "c": "z"})));
    assert!(!holds(&c, &json!("a")));
    assert!(!holds(&c, &json!(null)));
}

#[test]
fn blocks_entries_and_messages() {
    let t = translated("- all:\n  - {key: '{{ a }}', operator: Equals, value: x, message: 'a is {{ a }}, b is {{ b.c }}'}\n  - {key: '{{ \"the-key\".in }}', operator: Equals, value: y}\n- any:\n  - {key: '{{ d }}', operator: Equals, value: z}\n- {}\n");
    assert!(t.refused.is_empty(), "{:?}", t.refused);
    assert_eq!(t.conditions.len(), 3);
    assert_eq!(
        t.conditions[0].1.as_deref(),
        Some("a is {{ a }}, b is {{ b.c }}")
    );
    // The message's paths must resolve too (Kyverno substitutes them).
    assert!(holds(&t.conditions[0].0, &json!({"a": "x", "b": {"c": 1}})));
    assert!(!holds(&t.conditions[0].0, &json!({"a": "x"})));
    assert!(
        t.conditions[1].0.contains("predicate[\"the-key\"][\"in\"]"),
        "{}",
        t.conditions[1].0
    );
    assert!(holds(&t.conditions[1].0, &json!({"the-key": {"in": "y"}})));
    assert!(holds(&t.conditions[2].0, &json!({"d": "z"})));
}

#[test]
fn what_cannot_be_said_exactly_is_refused_by_path() {
    for (condition, field, why) in [
        (
            "{key: 'a.b', operator: Equals, value: x}",
            "key",
            "not a `{{ path }}`",
        ),
        (
            "{key: 'x-{{ a }}', operator: Equals, value: x}",
            "key",
            "not a `{{ path }}`",
        ),
        (
            "{key: '{{ length(a) }}', operator: Equals, value: 1}",
            "key",
            "plain path",
        ),
        (
            "{key: '{{ a[?b == `1`] }}', operator: Equals, value: x}",
            "key",
            "plain path",
        ),
        (
            "{key: '{{ a[0] }}', operator: Equals, value: x}",
            "key",
            "plain path",
        ),
        (
            "{key: '{{ a.b | c }}', operator: Equals, value: x}",
            "key",
            "plain path",
        ),
        (
            "{key: '{{ a || b }}', operator: Equals, value: x}",
            "key",
            "plain path",
        ),
        (
            "{key: '{{ request.object.metadata.name }}', operator: Equals, value: x}",
            "key",
            "Kyverno's context",
        ),
        (
            "{key: '{{ images.containers }}', operator: Equals, value: x}",
            "key",
            "Kyverno's context",
        ),
        (
            "{key: '{{ element.name }}', operator: Equals, value: x}",
            "key",
            "Kyverno's context",
        ),
        (
            "{key: '{{ registries.data }}', operator: Equals, value: x}",
            "key",
            "Kyverno's context",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: '{{ b }}'}",
            "value",
            "templated",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: 1h}",
            "value",
            "duration, number or quantity",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: '5'}",
            "value",
            "duration, number or quantity",
        ),
        (
            "{key: '{{ a }}', operator: NotEquals, value: 1Gi}",
            "value",
            "duration, number or quantity",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: '0x10'}",
            "value",
            "duration, number or quantity",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: Inf}",
            "value",
            "duration, number or quantity",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: [x]}",
            "value",
            "not a string, number or bool",
        ),
        (
            "{key: '{{ a }}', operator: Equals}",
            "value",
            "not a string, number or bool",
        ),
        (
            "{key: '{{ a }}', operator: GreaterThan, value: abc}",
            "value",
            "not a number",
        ),
        (
            "{key: '{{ a }}', operator: AnyIn, value: x}",
            "value",
            "not a list of strings",
        ),
        (
            "{key: '{{ a }}', operator: AllNotIn, value: [1, 2]}",
            "value",
            "not a list of strings",
        ),
        (
            "{key: '{{ a }}', operator: In, value: [x]}",
            "operator",
            "deprecated",
        ),
        (
            "{key: '{{ a }}', operator: NotIn, value: [x]}",
            "operator",
            "deprecated",
        ),
        (
            "{key: '{{ a }}', operator: DurationGreaterThan, value: 1h}",
            "operator",
            "no imgate equivalent",
        ),
        ("{key: '{{ a }}', value: x}", "operator", "missing"),
        (
            "{key: '{{ a }}', operator: Equals, value: x, messages: y}",
            "messages",
            "not understood",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: x, message: 'see {{ b'}",
            "message",
            "unterminated",
        ),
        (
            "{key: '{{ a }}', operator: Equals, value: x, message: 'see {{ to_upper(b) }}'}",
            "message",
            "plain path",
        ),
    ] {
        let t = translated(&format!("[{{all: [{condition}]}}]"));
        assert!(t.conditions.is_empty(), "{condition}: {:?}", t.conditions);
        let expected = format!("{PATH}[0].all[0].{field}");
        assert!(
            t.refused
                .iter()
                .any(|(path, message)| *path == expected && message.contains(why)),
            "{condition}: expected {expected} ({why}) in {:?}",
            t.refused
        );
    }
    for (yaml, path, why) in [
        ("{all: x}", "", "not a list of any/all blocks"),
        ("[{any: []}]", "[0].any", "empty `any`"),
        ("[{none: []}]", "[0].none", "not understood"),
        ("[x]", "[0]", "not an any/all block"),
    ] {
        let t = translated(yaml);
        assert!(
            t.refused
                .iter()
                .any(|(p, m)| *p == format!("{PATH}{path}") && m.contains(why)),
            "{yaml}: {:?}",
            t.refused
        );
    }
}

#[test]
fn strings_are_escaped_for_cel() {
    let c = leaf("Equals", "'say \"hi\" \\ now\t'");
    assert!(holds(&c, &on(json!("say \"hi\" \\ now\t"))));
    let c = leaf("Equals", "'(a+b)*[x]'");
    assert!(holds(&c, &on(json!("(a+b)...[x]"))));
    assert!(!holds(&c, &on(json!("aab...[x]"))));
}
