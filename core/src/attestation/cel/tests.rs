//! Conditions compiled and evaluated the way reviews use them: the
//! examples docs/attestations.md carries, the values denials report, and
//! the cost budget holding against expressions built to blow up.

use std::time::Instant;

use super::*;

fn inputs(predicate: serde_json::Value) -> Inputs {
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": "https://slsa.dev/provenance/v1",
        "subject": [{"name": "app", "digest": {"sha256": "ab"}}],
        "predicate": predicate,
    });
    Inputs::new(
        &serde_json::to_vec(&statement).unwrap(),
        "https://slsa.dev/provenance/v1",
        &statement["subject"][0],
        &serde_json::json!({"kind": "keyless", "key": "", "identity": "https://github.com/example/app/.github/workflows/release.yml@refs/heads/main", "issuer": "https://token.actions.githubusercontent.com"}),
    )
    .unwrap()
}

/// 2024-06-10T00:00:00Z.
const NOW: i64 = 1_717_977_600;

fn eval(src: &str, input: &Inputs) -> Outcome {
    Condition::compile(src)
        .unwrap()
        .evaluate(input, &Now::from_unix(NOW), DEFAULT_BUDGET)
}

fn provenance(repository: &str, git_ref: &str, builder: &str) -> Inputs {
    inputs(serde_json::json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {
                "ref": git_ref,
                "repository": repository,
                "path": ".github/workflows/release.yml",
            }},
        },
        "runDetails": {"builder": {"id": builder}},
    }))
}

// The examples of docs/attestations.md, word for word.
const SOURCE_REPO: &str = "predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/example/app'";
const SOURCE_REF: &str =
    "predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'";
const HOSTED_BUILDER: &str =
    "predicate.runDetails.builder.id == 'https://github.com/actions/runner/github-hosted'";
const SBOM_EXISTS: &str = "size(predicate.packages) > 0";
const SCAN_FRESH: &str = "now - timestamp(predicate.metadata.scanFinishedOn) <= duration('168h')";
const NO_CRITICAL: &str = "!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))";

