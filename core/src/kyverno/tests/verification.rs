//! `verifyImages` and ImageValidatingPolicy attestors into imgate rules.

use super::*;
use crate::policy::TlogSetting;

fn indented(text: &str, spaces: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}", " ".repeat(spaces)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A policy trusting ghcr.io and quay.io with one verifyImages entry.
fn verify_policy(entry: &str) -> String {
    cluster_policy(&format!(
        "  - name: registries\n    validate: {{pattern: {{spec: {{containers: [{{image: 'ghcr.io/* | quay.io/*'}}]}}}}}}\n  - name: signed\n    match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}\n    verifyImages:\n{}\n",
        indented(entry, 4)
    ))
}

fn key_entry(extra: &str) -> String {
    format!(
        "- imageReferences: ['ghcr.io/acme/*']\n  attestors:\n  - count: 1\n    entries:\n    - keys:\n        publicKeys: |-\n{}\n{extra}",
        indented(KEY, 10)
    )
}

#[test]
fn a_key_attestor_becomes_a_rule_with_the_key() {
    let import = import_yaml(&verify_policy(&key_entry("")));
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    assert_eq!(rule.name, "test-signed");
    assert_eq!(rule.public_keys().len(), 1);
    // Kyverno checked key signatures against Rekor by default.
    assert_eq!(rule.tlog, TlogSetting::Required);
    assert!(import
        .report
        .findings
        .iter()
        .any(|f| f.message.contains("Rekor")));
    // Other images of the allow-list need no signature, as before.
    assert!(!rule_of(&import, "ghcr.io/other/app:1")
        .unwrap()
        .requires_signature());
    assert!(!rule_of(&import, "quay.io/x/y:1")
        .unwrap()
        .requires_signature());
    assert_eq!(import.report.summary.pin_digests, "pods");
    let import = import_yaml(&verify_policy(&key_entry(
        "        rekor: {ignoreTlog: true}\n",
    )));
    assert_eq!(
        rule_of(&import, "ghcr.io/acme/app:1").unwrap().tlog,
        TlogSetting::Ignore
    );
}

#[test]
fn keyless_identities_with_wildcards_regexps_and_extensions() {
    let import = import_yaml(&verify_policy(
        "- imageReferences: ['ghcr.io/acme/*']\n  attestors:\n  - entries:\n    - keyless:\n        subject: 'https://github.com/acme/*/.github/workflows/release.yml@refs/tags/*'\n        issuer: https://token.actions.githubusercontent.com\n        additionalExtensions: {githubWorkflowRepository: acme/app}\n        ctlog: {ignoreSCT: true}\n",
    ));
    let yaml = &import.policy_yaml;
    assert!(yaml.contains("subjectRegExp: \"https://github\\\\.com/acme/.*/\\\\.github/workflows/release\\\\.yml@refs/tags/.*\""), "{yaml}");
    assert!(
        yaml.contains("github-workflow-repository: \"acme/app\""),
        "{yaml}"
    );
    assert!(findings(&import, FindingKind::Stricter)
        .iter()
        .any(|f| f.message.contains("SCT")));
    let import = import_yaml(&verify_policy(
        "- imageReferences: ['ghcr.io/acme/*']\n  attestors:\n  - entries:\n    - keyless:\n        subjectRegExp: 'https://github\\.com/acme/.+'\n        issuerRegExp: 'https://token\\.actions\\..*'\n",
    ));
    assert!(import
        .policy_yaml
        .contains("subjectRegExp: \"https://github\\\\.com/acme/.+\""));
    // cosign matched the expression anywhere in the identity; imgate anchors it.
    assert!(findings(&import, FindingKind::Stricter)
        .iter()
        .any(|f| f.message.contains("anchors")));
}

#[test]
fn what_cannot_be_verified_is_denied() {
    for (entry, why) in [
        (key_entry("").replace("count: 1", "count: 2").replace("    entries:\n", "    entries:\n    - keyless: {subject: a, issuer: b}\n"), "signers must have signed"),
        ("- imageReferences: ['ghcr.io/acme/*']\n  attestors: [{entries: [{keys: {kms: 'awskms:///alias/ci'}}]}]\n".into(), "KMS"),
        ("- imageReferences: ['ghcr.io/acme/*']\n  attestors: [{entries: [{keys: {publicKeys: 'k8s://ci/cosign-pub'}}]}]\n".into(), "Kubernetes Secret"),
        (key_entry("  attestations:\n  - predicateType: https://slsa.dev/provenance/v1\n    conditions: [{all: [{key: '{{ builder.id }}', operator: Equals, value: x}]}]\n"), "no attestors"),
        ("- imageReferences: ['ghcr.io/acme/*']\n  type: Notary\n  attestors: [{entries: [{certificates: {cert: x}}]}]\n".into(), "cosign"),
    ] {
        let import = import_yaml(&verify_policy(&entry));
        let refused = findings(&import, FindingKind::Refused);
        assert!(refused.iter().any(|f| f.message.contains(why)), "{why}: {refused:?}");
        // ghcr.io/** met the images the refused verification covered: it is
        // no longer trusted; quay.io is.
        assert!(!admits(&import, "ghcr.io/acme/app:1"), "{why}");
        assert!(!admits(&import, "ghcr.io/other/app:1"), "{why}");
        assert!(admits(&import, "quay.io/x/y:1"), "{why}");
        assert!(import.policy_yaml.contains("# Not carried over"), "{why}");
    }
}

