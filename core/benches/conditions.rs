//! What an attestation condition costs a cached review: the review has the
//! statement's CEL values already (built once per cached statement), so it
//! pays one evaluation per condition, plus reading the clock. One
//! provenance condition, a pass over an SBOM of 1,000 packages, and the
//! worst a condition can cost: a loop over a loop that runs until its
//! budget (`DEFAULT_BUDGET`) is spent.
//!
//! `cargo bench -p imgate-core --bench conditions`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use imgate_core::attestation::cel::{Condition, Inputs, Now, Outcome, DEFAULT_BUDGET};

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
        &serde_json::json!({"kind": "key", "key": "ci.pub", "identity": "", "issuer": ""}),
    )
    .unwrap()
}

fn conditions(c: &mut Criterion) {
    let provenance = inputs(serde_json::json!({
        "buildDefinition": {"externalParameters": {"workflow": {
            "repository": "https://github.com/example/app", "ref": "refs/heads/main"}}},
        "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}},
    }));
    let repository = Condition::compile(
        "predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/example/app'",
    )
    .unwrap();
    c.bench_function("conditions/provenance_repository", |b| {
        b.iter(|| {
            let outcome = repository.evaluate(&provenance, &Now::current(), DEFAULT_BUDGET);
            assert_eq!(outcome, Outcome::Holds);
        })
    });

    let packages: Vec<serde_json::Value> = (0..1000)
        .map(|i| serde_json::json!({"name": format!("package-{i}"), "licenseConcluded": "MIT"}))
        .collect();
    let sbom = inputs(serde_json::json!({"spdxVersion": "SPDX-2.3", "packages": packages}));
    let no_gpl =
        Condition::compile("predicate.packages.all(p, p.licenseConcluded != 'GPL-3.0-only')")
            .unwrap();
    c.bench_function("conditions/sbom_1000_packages", |b| {
        b.iter(|| {
            let outcome = no_gpl.evaluate(&sbom, &Now::current(), DEFAULT_BUDGET);
            assert_eq!(outcome, Outcome::Holds);
        })
    });

    let items: Vec<serde_json::Value> = (0..20_000)
        .map(|i| serde_json::json!({"name": format!("p{i}"), "v": i}))
        .collect();
    let bulky = inputs(serde_json::json!({"items": items}));
    let quadratic =
        Condition::compile("predicate.items.all(a, predicate.items.all(b, a.v + b.v >= 0))")
            .unwrap();
    let mut group = c.benchmark_group("conditions");
    group.sample_size(10);
    group.bench_function("spend_the_whole_budget", |b| {
        b.iter(|| {
            let outcome = quadratic.evaluate(&bulky, &Now::current(), DEFAULT_BUDGET);
            assert_eq!(
                outcome,
                Outcome::OverBudget {
                    budget: DEFAULT_BUDGET
                }
            );
        })
    });
    group.finish();
}

criterion_group!(benches, conditions);
criterion_main!(benches);
