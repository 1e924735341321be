//! Scenarios: `imgate verify --policy FILE IMAGE`, "would the cluster admit
//! this image?", answered by the webhook's own engine against the real
//! registry (TLS and token auth) with the real binary: the trusted
//! registries, the matching rule's keys and annotations, `verify: none`,
//! `onRegistryError`, audit mode and namespace exclusions each decide, and
//! the output says which.

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use imgate_keys::SigningKey;
use imgate_tests::registry::free_port;
use imgate_tests::{run_imgate, ImageBuilder, PushWith, Registry, Variant};
use serde_json::Value;

use crate::common::Run;

const PASSWORD: &str = "verify policy";

/// A registry with a signed, an unsigned and a vendor image, and the key.
struct Env {
    registry: Registry,
    dir: tempfile::TempDir,
    /// `HOST/team/app:v1` (signed with env=prod) and its digest.
    signed: (String, String),
    /// `HOST/team/other:v1`, never signed.
    unsigned: String,
    /// `HOST/vendor/tool:v1`, never signed; its rule needs no signature.
    vendor: String,
}

impl Env {
    async fn new() -> Env {
        let registry = Registry::start(Variant::Token)
            .await
            .expect("registry starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate();
        std::fs::write(
            dir.path().join("ci.key"),
            key.to_cosign_pem(PASSWORD.as_bytes()).expect("encrypt"),
        )
        .expect("write key");
        std::fs::write(dir.path().join("ci.pub"), key.public_key().to_pem()).expect("write pub");
        let mut env = Env {
            registry,
            dir,
            signed: (String::new(), String::new()),
            unsigned: String::new(),
            vendor: String::new(),
        };
        let digest = env.push("team/app").await;
        env.signed = (format!("{}/team/app:v1", env.registry.host()), digest);
        env.push("team/other").await;
        env.unsigned = format!("{}/team/other:v1", env.registry.host());
        env.push("vendor/tool").await;
        env.vendor = format!("{}/vendor/tool:v1", env.registry.host());
        let key = env.dir.path().join("ci.key").display().to_string();
        let signed = env.signed.0.clone();
        let run = env.imgate(&["sign", "--key", &key, "--annotation", "env=prod", &signed]);
        assert_eq!(run.code, 0, "sign: {run:?}");
        env
    }

    async fn push(&self, repo: &str) -> String {
        ImageBuilder::new(&format!("verify --policy {repo}"))
            .image()
            .push(&self.registry, repo, "v1", PushWith::Skopeo)
            .await
            .expect("push")
            .digest
    }

    fn imgate(&self, args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.registry.cli_args());
        let out = run_imgate(&all, &[("IMGATE_PASSWORD", PASSWORD)], None).expect("imgate runs");
        Run::from_output(&out)
    }

    /// A policy trusting `team/**` (signed by ci.pub with `annotation`) and
    /// `vendor/**` (no signature needed), plus `extra` top-level lines.
    fn policy(&self, annotation: &str, extra: &str) -> PathBuf {
        let host = self.registry.host();
        let key = self.dir.path().join("ci.pub").display().to_string();
        let text = format!(
            "{extra}namespaces:\n  exclude: [kube-system]\n\
             trustedRegistries: [\"{host}/team/**\", \"{host}/vendor/**\"]\n\
             rules:\n\
             \x20 - name: ours\n    images: [\"{host}/team/**\"]\n    keys: [{{file: \"{key}\"}}]\n    annotations: {{env: {annotation}}}\n\
             \x20 - name: vendor\n    images: [\"{host}/vendor/**\"]\n    verify: none\n"
        );
        let path = self.dir.path().join(format!("policy-{}.yaml", text.len()));
        std::fs::write(&path, text).expect("write policy");
        path
    }