#[test]
fn skips_digests_and_audit() {
    let import = import_yaml(&verify_policy(&key_entry("").replace(
        "- imageReferences: ['ghcr.io/acme/*']\n",
        "- imageReferences: ['ghcr.io/acme/*']\n  skipImageReferences: ['ghcr.io/acme/public/*']\n  mutateDigest: false\n  verifyDigest: false\n  required: false\n",
    )));
    let public = rule_of(&import, "ghcr.io/acme/public/site:1").unwrap();
    assert!(!public.requires_signature(), "{}", import.policy_yaml);
    assert!(rule_of(&import, "ghcr.io/acme/app:1")
        .unwrap()
        .requires_signature());
    assert_eq!(import.report.summary.pin_digests, "none");
    assert_eq!(
        findings(&import, FindingKind::Stricter).len(),
        2,
        "{}",
        import.report.to_text()
    );
    let audit = import_yaml(
        &verify_policy(&key_entry("  failureAction: Audit\n  mutateDigest: true\n")).replace(
            "validationFailureAction: Enforce",
            "validationFailureAction: Audit",
        ),
    );
    assert_eq!(audit.report.summary.mode, "audit");
    assert!(findings(&audit, FindingKind::Changed)
        .iter()
        .any(|f| f.message.contains("Audit with mutateDigest")));
}

#[test]
fn verification_alone_trusts_what_it_verifies() {
    let import = import_yaml(&cluster_policy(&format!(
        "  - name: signed\n    verifyImages:\n{}\n",
        indented(&key_entry(""), 4)
    )));
    assert_eq!(
        import.report.summary.trusted_registries,
        vec!["ghcr.io/acme/**"]
    );
    assert!(rule_of(&import, "ghcr.io/acme/team/app:1")
        .unwrap()
        .requires_signature());
    assert!(!admits(&import, "quay.io/x:1"));
}

#[test]
fn image_validating_policy_with_a_cosign_key() {
    let yaml = format!(
        "apiVersion: policies.kyverno.io/v1alpha1\nkind: ImageValidatingPolicy\nmetadata: {{name: signed}}\nspec:\n  validationActions: [Deny]\n  matchConstraints:\n    resourceRules: [{{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [pods]}}]\n  matchImageReferences:\n  - glob: 'ghcr.io/acme/*'\n  attestors:\n  - name: ci\n    cosign:\n      key:\n        data: |\n{}\n      ctlog: {{insecureIgnoreTlog: true}}\n  - name: release\n    cosign:\n      keyless:\n        identities:\n        - {{subject: release@acme.example, issuer: https://accounts.google.com}}\n  validations:\n  - expression: images.containers.map(image, verifyImageSignatures(image, [attestors.ci, attestors.release])).all(e, e > 0)\n",
        indented(KEY, 10)
    );
    let import = import_yaml(&yaml);
    let rule = rule_of(&import, "ghcr.io/acme/app:1").unwrap();
    assert_eq!(rule.public_keys().len(), 1);
    assert_eq!(rule.tlog, TlogSetting::Ignore);
    assert!(import
        .policy_yaml
        .contains("subject: \"release@acme.example\""));
    assert!(!admits(&import, "quay.io/x:1"));
    // Kyverno verified init and ephemeral images? Not with images.containers.
    assert!(findings(&import, FindingKind::Stricter)
        .iter()
        .any(|f| f.message.contains("some container lists")));
    // An OCI referrer artifact is no in-toto attestation: refused, denied.
    let with_attestation = yaml.replace(
        "  validations:\n",
        "  attestations: [{name: sbom, referrer: {type: sbom/cyclone-dx}}]\n  validations:\n  - expression: images.containers.map(image, verifyAttestationSignatures(image, attestations.sbom, [attestors.ci])).all(e, e > 0)\n",
    );
    let err_or_import = try_import(&with_attestation);
    match err_or_import {
        Ok(import) => {
            assert!(findings(&import, FindingKind::Refused)
                .iter()
                .any(|f| f.message.contains("referrer")));
            assert!(!admits(&import, "ghcr.io/acme/app:1"));
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn exclusions_still_hold_for_what_is_verified() {
    // No allow-list, a verification of ghcr.io, and a rule excluding one
    // repository: ghcr.io/** signed would admit what Kyverno denied.
    let import = import_yaml(&cluster_policy(&format!(
        "  - name: no-evil\n    validate: {{pattern: {{spec: {{containers: [{{image: '!ghcr.io/evil/*'}}]}}}}}}\n  - name: signed\n    verifyImages:\n{}\n",
        indented(&key_entry("").replace("ghcr.io/acme/*", "ghcr.io/*"), 4)
    )));
    assert!(!admits(&import, "ghcr.io/evil/app:1"));
    assert!(!admits(&import, "ghcr.io/acme/app:1"));
    let refused = findings(&import, FindingKind::Refused);
    assert!(
        refused
            .iter()
            .any(|f| f.message.starts_with("ghcr.io/** is not trusted")
                && f.message.contains("ghcr.io/evil")),
        "{refused:?}"
    );
}
