//! Whole imports: the real cluster's policy, every construct the importer
//! reads (translated or refused as the report says), policies it does not
//! understand (never more permissive), and hostile input.

mod attestation;
mod attestation_import;
mod bad_input;
mod constructs;
mod fixture;
mod unknown;
mod verification;

use super::wildcard::wildcard_match;
use super::*;
use crate::reference::ImageRef;

pub(super) const DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// An ECDSA P-256 public key (Kyverno's documentation's test key).
pub(super) const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8nXRh950IZbRj8Ra/N9sbqOPZrfM\n5/KAQN0/KjHcorm/J5yctVd7iEcnessRQjU917hmKO6JWVGHpDguIyakZA==\n-----END PUBLIC KEY-----";

/// Whether the imgate condition `cel` holds on a statement whose predicate
/// is `predicate`, evaluated the way reviews evaluate it.
pub(super) fn holds(cel: &str, predicate: &serde_json::Value) -> bool {
    use crate::attestation::cel::{Condition, Inputs, Now, Outcome};
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "app", "digest": {"sha256": "ab"}}],
        "predicate": predicate,
    });
    let inputs = Inputs::new(
        &serde_json::to_vec(&statement).unwrap(),
        "https://slsa.dev/provenance/v0.2",
        &statement["subject"][0],
        &serde_json::json!({"kind": "key", "key": "k", "identity": "", "issuer": ""}),
    )
    .unwrap();
    let condition = Condition::compile(cel).unwrap_or_else(|e| panic!("{cel}: {e}"));
    matches!(
        condition.evaluate(&inputs, &Now::from_unix(1_700_000_000), 1_000_000),
        Outcome::Holds
    )
}

pub(super) fn try_import(yaml: &str) -> Result<Import, ImportError> {
    import(&[Source {
        name: "input.yaml".into(),
        text: yaml.into(),
    }])
}

pub(super) fn import_yaml(yaml: &str) -> Import {
    let import = try_import(yaml).unwrap_or_else(|e| panic!("{e}: {e:?}"));
    // What was written loads again with imgate's own loader, unchanged.
    let again = Policy::from_yaml(&import.policy_yaml, "again").unwrap();
    assert_eq!(again.rules.len(), import.policy.rules.len());
    import
}

/// A ClusterPolicy in Enforce mode with these rules (YAML list items,
/// indented by two).
pub(super) fn cluster_policy(rules: &str) -> String {
    format!(
        "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {{name: test}}\nspec:\n  validationFailureAction: Enforce\n  rules:\n{rules}"
    )
}

/// One rule matching Pods with this `validate` body (indented by six).
pub(super) fn validate_rule(body: &str) -> String {
    cluster_policy(&format!(
        "  - name: images\n    match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}\n    validate:\n{body}"
    ))
}

/// Whether the written policy admits `reference` (trusted registry and a
/// rule; a rule that verifies still needs a signature).
pub(super) fn admits(import: &Import, reference: &str) -> bool {
    let image = ImageRef::parse(reference).unwrap_or_else(|e| panic!("{reference}: {e}"));
    import.policy.is_trusted(&image) && import.policy.rule_for(&image).is_some()
}

/// The rule that decides `reference`.
pub(super) fn rule_of<'a>(import: &'a Import, reference: &str) -> Option<&'a crate::policy::Rule> {
    let image = ImageRef::parse(reference).ok()?;
    import
        .policy
        .is_trusted(&image)
        .then(|| import.policy.rule_for(&image))
        .flatten()
}

pub(super) fn findings(import: &Import, kind: FindingKind) -> Vec<&Finding> {
    import
        .report
        .findings
        .iter()
        .filter(|f| f.kind == kind)
        .collect()
}

/// Kyverno's reading of a pattern string (`|` alternatives of `&`-joined,
/// possibly negated wildcards) over an image as written: written here from
/// Kyverno's rules, not with the importer's reader.
pub(super) fn kyverno_admits(pattern: &str, image: &str) -> bool {
    pattern.split('|').any(|alternative| {
        alternative.trim().split('&').all(|c| {
            let c = c.trim();
            match c.strip_prefix('!') {
                Some(negated) => !wildcard_match(negated.trim(), image),
                None => wildcard_match(c, image),
            }
        })
    })
}

/// Every way a pod spec may write the image `reference` names, with `tag`
/// and the test digest.
fn writings(reference: &str, tags: &[&str]) -> Vec<String> {
    let image = ImageRef::parse(reference).unwrap();
    let mut names = vec![image.name()];
    if image.registry == "docker.io" {
        names.push(image.repository.clone());
        if let Some(official) = image.repository.strip_prefix("library/") {
            names.push(official.to_string());
            names.push(format!("docker.io/{official}"));
        }
    }
    let mut out = Vec::new();
    for name in names {
        for tag in tags {
            out.push(format!("{name}{tag}@{DIGEST}"));
        }
    }
    out
}

/// Never more permissive: every reference in `references` the imgate policy
/// admits names an image the Kyverno policy (`kyverno`, over references as
/// written) admitted at that digest, written some way.
pub(super) fn assert_never_more_permissive(
    import: &Import,
    kyverno: impl Fn(&str) -> bool,
    references: &[String],
    tags: &[&str],
) {
    let mut checked = 0;
    for reference in references {
        if ImageRef::parse(reference).is_err() || !admits(import, reference) {
            continue;
        }
        checked += 1;
        let ways = writings(reference, tags);
        assert!(
            ways.iter().any(|w| kyverno(w)),
            "imgate admits {reference}, which Kyverno admitted in none of {ways:?}\n{}",
            import.policy_yaml
        );
    }
    assert!(checked > 0, "no reference was admitted: nothing checked");
}

/// References that probe boundaries, for the property above.
pub(super) fn probes(extra: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = [
        "nginx:1.25",
        "nginx",
        "library/nginx",
        "docker.io/library/nginx:1",
        "nginx.evil.example/x:1",
        "nginx:5000/x",
        "docker.io/evil/x:1",
        "evil/x",
        "ghcr.io/acme/app:1",
        "ghcr.io/acme/team/app",
        "ghcr.io/other/app:latest",
        "ghcr.io.evil.example/x",
        "quay.io/org/app:v1",
        "registry.example.com/x:1",
        "registry.example.com.evil.example/x",
        "10.0.20.10/app:1",
        "10.0.20.10:5000/app:1",
        "10.0.20.100:5000/app",
        "localhost:5000/app",
        "busybox:latest",
        "alpine:3.20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.extend(extra.iter().map(|s| s.to_string()));
    out
}
