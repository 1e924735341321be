//! Bad and hostile input: a clear error naming the culprit, or a bounded,
//! correct result.

use std::time::{Duration, Instant};

use super::*;

fn error(yaml: &str) -> ImportError {
    match try_import(yaml) {
        Ok(import) => panic!("imported:\n{}", import.policy_yaml),
        Err(e) => e,
    }
}

#[test]
fn not_yaml_not_kyverno_no_image_rules() {
    let e = error("spec: [unclosed\n");
    assert!(
        matches!(e, ImportError::Yaml { .. })
            && e.to_string()
                .starts_with("input.yaml document 1: not valid YAML"),
        "{e}"
    );
    let e = error("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: registries}\ndata: {a: b}\n");
    assert_eq!(
        e.to_string(),
        "input.yaml document 1: ConfigMap (v1) is not a Kyverno policy"
    );
    let e = error("- just\n- a list\n");
    assert!(matches!(e, ImportError::NotAnObject { .. }), "{e}");
    let e = error(&cluster_policy(
        "  - name: labels\n    match: {any: [{resources: {kinds: [Pod]}}]}\n    validate: {pattern: {metadata: {labels: {team: '?*'}}}}\n",
    ));
    assert_eq!(
        e.to_string(),
        "no image rules in ClusterPolicy/test: nothing for imgate to import"
    );
    assert!(matches!(error(""), ImportError::NoPolicies));
    // `kubectl get clusterpolicies -o yaml` prints a List.
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n",
        validate_rule("      pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}\n")
            .lines()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert!(admits(&import_yaml(&list), "ghcr.io/a:1"));
}

#[test]
fn huge_and_deep_documents() {
    let huge = format!("# {}\n", "x".repeat(MAX_INPUT_BYTES));
    assert!(matches!(error(&huge), ImportError::TooLarge { .. }));
    // Deeper than the importer follows, and deeper than the YAML reader
    // itself follows: both an error naming the document.
    for depth in [MAX_DEPTH + 10, 1000] {
        let deep = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let e = error(&deep);
        assert!(
            matches!(e, ImportError::TooDeep { .. } | ImportError::Yaml { .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("input.yaml document 1"), "{e}");
    }
    // Aliases that would expand exponentially.
    let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        laughs.push_str(&format!(
            "{}: &{} [*{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}]\n",
            (b'a' + i) as char,
            (b'a' + i) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char,
            (b'a' + i - 1) as char
        ));
    }
    let started = Instant::now();
    assert!(try_import(&laughs).is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
    let many = "apiVersion: v1\nkind: Namespace\n---\n".repeat(MAX_OBJECTS + 1);
    // The first foreign object is the error; more objects than the bound
    // never get that far.
    let e = error(&many);
    assert!(
        matches!(
            e,
            ImportError::TooManyObjects { .. } | ImportError::NotKyverno { .. }
        ),
        "{e}"
    );
    let many_lists = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        "- {apiVersion: v1, kind: Namespace}\n".repeat(MAX_OBJECTS + 1)
    );
    assert!(matches!(
        error(&many_lists),
        ImportError::TooManyObjects { .. }
    ));
}

fn alternatives(n: usize) -> String {
    (0..n)
        .map(|i| format!("registry{i}.example.com/team{i}/*"))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn thousands_of_alternatives() {
    let e = error(&validate_rule(&format!(
        "      pattern: {{spec: {{containers: [{{image: '{}'}}]}}}}\n",
        alternatives(5000)
    )));
    assert_eq!(
        e.to_string(),
        format!("ClusterPolicy/test spec.rules[0].validate.pattern.spec.containers[0].image: 5000 alternatives, more than the {MAX_ALTERNATIVES} an import takes")
    );
    // At the bound: imported, correct, in bounded time.
    let started = Instant::now();
    let import = import_yaml(&validate_rule(&format!(
        "      pattern: {{spec: {{containers: [{{image: '{}'}}]}}}}\n",
        alternatives(MAX_ALTERNATIVES)
    )));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert_eq!(
        import.report.summary.trusted_registries.len(),
        MAX_ALTERNATIVES
    );
    assert!(admits(&import, "registry999.example.com/team999/app:1"));
    assert!(!admits(&import, "registry999.example.com/team998/app:1"));
    assert!(!admits(
        &import,
        "registry1.example.com.evil.example/team1/app"
    ));
    let long = format!("ghcr.io/{}*", "a".repeat(MAX_PATTERN_LEN));
    assert!(matches!(
        error(&validate_rule(&format!(
            "      pattern: {{spec: {{containers: [{{image: '{long}'}}]}}}}\n"
        ))),
        ImportError::PatternTooLong { .. }
    ));
}

#[test]
fn a_proof_too_large_to_finish_fails_closed() {
    // A negated `*a` and forty `?`: the subset construction of the proof
    // explodes. The patterns it would have had to prove are not carried
    // over (denied) rather than guessed, and the import still ends.
    let negated = format!("!*a{}", "?".repeat(40));
    let started = Instant::now();
    let import = import_yaml(&cluster_policy(&format!(
        "  - name: registries\n    validate: {{pattern: {{spec: {{containers: [{{image: 'quay.io/* | ghcr.io/*'}}]}}}}}}\n  - name: odd\n    validate: {{pattern: {{spec: {{containers: [{{image: '{negated}'}}]}}}}}}\n"
    )));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert!(!admits(&import, "quay.io/x:1"));
    assert!(!admits(&import, "ghcr.io/x:1"));
    let f = findings(&import, FindingKind::Changed)
        .into_iter()
        .find(|f| f.pattern.as_deref() == Some("quay.io/*"))
        .unwrap_or_else(|| panic!("{}", import.report.to_text()));
    assert!(f.message.starts_with("not carried over"), "{f:?}");
    let expression = format!(
        "object.spec.containers.all(c, c.image.startsWith('{}'))",
        "a".repeat(MAX_CEL_LEN)
    );
    let e = error(&format!(
        "apiVersion: policies.kyverno.io/v1alpha1\nkind: ValidatingPolicy\nmetadata: {{name: vp}}\nspec:\n  matchConstraints: {{resourceRules: [{{resources: [pods]}}]}}\n  validations:\n  - expression: \"{expression}\"\n"
    ));
    assert!(matches!(e, ImportError::ExpressionTooLong { .. }), "{e}");
}
