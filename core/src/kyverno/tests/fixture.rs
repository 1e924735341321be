//! The real cluster's `require-trusted-registries` ClusterPolicy
//! (`fixtures/kyverno/`, from the shared fixtures store).

use super::*;

fn fixture_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/kyverno/require-trusted-registries.yaml"
    );
    std::fs::read_to_string(path).unwrap()
}

/// The fixture's image pattern string and excluded namespaces, read with
/// serde_yaml (not with the importer).
fn fixture_parts() -> (String, Vec<String>) {
    let v: serde_yaml::Value = serde_yaml::from_str(&fixture_text()).unwrap();
    let rule = &v["spec"]["rules"][0];
    let pattern = rule["validate"]["pattern"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let namespaces = rule["exclude"]["any"][0]["resources"]["namespaces"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    (pattern, namespaces)
}

#[test]
fn the_written_policy_decides_as_intended() {
    let import = import_yaml(&fixture_text());
    let d = DIGEST;
    // The registries and user images it lists, with tags and digests,
    // short names and docker.io/library forms.
    for reference in [
        "nginx:1.25".to_string(),
        format!("nginx@{d}"),
        format!("nginx:1.25@{d}"),
        "docker.io/library/nginx:1.25".into(),
        "library/nginx:1.25".into(),
        "docker.io/nginx".into(),
        "nginx-unprivileged:1.27".into(),
        "busybox".into(),
        "alpine:3.20".into(),
        "postgres:16-alpine".into(),
        "python:3.12-slim".into(),
        "mysql:8".into(),
        "kong:3.7".into(),
        "actualbudget/actual-server:25.1.0".into(),
        "docker.io/actualbudget/actual-server:25.1.0".into(),
        format!("viktorbarzin/infra@{d}"),
        "bitnami/redis:7.2".into(),
        "ghcr.io/home-assistant/home-assistant:2025.1".into(),
        format!("ghcr.io/org/app@{d}"),
        "quay.io/prometheus/node-exporter:v1.8.0".into(),
        "registry.k8s.io/pause:3.9".into(),
        "gcr.io/distroless/static:nonroot".into(),
        "us-docker.pkg.dev/project/repo/app:1".into(),
        "lscr.io/linuxserver/plex:latest".into(),
        "codeberg.org/forgejo/forgejo:9".into(),
        "mcr.microsoft.com/dotnet/runtime:8.0".into(),
        "nvcr.io/nvidia/k8s-device-plugin:v0.16".into(),
        "oci.external-secrets.io/external-secrets/external-secrets:v0.10".into(),
        "reg.kyverno.io/kyverno/kyverno:v1.13".into(),
        "docker.n8n.io/n8nio/n8n:1.70".into(),
        "registry.gitlab.com/group/project:1".into(),
        "forgejo.viktorbarzin.me/viktor/app:1".into(),
        "registry.viktorbarzin.me/infra/app:1".into(),
        "10.0.20.10/library/nginx:1.25".into(),
    ] {
        assert!(
            admits(&import, &reference),
            "{reference} should be admitted\n{}",
            import.policy_yaml
        );
        assert_eq!(
            rule_of(&import, &reference).map(|r| r.name.as_str()),
            Some("allowed")
        );
    }
    // The holes Kyverno's wildcards left, and registries it never listed.
    for reference in [
        "nginx.evil.example/x:1",
        "nginx:5000/x:1",
        "busybox.evil.example/busybox:1",
        "alpine-evil.example/x",
        "10.0.20.100:5000/x:1",
        "10.0.20.100/x:1",
        "10.0.20.10.evil.example/x:1",
        "ghcr.io.evil.example/x:1",
        "quay.io.evil.example/x:1",
        "registry.viktorbarzin.me.evil.example/x:1",
        "evil.example/nginx:1.25",
        "docker.io.evil.example/library/nginx:1",
        // The pull-through caches on ports of 10.0.20.10: Kyverno's
        // `10.0.20.10*` admitted them, imgate lists hosts with their port
        // (the report says so, with this reference).
        "10.0.20.10:5000/library/nginx:1.25",
    ] {
        assert!(!admits(&import, reference), "{reference} should be denied");
    }
    let s = &import.report.summary;
    assert_eq!(
        (
            s.mode.as_str(),
            s.pin_digests.as_str(),
            s.on_registry_error.as_str()
        ),
        ("enforce", "none", "deny")
    );
    let (_, namespaces) = fixture_parts();
    let mut expected = namespaces.clone();
    expected.sort();
    assert_eq!(s.excluded_namespaces, expected);
    assert_eq!(namespaces.len(), 37);
}

fn changed<'a>(import: &'a Import, pattern: &str) -> &'a Finding {
    findings(import, FindingKind::Changed)
        .into_iter()
        .find(|f| f.pattern.as_deref() == Some(pattern))
        .unwrap_or_else(|| {
            panic!(
                "no change reported for {pattern}:\n{}",
                import.report.to_text()
            )
        })
}

