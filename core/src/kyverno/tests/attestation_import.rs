//! Whole imports with attestations: `verifyImages[].attestations` and an
//! ImageValidatingPolicy's attestation checks become a rule's
//! `attestations:` (each construct translated or refused, as the report
//! says), and what is refused denies the images it covered.

use serde_json::json;

use super::*;
use crate::policy::TlogSetting;

fn indented(text: &str, spaces: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}", " ".repeat(spaces)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An attestor entry with the test key (`ignoreTlog: true`), indented by `n`.
fn key_entry(n: usize) -> String {
    indented(
        &format!(
            "- keys:\n    publicKeys: |-\n{}\n    rekor: {{ignoreTlog: true}}",
            indented(KEY, 8)
        ),
        n,
    )
}

/// A condition of a `provenance` attestation.
const CONDITIONS: &str = "        conditions:\n        - all:\n          - key: '{{ invocation.configSource.uri }}'\n            operator: Equals\n            value: 'git+https://github.com/acme/*'\n            message: built from acme's repositories\n";

/// ghcr.io and quay.io allowed; images of ghcr.io/acme verified by the
/// entry `entry` (indented by four, a list item).
fn policy(entry: &str) -> String {
    cluster_policy(&format!(
        "  - name: registries\n    validate: {{pattern: {{spec: {{containers: [{{image: 'ghcr.io/* | quay.io/*'}}]}}}}}}\n  - name: signed\n    match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}\n    verifyImages:\n{entry}"
    ))
}

/// An entry signed by the key, with these attestations (indented by six).
fn signed_entry(attestations: &str) -> String {
    format!(
        "    - imageReferences: ['ghcr.io/acme/*']\n      attestors:\n      - entries:\n{}\n      attestations:\n{attestations}",
        key_entry(8)
    )
}

/// One provenance attestation signed by the key, with `extra` lines.
fn provenance(extra: &str) -> String {
    format!(
        "      - type: https://slsa.dev/provenance/v0.2\n        attestors:\n        - entries:\n{}\n{extra}",
        key_entry(10)
    )
}

#[test]
fn a_verify_images_attestation_becomes_the_rules() {
    let import = import_yaml(&policy(&signed_entry(&provenance(CONDITIONS))));
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    assert!(rule.requires_signature());
    assert_eq!(rule.tlog, TlogSetting::Ignore);
    let requirements = rule.attestations().requirements();
    assert_eq!(requirements.len(), 1, "{}", import.policy_yaml);
    assert_eq!(
        requirements[0].predicate_type,
        "https://slsa.dev/provenance/v0.2"
    );
    assert_eq!(requirements[0].checks.len(), 1);
    assert_eq!(
        requirements[0].checks[0].message.as_deref(),
        Some("built from acme's repositories")
    );
    let cel = requirements[0].checks[0].condition.source();
    let uri = |u: &str| json!({"invocation": {"configSource": {"uri": u}}});
    assert!(holds(
        cel,
        &uri("git+https://github.com/acme/app@refs/heads/main")
    ));
    assert!(!holds(cel, &uri("git+https://github.com/evil/app")));
    assert!(!holds(cel, &json!({"invocation": {}})));
    // Read as Kyverno read it: the .att tag, every statement held to the
    // conditions; no meaning change left to report.
    assert!(requirements[0].every);
    assert_eq!(requirements[0].stores, vec![crate::attestation::Store::Att]);
    assert!(
        findings(&import, FindingKind::Changed).is_empty(),
        "{:?}",
        findings(&import, FindingKind::Changed)
    );
    let notes = findings(&import, FindingKind::Note);
    assert!(
        notes.iter().any(|f| f.path.ends_with("attestations[0]")
            && f.message
                .contains("at least one https://slsa.dev/provenance/v0.2 statement")
            && f.message
                .contains("every one there must meet the conditions")),
        "{notes:?}"
    );
    // Images outside the verification need nothing, as before.
    assert!(rule_of(&import, "ghcr.io/other/x:1")
        .unwrap()
        .attestations()
        .is_empty());
}

#[test]
fn each_entry_kyverno_needed_is_a_requirement() {
    let two = format!(
        "      - type: https://slsa.dev/provenance/v0.2\n        attestors:\n        - entries:\n{}\n          - keyless: {{subject: 'https://github.com/acme/*', issuer: 'https://token.actions.githubusercontent.com'}}\n",
        key_entry(10)
    );
    // No count: every entry must pass, so each is a requirement.
    let import = import_yaml(&policy(&signed_entry(&two)));
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    let names: Vec<&str> = rule
        .attestations()
        .requirements()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["attestation-0", "attestation-0-signer-2"]);
    assert!(import
        .policy_yaml
        .contains("subjectRegExp: \"https://github\\\\.com/acme/.*\""));
    assert!(findings(&import, FindingKind::Changed)
        .iter()
        .any(|f| f.message.contains("another keyless identity")));
    // count: 1: Kyverno stopped at the first entry; the second never counted.
    let import = import_yaml(&policy(&signed_entry(&two.replace(
        "        - entries:",
        "        - count: 1\n          entries:",
    ))));
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    assert_eq!(rule.attestations().requirements().len(), 1);
    assert!(findings(&import, FindingKind::Note)
        .iter()
        .any(|f| f.message.contains("never consulted")));
}

