//! Policy parsing, validation and matching tests.

use std::path::PathBuf;

use rstest::rstest;

use super::*;
use crate::registry::RegistrySettings;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/policy")
}

fn key_path() -> String {
    fixtures().join("ci.pub").display().to_string()
}

fn image(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

/// A minimal valid policy with `extra` appended (YAML flow at top level).
fn minimal(rules: &str) -> String {
    format!("trustedRegistries: [registry.example.com/**, docker.io/library/*]\nrules:\n{rules}")
}

#[test]
fn the_fixture_policy_loads_with_every_field() {
    let policy = Policy::load(&fixtures().join("policy.yaml")).unwrap();
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(policy.pin_digests, PinScope::Pods);
    assert_eq!(policy.on_registry_error, OnRegistryError::Deny);
    assert_eq!(policy.namespaces.exclude, ["kube-system", "imgate-system"]);
    assert_eq!(policy.rules.len(), 2);
    assert_eq!(policy.rules[0].public_keys().len(), 1);
    assert!(policy.rules[0].public_keys()[0].name().ends_with("ci.pub"));
    assert!(policy.rules[1].public_keys().is_empty());
    assert!(!policy.rules[1].requires_signature());
    assert_eq!(policy.cache.verified_ttl.get(), Duration::from_secs(600));
    assert_eq!(policy.cache.denied_ttl.get(), Duration::from_secs(5));
    assert_eq!(policy.cache.max_entries, 1000);
    assert_eq!(policy.limits.max_images_per_object, 64);
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    assert_eq!(
        policy.source_name(),
        fixtures().join("policy.yaml").display().to_string()
    );
}

#[test]
fn defaults_are_the_safe_ones() {
    let text = minimal("  - {name: up, images: [nginx], verify: none}\n");
    let policy = Policy::from_yaml(&text, "t").unwrap();
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(policy.pin_digests, PinScope::Pods);
    assert_eq!(policy.on_registry_error, OnRegistryError::Deny);
    assert_eq!(policy.cache.tag_ttl.get(), Duration::from_secs(30));
}

#[test]
fn matching_uses_trusted_registries_and_first_rule_wins() {
    let text = minimal(&format!(
        "  - {{name: special, images: [registry.example.com/special/*], verify: none}}\n  - {{name: ours, images: [registry.example.com/**], keys: [{{file: {}}}]}}\n",
        key_path()
    ));
    let policy = Policy::from_yaml(&text, "t").unwrap();
    assert!(policy.is_trusted(&image("registry.example.com/a/b:1")));
    assert!(!policy.is_trusted(&image("registry.example.com.evil.io/a:1")));
    assert!(policy.is_trusted(&image("nginx")));
    assert!(!policy.is_trusted(&image("bitnami/nginx")));
    assert_eq!(
        policy
            .rule_for(&image("registry.example.com/special/x"))
            .map(|r| r.name.as_str()),
        Some("special")
    );
    assert_eq!(
        policy
            .rule_for(&image("registry.example.com/special/x/y"))
            .map(|r| r.name.as_str()),
        Some("ours")
    );
    assert!(policy.rule_for(&image("nginx")).is_none());
}

#[test]
fn namespaces_are_excluded_by_name_or_labels() {
    let policy = Policy::load(&fixtures().join("policy.yaml")).unwrap();
    let none = BTreeMap::new();
    assert!(policy.namespace_excluded("kube-system", &none));
    assert!(!policy.namespace_excluded("default", &none));
    let labels: BTreeMap<String, String> =
        [("imgate.dev/ignore".to_string(), "true".to_string())].into();
    assert!(policy.namespace_excluded("default", &labels));
    assert!(policy.uses_namespace_labels());
}

#[test]
fn client_config_merges_registry_settings() {
    let policy = Policy::load(&fixtures().join("policy.yaml")).unwrap();
    let config = policy.client_config(ClientConfig::default());
    assert!(config.registries["localhost:5000"].http);
    let mut base = ClientConfig::default();
    base.registries.insert(
        "registry.example.com".into(),
        RegistrySettings {
            http: false,
            ca_file: Some("/ca.pem".into()),
        },
    );
    let merged = policy.client_config(base);
    assert_eq!(
        merged.registries["registry.example.com"].ca_file,
        Some(PathBuf::from("/ca.pem"))
    );
    assert!(merged.registries["localhost:5000"].http);
}

#[test]
fn fingerprints_change_with_what_decides_a_verdict() {
    let key = key_path();
    let other = fixtures().join("other.pub").display().to_string();
    let fp = |rule: &str| {
        Policy::from_yaml(&minimal(rule), "t").unwrap().rules[0]
            .fingerprint()
            .to_string()
    };
    let base = fp(&format!(
        "  - {{name: ours, images: [registry.example.com/**], keys: [{{file: {key}}}]}}\n"
    ));
    assert_eq!(base.len(), 64);
    assert_eq!(
        base,
        fp(&format!(
            "  - {{name: ours, images: [registry.example.com/**], keys: [{{file: {key}}}]}}\n"
        ))
    );
    for changed in [
        format!("  - {{name: ours, images: [registry.example.com/**], keys: [{{file: {other}}}]}}\n"),
        format!("  - {{name: ours, images: [registry.example.com/**], keys: [{{file: {key}}}], annotations: {{env: prod}}}}\n"),
        format!("  - {{name: ours, images: [registry.example.com/**], keys: [{{file: {key}}}], matchRepository: true}}\n"),
        format!("  - {{name: ours, images: [registry.example.com/x/**], keys: [{{file: {key}}}]}}\n"),
    ] {
        assert_ne!(base, fp(&changed), "{changed}");
    }
}

#[test]
fn inline_keys_load_and_are_named_after_their_rule() {
    let pem = std::fs::read_to_string(key_path()).unwrap();
    let indented: String = pem.lines().map(|l| format!("          {l}\n")).collect();
    let text = minimal(&format!(
        "  - name: ours\n    images: [registry.example.com/**]\n    keys:\n      - publicKey: |\n{indented}"
    ));
    let policy = Policy::from_yaml(&text, "t").unwrap();
    assert_eq!(policy.rules[0].public_keys()[0].name(), "rule ours key 1");
}

#[test]
fn relative_key_paths_are_taken_from_the_policy_directory() {
    // policy.yaml names `ci.pub`; loading from another working directory works.
    let policy = Policy::load(&fixtures().join("policy.yaml")).unwrap();
    assert_eq!(
        policy.rules[0].keys[0].file.as_deref(),
        Some(fixtures().join("ci.pub").display().to_string().as_str())
    );
}

#[test]
fn rules_outside_trusted_registries_are_warned_about() {
    let text = format!(
        "trustedRegistries: [registry.example.com/team/*]\nrules:\n  - {{name: ours, images: [registry.example.com/**], keys: [{{file: {}}}]}}\n",
        key_path()
    );
    let policy = Policy::from_yaml(&text, "t").unwrap();
    assert_eq!(policy.warnings().len(), 1);
    assert!(
        policy.warnings()[0].starts_with("rules[0].images[0]"),
        "{:?}",
        policy.warnings()
    );
}

/// Each bad policy must be refused with an error naming `field`.
#[rstest]
#[case::unknown_top_level("trustedRegistries: [a.io/**]\nrulez: []\n", "`rulez`,")]
#[case::unknown_rule_field("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: none, colour: red}\n", "rules[0]")]
#[case::unknown_key_field(
    "trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], keys: [{fiel: x}]}\n",
    "rules[0].keys[0]"
)]
#[case::unknown_mode("mode: strict\ntrustedRegistries: [a.io/**]\n", "mode")]
#[case::unknown_pin_scope("pinDigests: some\ntrustedRegistries: [a.io/**]\n", "pinDigests")]
#[case::unknown_on_error(
    "onRegistryError: maybe\ntrustedRegistries: [a.io/**]\n",
    "onRegistryError"
)]
#[case::unknown_verify(
    "trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: sometimes}\n",
    "rules[0].verify"
)]
#[case::bad_pattern("trustedRegistries: [\"*.io/**\"]\n", "trustedRegistries[0]")]
#[case::bad_rule_pattern(
    "trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [\"a.io/x:v1\"], verify: none}\n",
    "rules[0].images[0]"
)]
#[case::bad_duration(
    "trustedRegistries: [a.io/**]\ncache: {tagTtl: 10 minutes}\n",
    "cache: invalid duration \"10 minutes\":"
)]
#[case::empty_trusted("trustedRegistries: []\n", "trustedRegistries")]
#[case::missing_trusted("mode: enforce\n", "trustedRegistries")]
#[case::verify_none_with_keys("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: none, keys: [{file: x.pub}]}\n", "rules[0].keys")]
#[case::verify_none_with_annotations("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: none, annotations: {a: b}}\n", "rules[0].annotations")]
#[case::signature_without_keys("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: none}\n  - {name: s, images: [a.io/**]}\n", "rules[1].keys")]
#[case::key_with_both_sources("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], keys: [{file: x.pub, publicKey: y}]}\n", "rules[0].keys[0]")]
#[case::unreadable_key("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: none}\n  - {name: s, images: [a.io/**], keys: [{file: /nonexistent/ci.pub}]}\n", "rules[1].keys[0].file")]
#[case::bad_inline_key("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], keys: [{publicKey: not a pem}]}\n", "rules[0].keys[0].publicKey")]
#[case::empty_images(
    "trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [], verify: none}\n",
    "rules[0].images"
)]
#[case::empty_name(
    "trustedRegistries: [a.io/**]\nrules:\n  - {name: \"\", images: [a.io/**], verify: none}\n",
    "rules[0].name"
)]
#[case::duplicate_name("trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: none}\n  - {name: r, images: [a.io/**], verify: none}\n", "rules[1].name")]
#[case::bad_namespace(
    "trustedRegistries: [a.io/**]\nnamespaces: {exclude: [Kube_System]}\n",
    "namespaces.exclude[0]"
)]
#[case::empty_selector(
    "trustedRegistries: [a.io/**]\nnamespaces: {excludeSelector: {}}\n",
    "namespaces.excludeSelector.matchLabels"
)]
#[case::bad_selector("trustedRegistries: [a.io/**]\nnamespaces: {excludeSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}\n", "namespaces.excludeSelector.matchExpressions[0].values")]
#[case::unreadable_ca(
    "trustedRegistries: [a.io/**]\nregistries: {a.io: {caFile: /nonexistent/ca.pem}}\n",
    "registries.\"a.io\".caFile"
)]
#[case::unknown_registry_field(
    "trustedRegistries: [a.io/**]\nregistries: {a.io: {insecure: true}}\n",
    "registries.a.io"
)]
#[case::zero_entries(
    "trustedRegistries: [a.io/**]\ncache: {maxEntries: 0}\n",
    "cache.maxEntries"
)]
#[case::zero_images(
    "trustedRegistries: [a.io/**]\nlimits: {maxImagesPerObject: 0}\n",
    "limits.maxImagesPerObject"
)]
#[case::unknown_limit("trustedRegistries: [a.io/**]\nlimits: {maxImages: 10}\n", "limits")]
#[case::not_yaml("trustedRegistries: [a.io/**\n", "")]
fn bad_policies_name_the_field(#[case] text: &str, #[case] field: &str) {
    let err = Policy::from_yaml(text, "bad.yaml").unwrap_err();
    // As the CLI prints it: the error and its sources.
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(message.starts_with("policy bad.yaml: "), "{message}");
    assert!(
        message.contains(&format!("{field}: ")) || message.contains(&format!("{field} ")),
        "error should name {field:?}: {message}"
    );
}