#[test]
fn provenance_examples() {
    let good = provenance(
        "https://github.com/example/app",
        "refs/heads/main",
        "https://github.com/actions/runner/github-hosted",
    );
    for src in [SOURCE_REPO, SOURCE_REF, HOSTED_BUILDER] {
        assert_eq!(eval(src, &good), Outcome::Holds, "{src}");
    }
    let other = provenance(
        "https://github.com/evil/app",
        "refs/heads/dev",
        "https://github.com/actions/runner/self-hosted",
    );
    assert_eq!(
        eval(SOURCE_REPO, &other),
        Outcome::Fails {
            saw: "\"https://github.com/evil/app\"".into()
        }
    );
    assert_eq!(
        eval(SOURCE_REF, &other),
        Outcome::Fails {
            saw: "\"refs/heads/dev\"".into()
        }
    );
    assert_eq!(
        eval(HOSTED_BUILDER, &other),
        Outcome::Fails {
            saw: "\"https://github.com/actions/runner/self-hosted\"".into()
        }
    );
    // A missing field is unmet, naming it.
    let empty = inputs(serde_json::json!({}));
    match eval(SOURCE_REPO, &empty) {
        Outcome::Error(err) => assert!(err.contains("buildDefinition"), "{err}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sbom_and_vulnerability_examples() {
    let sbom =
        inputs(serde_json::json!({"spdxVersion": "SPDX-2.3", "packages": [{"name": "musl"}]}));
    assert_eq!(eval(SBOM_EXISTS, &sbom), Outcome::Holds);
    let empty = inputs(serde_json::json!({"spdxVersion": "SPDX-2.3", "packages": []}));
    assert_eq!(
        eval(SBOM_EXISTS, &empty),
        Outcome::Fails { saw: "0".into() }
    );

    let scan = |finished: &str, severity: &str| {
        inputs(serde_json::json!({
            "scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": {"Results": [
                {"Target": "alpine", "Vulnerabilities": [
                    {"VulnerabilityID": "CVE-2024-1", "Severity": "LOW"},
                    {"VulnerabilityID": "CVE-2024-2", "Severity": severity},
                ]},
                {"Target": "app"},
            ]}},
            "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished},
        }))
    };
    let fresh_clean = scan("2024-06-08T10:00:00Z", "HIGH");
    assert_eq!(eval(SCAN_FRESH, &fresh_clean), Outcome::Holds);
    assert_eq!(eval(NO_CRITICAL, &fresh_clean), Outcome::Holds);
    let stale = scan("2024-05-01T10:00:00Z", "HIGH");
    match eval(SCAN_FRESH, &stale) {
        Outcome::Fails { saw } => assert!(saw.ends_with('s'), "a duration: {saw}"),
        other => panic!("{other:?}"),
    }
    let critical = scan("2024-06-08T10:00:00Z", "CRITICAL");
    match eval(NO_CRITICAL, &critical) {
        Outcome::Fails { saw } => assert_eq!(
            saw,
            "{\"Severity\": \"CRITICAL\", \"VulnerabilityID\": \"CVE-2024-2\"}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn signer_and_subject_are_variables() {
    let input = provenance("r", "f", "b");
    assert_eq!(
        eval(
            "signer.issuer == 'https://token.actions.githubusercontent.com' && signer.identity.startsWith('https://github.com/example/')",
            &input
        ),
        Outcome::Holds
    );
    assert_eq!(
        eval(
            "subject.digest.sha256 == 'ab' && subject.name == 'app'",
            &input
        ),
        Outcome::Holds
    );
    assert_eq!(
        eval("predicateType == 'https://slsa.dev/provenance/v1'", &input),
        Outcome::Holds
    );
    assert_eq!(
        eval("signer.kind == 'key'", &input),
        Outcome::Fails {
            saw: "\"keyless\"".into()
        }
    );
}

#[test]
fn compile_errors_say_what_is_wrong() {
    let err = Condition::compile("predicate.x ==").unwrap_err();
    assert!(err.starts_with("does not parse"), "{err}");
    let err = Condition::compile(&"a".repeat(MAX_CONDITION_LEN + 1)).unwrap_err();
    assert!(err.contains("more than the 4096"), "{err}");
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert!(Condition::compile(&deep).is_err());
    let err = Condition::compile("@cost(predicate) == 1").unwrap_err();
    assert!(err.starts_with("does not parse"), "{err}");
}

/// A predicate with one list of `n` small maps and a `big`-byte string.
fn bulky(n: usize, big: usize) -> Inputs {
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"name": format!("p{i}"), "v": i}))
        .collect();
    inputs(serde_json::json!({"items": items, "big": "x".repeat(big)}))
}

#[test]
fn budget_holds_against_blowups() {
    let input = bulky(20_000, 4 << 20);
    // Linear work on the largest input stays well inside the budget.
    let started = Instant::now();
    assert_eq!(
        eval("predicate.items.all(p, p.name != 'evil')", &input),
        Outcome::Holds
    );
    let linear = started.elapsed();
    // Quadratic loops, loops over a big string, and doubling strings each
    // stop at the budget instead of running for minutes or filling memory.
    for src in [
        "predicate.items.all(a, predicate.items.all(b, a.v + b.v >= 0))",
        "predicate.items.exists(a, predicate.big.contains(a.name))",
        "predicate.items.map(a, predicate.big).size() == 0",
        "predicate.items.all(a, [predicate.big, predicate.big].size() == 2)",
        "predicate.items.all(a, {'k': predicate.big}.size() == 1)",
        "((predicate.big + predicate.big) + (predicate.big + predicate.big)) + ((predicate.big + predicate.big) + (predicate.big + predicate.big)) == ''",
        "[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, predicate.items.size() > 0 && predicate.items.exists(x, x.v < 0) == false))))",
    ] {
        let started = Instant::now();
        let outcome = eval(src, &input);
        let took = started.elapsed();
        assert_eq!(
            outcome,
            Outcome::OverBudget {
                budget: DEFAULT_BUDGET
            },
            "{src}"
        );
        // Debug builds are ~10x slower than release; the bound is what
        // matters: far from unbounded.
        assert!(took.as_secs() < 60, "{src}: {took:?}");
        eprintln!("{took:?} to spend the budget: {src}");
    }
    eprintln!("linear pass over 20000 items: {linear:?}");
}