#[test]
fn attestations_alone_check_no_signature_of_the_image() {
    let entry = format!(
        "    - imageReferences: ['ghcr.io/acme/*']\n      attestations:\n{}",
        provenance("")
    );
    let import = import_yaml(&policy(&entry));
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    assert!(!rule.requires_signature(), "{}", import.policy_yaml);
    assert_eq!(rule.attestations().requirements().len(), 1);
    assert_eq!(
        rule.attestations().wanted().attestations[0]
            .signers
            .keys
            .len(),
        1
    );
    assert!(import.policy_yaml.contains("verify: none"));
}

#[test]
fn type_wins_and_the_rule_has_one_tlog() {
    // `type` over the older `predicateType`; the attestation's signer
    // checks the log (Kyverno's default), the image's does not: the rule
    // checks it for both, and says so.
    let attestation = provenance("").replace(
        "      - type: https://slsa.dev/provenance/v0.2\n",
        "      - type: https://slsa.dev/provenance/v1\n        predicateType: https://slsa.dev/provenance/v0.2\n",
    );
    let import = import_yaml(&policy(&signed_entry(
        &attestation.replace("              rekor: {ignoreTlog: true}\n", ""),
    )));
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    assert_eq!(
        rule.attestations().requirements()[0].predicate_type,
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(rule.tlog, TlogSetting::Required, "{}", import.policy_yaml);
    assert!(findings(&import, FindingKind::Stricter)
        .iter()
        .any(|f| f.message.contains("one tlog setting per rule") && f.message.contains("ignore")));
}

/// ALLOW as Kyverno read it.
const ALLOW: &str = "ghcr.io/* | quay.io/*";

#[test]
fn what_has_no_imgate_equivalent_denies_the_images_it_covered() {
    let context = policy(&signed_entry(&provenance(
        "        conditions: [{all: [{key: '{{ registries.data.allowed }}', operator: Equals, value: x}]}]\n",
    )))
    .replace("    match: {any: [{resources: {kinds: [Pod]}}]}\n    verifyImages:", "    match: {any: [{resources: {kinds: [Pod]}}]}\n    context: [{name: registries, configMap: {name: r, namespace: kyverno}}]\n    verifyImages:");
    for (yaml, path, why) in [
        (policy(&signed_entry(&provenance("").replace("type: https://slsa.dev/provenance/v0.2", "predicateType: slsaprovenance"))), "attestations[0].predicateType", "predicate type URI"),
        (policy(&signed_entry(&provenance("").replace("type: https://slsa.dev/provenance/v0.2", "type: cosign.sigstore.dev/attestation/v1"))), "attestations[0].type", "predicate type URI"),
        (policy(&signed_entry("      - type: https://slsa.dev/provenance/v0.2\n")), "attestations[0].attestors", "no attestors"),
        (policy(&signed_entry(&provenance("        name: x\n        repository: ghcr.io/sigs\n"))), "attestations[0].repository", "not understood"),
        (policy(&signed_entry(&provenance("").replace("        - entries:", "        - count: 3\n          entries:"))), "attestations[0].attestors[0]", "3 entries must pass"),
        (policy(&signed_entry(&provenance("").replace("          - keys:", "          - annotations: {env: prod}\n            keys:"))), "entries[0].annotations", "annotations"),
        (policy(&signed_entry("      - type: https://slsa.dev/provenance/v0.2\n        attestors: [{entries: [{attestor: {entries: []}}]}]\n")), "entries[0].attestor", "nested attestors"),
        (policy(&signed_entry(&provenance(&CONDITIONS.replace("'git+https://github.com/acme/*'", "'{{ request.object.metadata.name }}'")))), "conditions[0].all[0].value", "templated"),
        (policy(&signed_entry(&provenance("")).replacen("      attestors:", "      type: SigstoreBundle\n      attestors:", 1)), "verifyImages[0].attestations", "SigstoreBundle"),
        (context, "conditions[0].all[0].key", "Kyverno's context"),
    ] {
        let import = import_yaml(&yaml);
        let refused = findings(&import, FindingKind::Refused);
        assert!(
            refused.iter().any(|f| f.path.ends_with(path) && f.message.contains(why)),
            "{path} ({why}): {refused:#?}\n{yaml}"
        );
        // ghcr.io met the images the refused verification covered: it is
        // no longer trusted; quay.io is.
        assert!(!admits(&import, "ghcr.io/acme/app:1"), "{path}");
        assert!(!admits(&import, "ghcr.io/other/app:1"), "{path}");
        assert!(admits(&import, "quay.io/x/y:1"), "{path}");
        assert_never_more_permissive(&import, |r| kyverno_admits(ALLOW, r), &probes(&[]), &[""]);
        // What was not carried over has no meaning change to report.
        assert!(
            findings(&import, FindingKind::Changed).iter().all(|f| !f.path.contains("attestations")),
            "{path}"
        );
    }
}

/// An ImageValidatingPolicy for ghcr.io/acme with the `ci` key attestor,
/// these attestations and validations (indented by two, list items).
fn ivpol(attestations: &str, validations: &str) -> String {
    format!(
        "apiVersion: policies.kyverno.io/v1alpha1\nkind: ImageValidatingPolicy\nmetadata: {{name: attested}}\nspec:\n  validationActions: [Deny]\n  matchConstraints:\n    resourceRules: [{{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}}]\n  matchImageReferences:\n  - glob: 'ghcr.io/acme/*'\n  attestors:\n  - name: ci\n    cosign:\n      key:\n        data: |\n{}\n      ctlog: {{insecureIgnoreTlog: true}}\n  attestations:\n{attestations}\n  validations:\n{validations}",
        indented(KEY, 10)
    )
}

const PROVENANCE: &str =
    "  - name: provenance\n    intoto: {type: 'https://slsa.dev/provenance/v1'}";
const SIGNED: &str = "  - expression: images.containers.map(image, verifyAttestationSignatures(image, attestations.provenance, [attestors.ci])).all(e, e > 0)";
const PAYLOAD: &str = "  - expression: \"images.containers.map(image, extractPayload(image, attestations.provenance).buildDefinition.externalParameters.workflow.repository == 'https://github.com/acme/app').all(e, e)\"\n    message: built from acme/app";

#[test]
fn image_validating_policy_attestations() {
    let import = import_yaml(&ivpol(PROVENANCE, &format!("{SIGNED}\n{PAYLOAD}\n")));
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    // Only the attestation was checked, not the image's signature.
    assert!(!rule.requires_signature(), "{}", import.policy_yaml);
    let requirement = &rule.attestations().requirements()[0];
    assert_eq!(requirement.name, "provenance");
    assert_eq!(
        requirement.checks[0].message.as_deref(),
        Some("built from acme/app")
    );
    let cel = requirement.checks[0].condition.source();
    let repo = |r: &str| json!({"buildDefinition": {"externalParameters": {"workflow": {"repository": r}}}});
    assert!(holds(cel, &repo("https://github.com/acme/app")));
    assert!(!holds(cel, &repo("https://github.com/evil/app")));
    assert_eq!(rule.tlog, TlogSetting::Ignore);
    assert!(requirement.every);
    assert!(findings(&import, FindingKind::Stricter)
        .iter()
        .any(|f| f.message.contains("the last an attestor verified")));
    // With the image's signature checked too.
    let both = import_yaml(&ivpol(
        PROVENANCE,
        &format!("  - expression: images.containers.map(image, verifyImageSignatures(image, [attestors.ci])).all(e, e > 0)\n{SIGNED}\n"),
    ));
    let rule = rule_of(&both, "ghcr.io/acme/app:1").unwrap();
    assert!(rule.requires_signature());
    assert_eq!(rule.attestations().requirements().len(), 1);
    assert!(rule.attestations().requirements()[0].checks.is_empty());
}

#[test]
fn image_validating_policy_attestations_refused() {
    for (attestations, validations, why) in [
        (PROVENANCE.to_string(), PAYLOAD.to_string(), "no validation verifies"),
        (PROVENANCE.to_string(), format!("{SIGNED}\n{}", SIGNED.replace("[attestors.ci]", "[attestors.ci, attestors.other]")), "different attestors"),
        (PROVENANCE.replace("name: provenance", "name: sbom"), SIGNED.to_string(), "no attestation named provenance"),
        (PROVENANCE.replace("'https://slsa.dev/provenance/v1'", "slsaprovenance1"), SIGNED.to_string(), "not a predicate type URI"),
        (PROVENANCE.to_string(), format!("{SIGNED}\n  - expression: \"images.containers.map(image, extractPayload(image, attestations.provenance).builder.id == object.metadata.name).all(e, e)\""), "reads `object`"),
    ] {
        let import = import_yaml(&ivpol(&attestations, &format!("{validations}\n")));
        let refused = findings(&import, FindingKind::Refused);
        assert!(refused.iter().any(|f| f.message.contains(why)), "{why}: {refused:#?}");
        assert!(!admits(&import, "ghcr.io/acme/app:1"), "{why}\n{}", import.policy_yaml);
    }
}