#[test]
fn fixture_bad_policies_name_the_field_in_their_first_line() {
    for name in ["bad-unknown-field.yaml", "bad-key-file.yaml"] {
        let path = fixtures().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let field = text.lines().next().unwrap().trim_start_matches("# field: ");
        let err = Policy::load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(field) || err.contains(&format!("{field}: ")),
            "{name}: {err} should name {field}"
        );
    }
    let err = Policy::load(&fixtures().join("bad-key-file.yaml")).unwrap_err();
    assert_eq!(err.field(), Some("rules[1].keys[0].file"));
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("does-not-exist.pub"), "{cause}");
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let err = Policy::load(std::path::Path::new("/nonexistent/policy.yaml")).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/policy.yaml"));
}

fn keyless_rule(authority: &str) -> String {
    minimal(&format!(
        "  - name: k8s\n    images: [\"registry.example.com/**\"]\n    keyless:\n{authority}"
    ))
}

fn embedded_root_path() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sigstore/src/trusted_root.json")
        .display()
        .to_string()
}

#[test]
fn keyless_authorities_load_into_the_requirements() {
    let text = keyless_rule(
        "      - subject: krel-trust@k8s-releng-prod.iam.gserviceaccount.com\n        issuer: https://accounts.google.com\n      - subjectRegExp: 'https://github\\.com/example/.+'\n        issuerRegExp: 'https://token\\.actions\\.githubusercontent\\.com'\n        extensions:\n          github-workflow-repository: example/app\n          github-workflow-ref: {regExp: 'refs/tags/v.*'}\n    tlog: required\n",
    );
    let policy = Policy::from_yaml(&text, "t").unwrap();
    let rule = &policy.rules[0];
    assert!(rule.requires_signature());
    let req = rule.requirements();
    assert!(req.keys.is_empty());
    assert_eq!(req.keyless.len(), 2);
    assert_eq!(req.tlog, crate::sigstore::TlogMode::Required);
    let second = &req.keyless[1].identity;
    assert!(second.subject.matches("https://github.com/example/app"));
    assert!(!second.subject.matches("https://github.com/other/app"));
    assert!(second.extensions["github-workflow-ref"].matches("refs/tags/v1.2"));
    assert!(!second.extensions["github-workflow-ref"].matches("refs/heads/main"));
    assert_eq!(
        req.keyless_names()[0],
        "\"krel-trust@k8s-releng-prod.iam.gserviceaccount.com\" from \"https://accounts.google.com\""
    );
}