    fn verify(&self, policy: &Path, args: &[&str]) -> Run {
        let mut all = vec!["verify", "--policy", policy.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.imgate(&all)
    }

    fn verify_json(&self, policy: &Path, args: &[&str]) -> (Run, Value) {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let run = self.verify(policy, &all);
        let json = run.json();
        assert_eq!(json.as_array().map(Vec::len), Some(1), "{run:?}");
        (run, json[0].clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_image_is_admitted_with_its_rule_digest_and_pin() {
    let env = Env::new().await;
    let policy = env.policy("prod", "");
    let (image, digest) = &env.signed;
    let run = env.verify(&policy, &[image]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.starts_with(&format!("ADMITTED {image}")),
        "{run:?}"
    );
    assert!(run.stdout.contains("rule: ours"), "{run:?}");
    assert!(run.stdout.contains(&format!("digest: {digest}")), "{run:?}");
    assert!(run.stdout.contains("signature: verified"), "{run:?}");
    assert!(
        run.stdout.contains(&format!("pinned: {image}@{digest}")),
        "{run:?}"
    );

    let (run, json) = env.verify_json(&policy, &[image]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(json["admitted"], true);
    assert_eq!(json["verified"], true);
    assert_eq!(json["rule"], "ours");
    assert_eq!(json["digest"], digest.as_str());
    assert_eq!(json["mode"], "enforce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_requirement_of_the_policy_can_deny_and_says_so() {
    let env = Env::new().await;
    let policy = env.policy("prod", "");

    // Unsigned image under a rule that needs a signature.
    let (run, json) = env.verify_json(&policy, &[&env.unsigned]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(json["admitted"], false);
    assert_eq!(json["rule"], "ours");
    let reason = json["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no signatures found"), "{reason}");
    assert!(
        !reason.contains("container"),
        "the Pod is an implementation detail: {reason}"
    );

    // The rule's annotation: signed with env=prod, the policy wants staging.
    let staging = env.policy("staging", "");
    let (run, json) = env.verify_json(&staging, &[&env.signed.0]);
    assert_eq!(run.code, 1, "{run:?}");
    let reason = json["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("annotation env"), "{reason}");
    assert!(reason.contains("staging"), "{reason}");

    // A registry the policy does not trust: denied before any network call.
    let run = env.verify(&policy, &["registry.invalid/team/app:v1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with("DENIED registry.invalid/team/app:v1"),
        "{run:?}"
    );
    assert!(run.stdout.contains("trustedRegistries"), "{run:?}");

    // `verify: none`: admitted unsigned, and the output says why.
    let run = env.verify(&policy, &[&env.vendor]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("rule: vendor"), "{run:?}");
    assert!(run.stdout.contains("signature: not required"), "{run:?}");

    // Several images: one line of verdict each, exit 1 if any is denied.
    let run = env.verify(&policy, &[&env.signed.0, &env.unsigned]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout.matches("ADMITTED ").count(), 1, "{run:?}");
    assert_eq!(run.stdout.matches("DENIED ").count(), 1, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_registry_error_mode_and_namespace_decide_as_in_the_cluster() {
    let env = Env::new().await;
    // A trusted registry where nothing listens.
    let down = format!("127.0.0.1:{}", free_port().expect("port"));
    let write = |name: &str, on_error: &str| {
        let text = format!(
            "onRegistryError: {on_error}\ntrustedRegistries: [\"{down}/**\"]\n\
             registries:\n  \"{down}\": {{http: true}}\n\
             rules:\n  - name: ours\n    images: [\"{down}/**\"]\n    keys: [{{file: \"{}\"}}]\n",
            env.dir.path().join("ci.pub").display()
        );
        let path = env.dir.path().join(name);
        std::fs::write(&path, text).expect("write policy");
        path
    };
    let image = format!("{down}/team/app:v1");
    let (run, json) = env.verify_json(&write("deny.yaml", "deny"), &[&image]);
    assert_eq!(run.code, 1, "onRegistryError deny: {run:?}");
    assert_eq!(json["registry_error"], true);
    let (run, json) = env.verify_json(&write("allow.yaml", "allow"), &[&image]);
    assert_eq!(run.code, 0, "onRegistryError allow: {run:?}");
    assert_eq!(json["admitted"], true);
    assert_eq!(json["registry_error"], true);
    assert_eq!(json["verified"], false);
    assert!(
        !json["warnings"]
            .as_array()
            .map(Vec::is_empty)
            .unwrap_or(true),
        "admitted despite an error, with a warning: {json}"
    );

    // Audit mode admits what enforce would deny, and says it would deny.
    let audit = env.policy("prod", "mode: audit\n");
    let run = env.verify(&audit, &[&env.unsigned]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("ADMITTED "), "{run:?}");
    assert!(
        run.stdout.contains("would deny (audit mode admits)"),
        "{run:?}"
    );

    // An excluded namespace is never checked.
    let policy = env.policy("prod", "");
    let run = env.verify(&policy, &["--namespace", "kube-system", &env.unsigned]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("not checked"), "{run:?}");
    assert!(run.stdout.contains("kube-system"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_key_are_alternatives() {
    let env = Env::new().await;
    let policy = env.policy("prod", "");
    let key = env.dir.path().join("ci.pub").display().to_string();
    let run = env.verify(&policy, &["--key", &key, &env.signed.0]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--key"), "{run:?}");
    // Without --policy, --key is what verify checks against, as before.
    let run = env.imgate(&[
        "verify",
        "--key",
        &key,
        "--annotation",
        "env=prod",
        &env.signed.0,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("verified "), "{run:?}");
    let run = env.imgate(&["verify", &env.signed.0]);
    assert_eq!(run.code, 2, "neither --key nor --policy: {run:?}");
    let missing = env.dir.path().join("nope.yaml");
    let run = env.imgate(&[
        "verify",
        "--policy",
        missing.to_str().unwrap(),
        &env.signed.0,
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("nope.yaml"),
        "names the missing policy: {run:?}"
    );
}