fn example<'a>(f: &'a Finding, reference: &str) -> &'a Example {
    f.examples
        .iter()
        .find(|e| e.reference == reference)
        .unwrap_or_else(|| panic!("no example {reference} in {f:?}"))
}

#[test]
fn the_report_names_each_hole_with_an_example() {
    let import = import_yaml(&fixture_text());
    assert!(!import.report.is_clean());
    // `nginx*`-style prefixes: the wildcard ran into another registry.
    for prefix in [
        "nginx", "alpine", "busybox", "kong", "mysql", "postgres", "python",
    ] {
        let f = changed(&import, &format!("{prefix}*"));
        assert_eq!(
            f.imgate.as_deref(),
            Some(format!("docker.io/library/{prefix}*").as_str())
        );
        let e = example(f, &format!("{prefix}.evil.example/x:1"));
        assert_eq!(
            (e.kyverno, e.imgate),
            (Decision::Admitted, Decision::Denied)
        );
        // And the example really is one: Kyverno's own rules admit it.
        let (pattern, _) = fixture_parts();
        assert!(kyverno_admits(&pattern, &e.reference));
        assert!(!admits(&import, &e.reference));
    }
    // The IP prefix without a boundary: a neighbour's address and a port.
    let f = changed(&import, "10.0.20.10*");
    assert_eq!(f.imgate.as_deref(), Some("10.0.20.10/**"));
    for reference in ["10.0.20.100:5000/x:1", "10.0.20.10:5000/x:1"] {
        let e = example(f, reference);
        assert_eq!(
            (e.kyverno, e.imgate),
            (Decision::Admitted, Decision::Denied)
        );
    }
    // `docker.io/*` did not match references written without docker.io/.
    let f = changed(&import, "docker.io/*");
    let e = &f.examples[0];
    assert_eq!(
        (e.kyverno, e.imgate),
        (Decision::Denied, Decision::Admitted),
        "{f:?}"
    );
    assert!(!e.reference.starts_with("docker.io/"), "{e:?}");
    // Init and ephemeral containers were never checked.
    let not_covered: Vec<&str> = findings(&import, FindingKind::NotCovered)
        .iter()
        .map(|f| f.message.split(':').next().unwrap())
        .collect();
    assert_eq!(not_covered, vec!["initContainers", "ephemeralContainers"]);
    for f in findings(&import, FindingKind::NotCovered) {
        let e = &f.examples[0];
        assert_eq!(
            (e.kyverno, e.imgate),
            (Decision::Admitted, Decision::Denied)
        );
        assert!(!admits(&import, &e.reference));
    }
    // Every excluded namespace, with kube-system also skipped by the webhooks.
    let excluded = findings(&import, FindingKind::ExcludedNamespace);
    assert_eq!(excluded.len(), 37);
    let kube_system = excluded
        .iter()
        .find(|f| f.pattern.as_deref() == Some("kube-system"))
        .unwrap();
    assert!(
        kube_system.message.contains("namespaceSelector"),
        "{kube_system:?}"
    );
    // The chart-wide failurePolicy the ClusterPolicy does not show.
    assert!(import
        .report
        .findings
        .iter()
        .any(|f| f.message.contains("forceFailurePolicyIgnore")));
    let text = import.report.to_text();
    assert!(
        text.contains("nginx.evil.example/x:1") && text.contains("Excluded namespaces (37)"),
        "{text}"
    );
}

#[test]
fn never_more_permissive_than_the_real_policy() {
    let import = import_yaml(&fixture_text());
    let (pattern, _) = fixture_parts();
    let mut references = probes(&[]);
    for alternative in pattern.split('|') {
        references.extend(super::super::examples::fills(alternative.trim()));
    }
    for t in &import.policy.trusted_registries {
        references.push(t.as_str().replace("**", "x/y").replace('*', "z"));
    }
    assert_never_more_permissive(
        &import,
        |r| kyverno_admits(&pattern, r),
        &references,
        &["", ":1.0"],
    );
}