#[rstest]
#[case::bad_subject_regex(
    "      - {subjectRegExp: '(', issuer: x}\n",
    "rules[0].keyless[0].subjectRegExp"
)]
#[case::bad_issuer_regex(
    "      - {subject: a, issuerRegExp: '[z-a]'}\n",
    "rules[0].keyless[0].issuerRegExp"
)]
#[case::bad_extension_regex(
    "      - {subject: a, issuer: b, extensions: {github-workflow-ref: {regExp: '('}}}\n",
    "rules[0].keyless[0].extensions.github-workflow-ref.regExp"
)]
#[case::unknown_extension(
    "      - {subject: a, issuer: b, extensions: {github-workflow-colour: x}}\n",
    "rules[0].keyless[0].extensions.github-workflow-colour"
)]
#[case::no_subject("      - {issuer: b}\n", "rules[0].keyless[0].subject")]
#[case::both_issuers(
    "      - {subject: a, issuer: b, issuerRegExp: b}\n",
    "rules[0].keyless[0].issuer"
)]
#[case::missing_root(
    "      - {subject: a, issuer: b, trustRoot: /nonexistent/root.json}\n",
    "rules[0].keyless[0].trustRoot"
)]
fn bad_keyless_authorities_name_the_field(#[case] authority: &str, #[case] field: &str) {
    let err = Policy::from_yaml(&keyless_rule(authority), "t").unwrap_err();
    assert_eq!(err.field(), Some(field), "{err}");
}

