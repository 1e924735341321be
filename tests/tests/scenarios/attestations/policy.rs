//! A policy's `attestations:` through `imgate verify-attestation --policy`
//! and `imgate policy check`: the CEL examples docs/attestations.md carries
//! (provenance source repository and ref, GitHub-hosted builder, an SBOM
//! that exists, a vulnerability scan no older than 7 days with no critical
//! finding), admitted when they hold and denied naming the attestation, the
//! condition and the value seen when they do not.

use super::*;

/// The policy of docs/attestations.md's example, for images of `registry`
/// signed by `public`.
fn example_policy(registry: &str, public: &str) -> String {
    format!(
        r#"trustedRegistries: ["{registry}/**"]
rules:
  - name: ours
    images: ["{registry}/**"]
    keys: [{{file: {public}}}]
    attestations:
      - name: provenance
        predicateType: https://slsa.dev/provenance/v1
        conditions:
          - predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/example/app'
          - predicate.buildDefinition.externalParameters.workflow.ref == 'refs/heads/main'
          - expression: predicate.runDetails.builder.id == 'https://github.com/actions/runner/github-hosted'
            message: built on GitHub-hosted runners only
      - name: sbom
        predicateType: spdxjson
        conditions:
          - size(predicate.packages) > 0
      - name: scan
        predicateType: vuln
        conditions:
          - now - timestamp(predicate.metadata.scanFinishedOn) <= duration('168h')
          - "!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == 'CRITICAL'))"
"#
    )
}

fn sbom() -> Value {
    json!({"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": "app",
           "packages": [{"name": "musl", "versionInfo": "1.2.4"}, {"name": "app", "versionInfo": "1.0.0"}]})
}

