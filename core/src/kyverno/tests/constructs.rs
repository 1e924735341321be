//! Each `validate` construct and policy setting the importer reads,
//! translated (or refused) as the report says.

use super::*;

fn kinds(import: &Import) -> Vec<FindingKind> {
    import.report.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn anchors_on_every_container_list() {
    let import = import_yaml(&validate_rule(
        "      pattern:\n        spec:\n          =(ephemeralContainers):\n          - image: 'ghcr.io/acme/*'\n          =(initContainers):\n          - image: 'ghcr.io/acme/* | busybox*'\n          containers:\n          - image: 'ghcr.io/acme/*'\n",
    ));
    // One allow-list serves every list: the intersection.
    assert!(admits(&import, "ghcr.io/acme/app:1"));
    assert!(!admits(&import, "busybox:1"));
    assert!(findings(&import, FindingKind::NotCovered).is_empty());
    let policy = "ghcr.io/acme/*";
    assert_never_more_permissive(
        &import,
        |r| kyverno_admits(policy, r),
        &probes(&["busybox"]),
        &[""],
    );
}

#[test]
fn existence_negation_and_conditional_anchors() {
    let import = import_yaml(&validate_rule(
        "      pattern:\n        spec:\n          X(hostNetwork): true\n          ^(containers):\n          - image: 'quay.io/*'\n            (name): 'app-*'\n",
    ));
    assert!(admits(&import, "quay.io/org/app:1"));
    assert!(!admits(&import, "ghcr.io/org/app:1"));
    let k = kinds(&import);
    // ^(): one container had to match, imgate checks every one; (name):
    // Kyverno checked only containers named app-*.
    assert_eq!(
        k.iter().filter(|k| **k == FindingKind::Stricter).count(),
        2,
        "{}",
        import.report.to_text()
    );
    // X(hostNetwork) is not about images: listed, not enforced.
    let refused = findings(&import, FindingKind::Refused);
    assert!(
        refused.iter().any(|f| f.message.contains("X(hostNetwork)")),
        "{refused:?}"
    );
    // A conditional anchor on image checks other fields, not images.
    let import = import_yaml(&cluster_policy(
        "  - name: allow\n    validate:\n      pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}\n  - name: pull-policy\n    validate:\n      pattern: {spec: {containers: [{(image): '*:latest', imagePullPolicy: Always}]}}\n",
    ));
    assert!(admits(&import, "ghcr.io/x:latest"));
    assert!(import
        .report
        .findings
        .iter()
        .any(|f| f.message.contains("conditional anchor on image")));
}

#[test]
fn alternatives_conjunctions_and_negations() {
    let pattern = "quay.io/acme/* | ghcr.io/acme/* & !ghcr.io/acme/internal-*";
    let import = import_yaml(&validate_rule(&format!(
        "      pattern: {{spec: {{containers: [{{image: '{pattern}'}}]}}}}\n"
    )));
    assert!(admits(&import, "quay.io/acme/app:1"));
    // imgate cannot subtract from a pattern: ghcr.io/acme/** would admit
    // the internal images Kyverno denied, so it is not carried over.
    assert!(!admits(&import, "ghcr.io/acme/internal-db:1"));
    assert!(!admits(&import, "ghcr.io/acme/app:1"));
    let f = findings(&import, FindingKind::Changed)
        .into_iter()
        .find(|f| f.pattern.as_deref() == Some("ghcr.io/acme/*"))
        .unwrap();
    assert!(f.message.starts_with("not carried over"), "{f:?}");
    assert!(f
        .examples
        .iter()
        .any(|e| e.kyverno == Decision::Admitted && e.imgate == Decision::Denied));
    assert_never_more_permissive(
        &import,
        |r| kyverno_admits(pattern, r),
        &probes(&["ghcr.io/acme/internal-x:1", "quay.io/acme/x"]),
        &[""],
    );
}

#[test]
fn a_rule_on_tags_is_reported_with_the_references_it_denied() {
    let import = import_yaml(&cluster_policy(
        "  - name: registries\n    validate:\n      pattern: {spec: {containers: [{image: 'ghcr.io/acme/*'}]}}\n  - name: no-latest\n    validate:\n      pattern: {spec: {containers: [{image: '!*:latest'}]}}\n",
    ));
    assert!(admits(&import, "ghcr.io/acme/app:1"));
    // The image is the same at any tag; imgate has no tag rules.
    assert!(admits(&import, "ghcr.io/acme/app:latest"));
    let f = findings(&import, FindingKind::Changed)
        .into_iter()
        .find(|f| f.path == "spec.rules[1].validate")
        .unwrap_or_else(|| panic!("{}", import.report.to_text()));
    assert!(
        f.examples
            .iter()
            .any(|e| e.reference.ends_with(":latest") && e.kyverno == Decision::Denied),
        "{f:?}"
    );
    let both = |r: &str| kyverno_admits("ghcr.io/acme/*", r) && kyverno_admits("!*:latest", r);
    assert_never_more_permissive(&import, both, &probes(&[]), &[""]);
}

#[test]
fn the_digest_required_idiom_becomes_pinning() {
    let import = import_yaml(&cluster_policy(
        "  - name: registries\n    validate:\n      pattern: {spec: {containers: [{image: 'ghcr.io/acme/*'}]}}\n  - name: digests\n    validate:\n      pattern: {spec: {containers: [{image: '*@*'}]}}\n",
    ));
    assert_eq!(import.report.summary.pin_digests, "all");
    let f = findings(&import, FindingKind::Changed)
        .into_iter()
        .find(|f| f.message.contains("only with a digest"))
        .unwrap_or_else(|| panic!("{}", import.report.to_text()));
    let e = &f.examples[0];
    assert!(
        !e.reference.contains('@') && e.kyverno == Decision::Denied,
        "{e:?}"
    );
    let both = |r: &str| kyverno_admits("ghcr.io/acme/*", r) && kyverno_admits("*@*", r);
    assert_never_more_permissive(&import, both, &probes(&[]), &[""]);
}

#[test]
fn deny_conditions_with_wildcards() {
    let import = import_yaml(&validate_rule(
        "      deny:\n        conditions:\n          any:\n          - key: \"{{ request.object.spec.[ephemeralContainers, initContainers, containers][].image }}\"\n            operator: AnyNotIn\n            value: ['registry.example.com/*', 'ghcr.io/acme/*']\n          - key: \"{{ request.object.spec.containers[].image }}\"\n            operator: AnyIn\n            value: ['ghcr.io/acme/legacy*']\n",
    ));
    assert!(admits(&import, "registry.example.com/team/app:1"));
    assert!(!admits(&import, "quay.io/x:1"));
    // AnyIn removed ghcr.io/acme/legacy* from containers: the boundary-safe
    // ghcr.io/acme/** would admit it, so it is not carried over.
    assert!(!admits(&import, "ghcr.io/acme/legacy-app:1"));
    assert!(findings(&import, FindingKind::NotCovered).is_empty());
    // AllIn: Kyverno denied when every image matched; imgate denies each.
    let import = import_yaml(&validate_rule(
        "      deny:\n        conditions:\n        - key: '{{ request.object.spec.containers[].image }}'\n          operator: AnyNotIn\n          value: ['ghcr.io/*', 'quay.io/*']\n        - key: '{{ request.object.spec.containers[].image }}'\n          operator: AllIn\n          value: ['quay.io/*']\n",
    ));
    assert!(admits(&import, "ghcr.io/ok/app"));
    assert!(!admits(&import, "quay.io/ok/app"));
    assert!(!findings(&import, FindingKind::Stricter).is_empty());
}

#[test]
fn foreach_over_container_lists() {
    let import = import_yaml(&validate_rule(
        "      foreach:\n      - list: \"request.object.spec.[ephemeralContainers, initContainers, containers][]\"\n        deny:\n          conditions:\n            all:\n            - key: '{{ element.image }}'\n              operator: NotEquals\n              value: 'registry.example.com/*'\n",
    ));
    assert!(admits(&import, "registry.example.com/a/b:1"));
    assert!(!admits(&import, "registry.example.com.evil.example/a"));
    assert!(
        findings(&import, FindingKind::NotCovered).is_empty(),
        "{}",
        import.report.to_text()
    );
    let import = import_yaml(&validate_rule(
        "      foreach:\n      - list: request.object.spec.containers\n        pattern:\n          image: 'ghcr.io/*'\n",
    ));
    assert!(admits(&import, "ghcr.io/x/y"));
    assert_eq!(findings(&import, FindingKind::NotCovered).len(), 2);
}

#[test]
fn match_and_exclude_become_namespace_exclusions() {
    let import = import_yaml(&cluster_policy(
        "  - name: a\n    match: {any: [{resources: {kinds: [Pod]}}]}\n    exclude: {any: [{resources: {namespaces: [kube-system, monitoring, ci]}}]}\n    validate: {pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}}\n  - name: b\n    match: {any: [{resources: {kinds: [Pod, Deployment]}}]}\n    exclude: {any: [{resources: {namespaces: [kube-system, monitoring]}}, {subjects: [{kind: ServiceAccount, name: ci, namespace: ci}]}]}\n    validate: {pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}}\n  - name: labels\n    match: {any: [{resources: {kinds: [Deployment], namespaces: [prod]}}]}\n    validate: {pattern: {metadata: {labels: {team: '?*'}}}}\n",
    ));
    // A rule that is not about images says nothing about imgate's scope.
    assert!(
        !import
            .report
            .findings
            .iter()
            .any(|f| f.path.starts_with("spec.rules[2]") && f.kind != FindingKind::Refused),
        "{}",
        import.report.to_text()
    );
    assert_eq!(
        import.report.summary.excluded_namespaces,
        vec!["kube-system", "monitoring"]
    );
    // `ci` was excluded by one rule only; the subject exclusion is not carried.
    let stricter: Vec<String> = findings(&import, FindingKind::Stricter)
        .iter()
        .map(|f| format!("{} {:?}", f.path, f.pattern))
        .collect();
    assert!(
        stricter.iter().any(|s| s.contains("Some(\"ci\")")),
        "{stricter:?}"
    );
    assert!(
        stricter.iter().any(|s| s.contains("exclude.any[1]")),
        "{stricter:?}"
    );
    // A rule that applies only in some namespaces: the rest are excluded by label.
    let import = import_yaml(&cluster_policy(
        "  - name: prod\n    match: {any: [{resources: {kinds: [Pod], namespaces: [prod, staging]}}]}\n    validate: {pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}}\n",
    ));
    let yaml = &import.policy_yaml;
    assert!(
        yaml.contains("operator: NotIn")
            && yaml.contains("\"prod\"")
            && yaml.contains("\"staging\""),
        "{yaml}"
    );
    assert!(import.policy.namespace_excluded(
        "dev",
        &[("kubernetes.io/metadata.name".to_string(), "dev".to_string())].into()
    ));
    assert!(!import.policy.namespace_excluded(
        "prod",
        &[(
            "kubernetes.io/metadata.name".to_string(),
            "prod".to_string()
        )]
        .into()
    ));
    // A rule on kinds that run no containers is not an image rule.
    let err = try_import(&cluster_policy(
        "  - name: cm\n    match: {any: [{resources: {kinds: [ConfigMap]}}]}\n    validate: {pattern: {data: {image: 'ghcr.io/*'}}}\n",
    ))
    .unwrap_err();
    assert!(matches!(err, ImportError::NoImageRules { .. }), "{err}");
}

#[test]
fn failure_actions_policies_and_timeouts() {
    let rule = "  - name: r\n    match: {any: [{resources: {kinds: [Pod]}}]}\n    validate:\n      FAILURE\n      pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}\n";
    let policy = |spec: &str, failure: &str| {
        format!(
            "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {{name: p}}\nspec:\n{spec}  rules:\n{}",
            rule.replace("FAILURE", failure)
        )
    };
    let audit = import_yaml(&policy("  validationFailureAction: Audit\n", "message: m"));
    assert_eq!(audit.report.summary.mode, "audit");
    let overridden = import_yaml(&policy(
        "  validationFailureAction: Audit\n",
        "failureAction: Enforce",
    ));
    assert_eq!(overridden.report.summary.mode, "enforce");
    let ignore = import_yaml(&policy(
        "  validationFailureAction: Enforce\n  failurePolicy: Ignore\n  webhookTimeoutSeconds: 15\n",
        "message: m",
    ));
    assert_eq!(ignore.report.summary.on_registry_error, "allow");
    assert!(ignore
        .report
        .findings
        .iter()
        .any(|f| f.message.contains("timeoutSeconds: 15")));
    let fail = import_yaml(&policy(
        "  validationFailureAction: Enforce\n  webhookConfiguration: {failurePolicy: Fail, timeoutSeconds: 5}\n",
        "message: m",
    ));
    assert_eq!(fail.report.summary.on_registry_error, "deny");
    assert!(!fail
        .report
        .findings
        .iter()
        .any(|f| f.message.contains("forceFailurePolicyIgnore")));
    // Two policies, one Audit and one Enforce: enforced, and said so.
    let both = format!(
        "{}\n---\n{}",
        policy("  validationFailureAction: Audit\n", "message: m"),
        policy("  validationFailureAction: Enforce\n", "message: m")
            .replace("name: p}", "name: q}")
    );
    let mixed = import_yaml(&both);
    assert_eq!(mixed.report.summary.mode, "enforce");
    assert!(findings(&mixed, FindingKind::Stricter)
        .iter()
        .any(|f| f.message.contains("Audit in Kyverno")));
}

#[test]
fn validating_policy_cel_with_a_recognised_shape() {
    let import = import_yaml(
        "apiVersion: policies.kyverno.io/v1alpha1\nkind: ValidatingPolicy\nmetadata: {name: registries}\nspec:\n  validationActions: [Deny]\n  matchConstraints:\n    resourceRules:\n    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}\n    namespaceSelector:\n      matchExpressions:\n      - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, tools]}\n  variables:\n  - name: containers\n    expression: object.spec.containers + object.spec.?initContainers.orValue([]) + object.spec.?ephemeralContainers.orValue([])\n  - name: allowed\n    expression: \"['ghcr.io/acme/', 'registry.example.com/']\"\n  validations:\n  - expression: variables.containers.all(c, variables.allowed.exists(r, c.image.startsWith(r)))\n    message: untrusted registry\n  - expression: object.metadata.labels.team != ''\n",
    );
    assert!(admits(&import, "ghcr.io/acme/app:1"));
    assert!(admits(&import, "registry.example.com/x@sha256:1111111111111111111111111111111111111111111111111111111111111111"));
    assert!(!admits(&import, "ghcr.io/other/app:1"));
    assert!(!admits(&import, "registry.example.com.evil.example/x"));
    assert_eq!(
        import.report.summary.excluded_namespaces,
        vec!["kube-system", "tools"]
    );
    assert!(findings(&import, FindingKind::NotCovered).is_empty());
    // The label check is not an image check: listed as not imported.
    assert!(findings(&import, FindingKind::Refused)
        .iter()
        .any(|f| f.message.contains("validations[1]")));
    let oracle = |r: &str| kyverno_admits("ghcr.io/acme/* | registry.example.com/*", r);
    assert_never_more_permissive(&import, oracle, &probes(&[]), &[""]);
}

#[test]
fn any_pattern_and_scalar_operators() {
    let import = import_yaml(&validate_rule(
        "      anyPattern:\n      - spec: {containers: [{image: 'ghcr.io/acme/*'}]}\n      - spec: {containers: [{image: 'quay.io/acme/*'}]}\n",
    ));
    assert!(admits(&import, "ghcr.io/acme/app:1"));
    assert!(admits(&import, "quay.io/acme/app:1"));
    assert!(!admits(&import, "docker.io/acme/app:1"));
    // Kyverno wanted every container from one alternative: said so.
    assert!(findings(&import, FindingKind::Changed)
        .iter()
        .any(|f| f.path.ends_with("anyPattern") && f.message.contains("mixing")));
    let oracle = |r: &str| kyverno_admits("ghcr.io/acme/* | quay.io/acme/*", r);
    assert_never_more_permissive(
        &import,
        oracle,
        &probes(&["quay.io/acme/x", "ghcr.io/acme/y/z"]),
        &[""],
    );
    // Equals (deny when it matches) and AllNotIn in a foreach, per element.
    let import = import_yaml(&validate_rule(
        "      foreach:\n      - list: request.object.spec.containers\n        deny:\n          conditions:\n            any:\n            - key: '{{ element.image }}'\n              operator: AllNotIn\n              value: ['ghcr.io/*', 'quay.io/*']\n            - key: '{{ element.image }}'\n              operator: Equals\n              value: 'quay.io/legacy/*'\n",
    ));
    assert!(admits(&import, "ghcr.io/a/b:1"));
    // quay.io/** would also admit quay.io/legacy/*, which Equals denied:
    // imgate cannot subtract, so quay.io is not carried over at all.
    assert!(!admits(&import, "quay.io/legacy/app:1"));
    assert!(!admits(&import, "quay.io/new/app:1"));
    let quay = findings(&import, FindingKind::Changed)
        .into_iter()
        .find(|f| f.pattern.as_deref() == Some("quay.io/*"))
        .unwrap_or_else(|| panic!("{}", import.report.to_text()));
    assert!(
        quay.message.contains("not carried over") && quay.message.contains("quay.io/legacy"),
        "{quay:?}"
    );
    let oracle = |r: &str| {
        kyverno_admits("ghcr.io/* | quay.io/*", r) && !kyverno_admits("quay.io/legacy/*", r)
    };
    assert_never_more_permissive(
        &import,
        oracle,
        &probes(&["quay.io/legacy/x:1", "quay.io/new/x"]),
        &[""],
    );
}

#[test]
fn a_policy_on_tags_alone_trusts_no_registry_and_says_so() {
    let import = import_yaml(&validate_rule(
        "      pattern: {spec: {containers: [{image: '!*:latest'}]}}\n",
    ));
    assert_eq!(
        import.report.summary.trusted_registries,
        vec![write::NOTHING]
    );
    assert!(!admits(&import, "ghcr.io/x:1"));
    let refused = findings(&import, FindingKind::Refused);
    assert!(
        refused
            .iter()
            .any(|f| f.message.contains("admitted images from any registry")),
        "{refused:?}"
    );
    let import = import_yaml(&validate_rule(
        "      pattern: {spec: {containers: [{image: '*@*'}]}}\n",
    ));
    assert!(!admits(&import, &format!("ghcr.io/x@{DIGEST}")));
    let f = findings(&import, FindingKind::Changed)
        .into_iter()
        .find(|f| f.pattern.as_deref() == Some("*@*"))
        .unwrap();
    assert!(
        f.message.contains("any registry") && !f.examples.is_empty(),
        "{f:?}"
    );
}