#[test]
fn a_missing_global_trust_root_names_the_field() {
    let text = format!(
        "trustRoot: /nonexistent/root.json\n{}",
        keyless_rule("      - {subject: a, issuer: b}\n")
    );
    let err = Policy::from_yaml(&text, "t").unwrap_err();
    assert_eq!(err.field(), Some("trustRoot"), "{err}");
    assert!(err.to_string().contains("/nonexistent/root.json"), "{err}");
}

#[test]
fn keyless_with_verify_none_is_refused() {
    let text = minimal(
        "  - {name: k, images: [nginx], verify: none, keyless: [{subject: a, issuer: b}]}\n",
    );
    let err = Policy::from_yaml(&text, "t").unwrap_err();
    assert_eq!(err.field(), Some("rules[0].keyless"), "{err}");
}

#[test]
fn the_fingerprint_covers_keyless_terms_and_the_trust_root() {
    let print = |text: &str| {
        Policy::from_yaml(text, "t").unwrap().rules[0]
            .fingerprint()
            .to_string()
    };
    let base = print(&keyless_rule("      - {subject: a, issuer: b}\n"));
    assert_eq!(
        base,
        print(&keyless_rule("      - {subject: a, issuer: b}\n"))
    );
    for other in [
        keyless_rule("      - {subject: c, issuer: b}\n"),
        keyless_rule("      - {subject: a, issuer: c}\n"),
        keyless_rule("      - {subjectRegExp: a, issuer: b}\n"),
        keyless_rule(
            "      - {subject: a, issuer: b, extensions: {github-workflow-repository: x}}\n",
        ),
        keyless_rule("      - {subject: a, issuer: b}\n    tlog: required\n"),
    ] {
        assert_ne!(base, print(&other), "{other}");
    }
    // Another root file with other content: another fingerprint. (The
    // embedded root's own bytes give the default's.)
    let dir = tempfile::tempdir().unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(crate::sigstore::EMBEDDED_TRUSTED_ROOT).unwrap();
    json["tlogs"] = json["tlogs"].as_array().unwrap()[..1].to_vec().into();
    let other_root = dir.path().join("root.json");
    std::fs::write(&other_root, serde_json::to_vec(&json).unwrap()).unwrap();
    let with_root = |path: &str| {
        print(&format!(
            "trustRoot: {path}\n{}",
            keyless_rule("      - {subject: a, issuer: b}\n")
        ))
    };
    assert_eq!(base, with_root(&embedded_root_path()));
    assert_ne!(base, with_root(&other_root.display().to_string()));
    let per_authority = print(&keyless_rule(&format!(
        "      - {{subject: a, issuer: b, trustRoot: {}}}\n",
        other_root.display()
    )));
    assert_ne!(base, per_authority);
}

#[test]
fn the_homelab_example_verifies_kubernetes_images_by_identity() {
    let policy = Policy::load(&fixtures().join("homelab.yaml")).unwrap();
    let rule = policy
        .rule_for(&image("registry.k8s.io/kube-proxy:v1.31.0"))
        .unwrap();
    assert!(rule.requires_signature());
    let req = rule.requirements();
    assert!(req.keys.is_empty());
    let k8s = &req.keyless[0].identity;
    assert!(k8s
        .subject
        .matches("krel-trust@k8s-releng-prod.iam.gserviceaccount.com"));
    assert!(k8s.issuer.matches("https://accounts.google.com"));
    assert!(policy.warnings().is_empty(), "{:?}", policy.warnings());
    // The policy reference shows this very file.
    let doc = std::fs::read_to_string(fixtures().join("../../docs/policy-reference.md")).unwrap();
    let text = std::fs::read_to_string(fixtures().join("homelab.yaml")).unwrap();
    assert!(
        doc.contains(&text),
        "docs/policy-reference.md lost the homelab example"
    );
}
