//! Policies with constructs the importer does not know never import as
//! something more permissive: each is refused by field path, and the
//! written policy denies what the original denied (here: everything outside
//! its allow-list, and everything the unknown part could have denied).

use super::*;

/// An allow-list rule plus `extra` rules.
fn with_allow_list(extra: &str) -> String {
    cluster_policy(&format!(
        "  - name: registries\n    validate: {{pattern: {{spec: {{containers: [{{image: 'ghcr.io/* | quay.io/*'}}]}}}}}}\n{extra}"
    ))
}

const ALLOW: &str = "ghcr.io/* | quay.io/*";

/// The written policy denies every probe.
fn denies_everything(import: &Import, what: &str) {
    for reference in probes(&["ghcr.io/x/y:1", "quay.io/x:1"]) {
        assert!(
            !admits(import, &reference),
            "{what}: {reference} admitted\n{}",
            import.policy_yaml
        );
    }
    assert_eq!(
        import.report.summary.trusted_registries,
        vec![write::NOTHING],
        "{what}"
    );
}

#[test]
fn unknown_image_constructs_deny_what_they_covered() {
    for (what, extra) in [
        ("an unknown anchor on image", "  - name: x\n    validate: {pattern: {spec: {containers: [{'<(image)': 'ghcr.io/a/*'}]}}}\n"),
        ("a templated pattern", "  - name: x\n    validate: {pattern: {spec: {containers: [{image: '{{ request.object.metadata.labels.registry }}/*'}]}}}\n"),
        ("a validate field the importer does not know", "  - name: x\n    validate: {cel: {expressions: [{expression: \"object.spec.containers.all(c, c.image.matches('^ghcr'))\"}]}}\n"),
        ("an unknown operator", "  - name: x\n    validate: {deny: {conditions: {any: [{key: '{{ request.object.spec.containers[].image }}', operator: DurationGreaterThan, value: 1h}]}}}\n"),
        ("custom image locations", "  - name: x\n    imageExtractors: {Pod: [{path: /spec/containers/*/image}]}\n    validate: {pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}}\n"),
        ("a list pattern of two elements", "  - name: x\n    validate: {pattern: {spec: {containers: [{image: 'ghcr.io/a/*'}, {image: 'quay.io/a/*'}]}}}\n"),
        ("a JMESPath the importer does not translate", "  - name: x\n    validate: {deny: {conditions: {any: [{key: \"{{ images.containers.*.registry }}\", operator: AnyNotIn, value: [ghcr.io]}]}}}\n"),
    ] {
        let import = import_yaml(&with_allow_list(extra));
        assert!(!findings(&import, FindingKind::Refused).is_empty(), "{what}");
        assert!(import.policy_yaml.contains("# Not carried over"), "{what}");
        denies_everything(&import, what);
    }
}

#[test]
fn an_unknown_policy_setting_denies_its_images() {
    let yaml = with_allow_list("").replace(
        "  validationFailureAction: Enforce\n",
        "  validationFailureAction: Enforce\n  imageVerificationMode: permissive\n",
    );
    let import = import_yaml(&yaml);
    assert!(findings(&import, FindingKind::Refused)
        .iter()
        .any(|f| f.path == "spec.imageVerificationMode"));
    denies_everything(&import, "an unknown spec field");
}

#[test]
fn an_unknown_verification_denies_the_images_it_covered() {
    let import = import_yaml(&with_allow_list(
        "  - name: signed\n    verifyImages:\n    - imageReferences: ['ghcr.io/acme/*']\n      attestors: [{entries: [{notary: {certs: x}}]}]\n",
    ));
    assert!(findings(&import, FindingKind::Refused)
        .iter()
        .any(|f| f.path.ends_with("entries[0].notary")));
    // The original denied unsigned ghcr.io/acme images; imgate denies them
    // (and the rest of ghcr.io, which it can no longer separate).
    assert!(!admits(&import, "ghcr.io/acme/app:1"));
    assert!(!admits(&import, "ghcr.io/other/app:1"));
    assert!(admits(&import, "quay.io/x:1"));
    assert_never_more_permissive(&import, |r| kyverno_admits(ALLOW, r), &probes(&[]), &[""]);
}

#[test]
fn unrecognised_cel_is_refused_and_denies() {
    let vp = |validation: &str| {
        format!(
            "apiVersion: policies.kyverno.io/v1alpha1\nkind: ValidatingPolicy\nmetadata: {{name: vp}}\nspec:\n  matchConstraints: {{resourceRules: [{{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}}]}}\n  validations:\n  - expression: \"{validation}\"\n"
        )
    };
    // An unknown function in a conjunction: nothing is admitted.
    let import = import_yaml(&vp("object.spec.containers.all(c, c.image.startsWith('ghcr.io/') && c.image.matches('v[0-9]+$'))"));
    assert!(findings(&import, FindingKind::Refused)
        .iter()
        .any(|f| f.message.contains("CEL not recognised")));
    denies_everything(&import, "CEL && unknown");
    // In an alternative: dropping it only narrows.
    let import = import_yaml(&vp(
        "object.spec.containers.all(c, c.image.startsWith('ghcr.io/') || c.image.matches('^quay'))",
    ));
    assert!(admits(&import, "ghcr.io/x:1"));
    assert!(!admits(&import, "quay.io/x:1"));
    // A list the importer does not know.
    let import = import_yaml(&vp(
        "object.spec.volumes.all(v, v.image.startsWith('ghcr.io/'))",
    ));
    denies_everything(&import, "CEL over volumes");
}

#[test]
fn checks_of_other_fields_are_listed_not_enforced() {
    let import = import_yaml(&validate_rule(
        "      pattern:\n        spec:\n          securityContext: {runAsNonRoot: true}\n          containers:\n          - image: 'ghcr.io/*'\n            securityContext: {privileged: false}\n",
    ));
    assert!(admits(&import, "ghcr.io/x:1"));
    let refused = findings(&import, FindingKind::Refused);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].message.contains("not an image check")
            && refused[0].message.contains("spec.securityContext"),
        "{refused:?}"
    );
    // Context lookups, podSecurity, mutate: refused by path.
    let import = import_yaml(&cluster_policy(
        "  - name: r\n    context: [{name: cm, configMap: {name: registries, namespace: kyverno}}]\n    validate: {pattern: {spec: {containers: [{image: 'ghcr.io/*'}]}}}\n  - name: pss\n    validate: {podSecurity: {level: baseline, version: latest}}\n  - name: m\n    mutate: {patchStrategicMerge: {spec: {containers: [{(image): '*', imagePullPolicy: Always}]}}}\n",
    ));
    let paths: Vec<&str> = findings(&import, FindingKind::Refused)
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    for expected in [
        "spec.rules[0].context",
        "spec.rules[1].validate.podSecurity",
        "spec.rules[2].mutate",
    ] {
        assert!(paths.contains(&expected), "{expected} in {paths:?}");
    }
    assert!(admits(&import, "ghcr.io/x:1"));
}