fn scan(days_ago: i64, severity: &str) -> Value {
    let finished = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
    let finished = finished
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    json!({
        "invocation": {"uri": "https://github.com/example/app/actions/runs/1", "event_id": "1", "builder.id": "github", "parameters": null},
        "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.50.0", "version": "0.50.0",
            "db": {"uri": "", "version": ""},
            "result": {"Results": [
                {"Target": "alpine 3.19", "Vulnerabilities": [{"VulnerabilityID": "CVE-2024-0001", "Severity": "LOW"}, {"VulnerabilityID": "CVE-2024-0002", "Severity": severity}]},
                {"Target": "app"},
            ]}},
        "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_conditions_admit_and_deny() {
    let ctx = Ctx::new(Variant::Http).await;
    let (key, public, _) = ctx.keys("ci");
    let policy = ctx.path("policy.yaml");
    std::fs::write(&policy, example_policy(ctx.registry.host(), &public)).unwrap();
    let check = run_plain("policy", &["check", &policy]);
    assert_eq!(check.code, 0, "{check:?}");

    let good = ctx.push("policy-good", "team/good").await;
    ctx.attest(
        &key,
        "slsaprovenance1",
        &provenance("https://github.com/example/app", "refs/heads/main"),
        "legacy",
        &good.reference,
    );
    ctx.attest(&key, "spdxjson", &sbom(), "bundle", &good.reference);
    ctx.attest(&key, "vuln", &scan(1, "HIGH"), "legacy", &good.reference);
    let ok = ctx.assert_verified(&["--policy", &policy, &good.reference]);
    assert_eq!(ok["rule"], "ours");
    let names: Vec<&str> = ok["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["attestation"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["provenance", "sbom", "scan"], "{ok:#}");

    // Another repository, a self-hosted runner, no SBOM, a stale scan with
    // a critical finding: each named with the value seen.
    let bad = ctx.push("policy-bad", "team/bad").await;
    let mut foreign = provenance("https://github.com/evil/app", "refs/heads/main");
    foreign["runDetails"]["builder"]["id"] = json!("https://github.com/actions/runner/self-hosted");
    ctx.attest(&key, "slsaprovenance1", &foreign, "bundle", &bad.reference);
    ctx.attest(
        &key,
        "vuln",
        &scan(10, "CRITICAL"),
        "legacy",
        &bad.reference,
    );
    let run = ctx.verify(&["--policy", &policy, &bad.reference]);
    assert_eq!(run.code, 1, "{run:?}");
    let unmet = run.json()[0]["unmet"].as_array().unwrap().clone();
    let find = |attestation: &str| -> Vec<&Value> {
        unmet
            .iter()
            .filter(|u| u["attestation"] == attestation)
            .collect()
    };
    let provenance_unmet = find("provenance");
    assert_eq!(provenance_unmet.len(), 1, "{unmet:#?}");
    assert_eq!(provenance_unmet[0]["kind"], "condition");
    assert_eq!(provenance_unmet[0]["condition"], "predicate.buildDefinition.externalParameters.workflow.repository == 'https://github.com/example/app'");
    assert_eq!(
        provenance_unmet[0]["saw"],
        "\"https://github.com/evil/app\""
    );
    let message = provenance_unmet[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("attestation \"provenance\": condition \"predicate.buildDefinition"),
        "{message}"
    );
    assert!(
        message.contains("is false (saw \"https://github.com/evil/app\")"),
        "{message}"
    );
    assert_eq!(find("sbom")[0]["kind"], "missing");
    let scan_unmet = find("scan");
    assert_eq!(
        scan_unmet[0]["condition"],
        "now - timestamp(predicate.metadata.scanFinishedOn) <= duration('168h')"
    );
    let seconds: i64 = scan_unmet[0]["saw"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        (10 * 86400 - 120..=10 * 86400 + 120).contains(&seconds),
        "{scan_unmet:#?}"
    );

    // Only the builder wrong: the policy's message comes with the condition.
    let hosted = ctx.push("policy-selfhosted", "team/selfhosted").await;
    let mut own = provenance("https://github.com/example/app", "refs/heads/main");
    own["runDetails"]["builder"]["id"] = json!("https://github.com/actions/runner/self-hosted");
    ctx.attest(&key, "slsaprovenance1", &own, "legacy", &hosted.reference);
    ctx.attest(&key, "spdxjson", &sbom(), "legacy", &hosted.reference);
    ctx.attest(
        &key,
        "vuln",
        &scan(0, "CRITICAL"),
        "legacy",
        &hosted.reference,
    );
    let run = ctx.verify(&["--policy", &policy, &hosted.reference]);
    assert_eq!(run.code, 1, "{run:?}");
    let text = run.stdout;
    assert!(
        text.contains("built on GitHub-hosted runners only"),
        "{text}"
    );
    assert!(
        text.contains("\\\"https://github.com/actions/runner/self-hosted\\\""),
        "{text}"
    );
    assert!(
        text.contains("CVE-2024-0002"),
        "the critical finding is the value seen: {text}"
    );

    // --type narrows the rule to one attestation.
    ctx.assert_verified(&[
        "--policy",
        &policy,
        "--type",
        "slsaprovenance1",
        &hosted.reference.replace("selfhosted", "good"),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_names_a_condition_that_does_not_compile() {
    let ctx = Ctx::new(Variant::Http).await;
    let (_, public, _) = ctx.keys("ci");
    let policy = ctx.path("broken.yaml");
    let text = example_policy(ctx.registry.host(), &public).replace(
        "size(predicate.packages) > 0",
        "size(predicate.packages) > 'none'",
    );
    std::fs::write(&policy, text).unwrap();
    let run = run_plain("policy", &["check", &policy]);
    run.assert_one_line_error(
        "rules[0].attestations[1].conditions[0]: no overload of _>_ takes (int, string)",
    );

    let text = example_policy(ctx.registry.host(), &public)
        .replace("duration('168h')", "duration('7 days')");
    std::fs::write(&policy, text).unwrap();
    let run = run_plain("policy", &["check", &policy]);
    run.assert_one_line_error(
        "rules[0].attestations[2].conditions[0]: duration(\"7 days\") is not a valid duration",
    );

    let text = example_policy(ctx.registry.host(), &public)
        .replace("predicateType: spdxjson", "predicateType: sbom");
    std::fs::write(&policy, text).unwrap();
    let run = run_plain("policy", &["check", &policy]);
    run.assert_one_line_error(
        "rules[0].attestations[1].predicateType: \"sbom\" is neither a predicate type URI",
    );
}

/// The split the webhook relies on (issue 18, point 6): evidence collected
/// once and kept (as a cache keeps it) meets a reloaded policy's changed
/// condition afresh, and a condition on `now` follows the clock, with no
/// registry request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_evidence_meets_a_reloaded_condition_afresh() {
    use imgate_core::attestation::{self, cel::Now};
    use imgate_core::policy::Policy;
    use imgate_core::registry::RegistryClient;
    use imgate_core::ImageRef;

    let ctx = Ctx::new(Variant::Http).await;
    let (key, public, _) = ctx.keys("ci");
    let image = ctx.push("reload", "team/app").await;
    ctx.attest(
        &key,
        "slsaprovenance1",
        &provenance("https://github.com/example/app", "refs/heads/main"),
        "legacy",
        &image.reference,
    );
    ctx.attest(&key, "vuln", &scan(3, "HIGH"), "legacy", &image.reference);
    let host = ctx.registry.host();
    let policy = |repository: &str, max_age: &str| {
        Policy::from_yaml(
            &format!(
                "trustedRegistries: [\"{host}/**\"]\nregistries: {{\"{host}\": {{http: true}}}}\nrules:\n  - name: ours\n    images: [\"{host}/**\"]\n    keys: [{{file: {public}}}]\n    attestations:\n      - name: provenance\n        predicateType: slsaprovenance1\n        conditions: [\"predicate.buildDefinition.externalParameters.workflow.repository == '{repository}'\"]\n      - name: scan\n        predicateType: vuln\n        conditions: [\"now - timestamp(predicate.metadata.scanFinishedOn) <= duration('{max_age}')\"]\n"
            ),
            "reload.yaml",
        )
        .unwrap()
    };
    let before = policy("https://github.com/example/app", "168h");
    let client = RegistryClient::new(before.client_config(ctx.registry.client_config())).unwrap();
    let target = ImageRef::parse(&image.pinned()).unwrap();
    let rule = before.rule_for(&target).unwrap();
    let evidence = attestation::collect(&client, &target, rule.attestations().wanted())
        .await
        .unwrap();
    let requests = client.request_count();
    assert!(rule
        .attestations()
        .evaluate(&evidence, &Now::current())
        .is_empty());

    // A reload that names another repository: same evidence (same cache
    // key), now unmet, naming the value seen.
    let after = policy("https://github.com/example/other", "168h");
    let reloaded = after.rule_for(&target).unwrap();
    assert_eq!(
        reloaded.attestations().fingerprint(),
        rule.attestations().fingerprint()
    );
    let unmet = reloaded.attestations().evaluate(&evidence, &Now::current());
    assert_eq!(unmet.len(), 1, "{unmet:?}");
    assert!(
        unmet[0]
            .to_string()
            .contains("saw \"https://github.com/example/app\""),
        "{}",
        unmet[0]
    );
    // Four days on, the three-day-old scan is older than a week allows.
    let later = Now::from_unix(time::OffsetDateTime::now_utc().unix_timestamp() + 4 * 86400 + 60);
    let unmet = rule.attestations().evaluate(&evidence, &later);
    assert_eq!(unmet.len(), 1, "{unmet:?}");
    assert_eq!(unmet[0].attestation(), Some("scan"));
    assert_eq!(
        client.request_count(),
        requests,
        "evaluating asked the registry nothing"
    );
}
