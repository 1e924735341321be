//! Scenarios: `imgate admit` and `imgate policy check` (the real binary)
//! against the real registry behind a counting proxy, with images signed by
//! the project's own signer; and the admission engine in-process, where 100
//! concurrent reviews of one new image must cost one verification's worth of
//! registry requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use imgate_core::policy::Policy;
use imgate_core::reference::ImageRef;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{sign, SignOptions};
use imgate_keys::SigningKey;
use imgate_tests::{
    block_on, run_imgate, CountingProxy, ImageBuilder, PushWith, Registry, Variant,
};
use imgate_webhook::admission::{answer_review, Endpoint, Engine};
use imgate_webhook::review::parse_review;
use serde_json::{json, Value};

use crate::common::Run;

/// A registry behind a counting proxy, a key, a signed and an unsigned image.
struct Env {
    _registry: Registry,
    proxy: CountingProxy,
    dir: tempfile::TempDir,
    key: SigningKey,
    /// `PROXY/imgate/signed:v1` and its digest.
    signed: (String, String),
    /// `PROXY/imgate/unsigned:v1` and its digest.
    unsigned: (String, String),
}

impl Env {
    fn new() -> Env {
        block_on(async {
            let registry = Registry::start(Variant::Http)
                .await
                .expect("registry starts");
            let proxy = CountingProxy::start(&registry).await.expect("proxy starts");
            let key = SigningKey::generate();
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("ci.pub"), key.public_key().to_pem())
                .expect("write key");
            let mut env = Env {
                _registry: registry,
                proxy,
                dir,
                key,
                signed: (String::new(), String::new()),
                unsigned: (String::new(), String::new()),
            };
            env.signed = env.push("imgate/signed", "v1", true).await;
            env.unsigned = env.push("imgate/unsigned", "v1", false).await;
            env.proxy.reset();
            env
        })
    }

    /// Pushes a distinct image as `repo:tag` (signing it through the proxy,
    /// so the signed identity is the name admission sees).
    async fn push(&self, repo: &str, tag: &str, signed: bool) -> (String, String) {
        let pushed = ImageBuilder::new(&format!("admission {repo}:{tag}"))
            .image()
            .push(&self._registry, repo, tag, PushWith::Http)
            .await
            .expect("push");
        let reference = format!("{}/{repo}:{tag}", self.proxy.host());
        if signed {
            let client = RegistryClient::new(self.proxy.client_config()).expect("client");
            let image = ImageRef::parse(&format!("{reference}@{}", pushed.digest)).expect("ref");
            sign(&client, &image, &self.key, &SignOptions::default())
                .await
                .expect("sign");
        }
        (reference, pushed.digest)
    }

    fn policy(&self, extra: &str) -> PathBuf {
        let proxy = self.proxy.host();
        let text = format!(
            "{extra}namespaces:\n  exclude: [kube-system]\n\
             trustedRegistries: [\"{proxy}/imgate/**\", trusted.io/**]\n\
             registries:\n  \"{proxy}\": {{http: true}}\n\
             rules:\n  - name: ours\n    images: [\"{proxy}/imgate/**\", trusted.io/**]\n    keys: [{{file: ci.pub}}]\n"
        );
        let path = self.dir.path().join(format!("policy-{}.yaml", text.len()));
        std::fs::write(&path, text).expect("write policy");
        path
    }

    fn manifest(&self, name: &str, docs: &[Value]) -> PathBuf {
        let text: Vec<String> = docs
            .iter()
            .map(|d| serde_yaml::to_string(d).expect("yaml"))
            .collect();
        let path = self.dir.path().join(name);
        std::fs::write(&path, text.join("---\n")).expect("write manifest");
        path
    }

    fn admit(&self, policy: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let mut all = vec![
            "admit".to_string(),
            "--policy".to_string(),
            policy.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let out = run_imgate(&all, &[], stdin).expect("imgate runs");
        Run::from_output(&out)
    }

    /// `imgate admit --output json` over `docs`.
    fn admit_json(&self, policy: &Path, docs: &[Value], endpoint: &str) -> (Run, Vec<Value>) {
        let manifest = self.manifest("manifest.yaml", docs);
        let run = self.admit(
            policy,
            &[
                "-f",
                &manifest.display().to_string(),
                "--output",
                "json",
                "--endpoint",
                endpoint,
            ],
            None,
        );
        let results = run.json().as_array().cloned().expect("array");
        assert_eq!(results.len(), docs.len(), "{run:?}");
        (run, results)
    }
}

fn container(name: &str, image: &str) -> Value {
    json!({"name": name, "image": image})
}

fn pod(name: &str, containers: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}})
}

/// Applies a JSONPatch (as printed by `imgate admit --output json`) to `object`.
fn apply(object: &Value, patch: &Value) -> Value {
    let mut object = object.clone();
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).expect("a JSONPatch");
    json_patch::patch(&mut object, &patch).expect("patch applies");
    object
}

#[test]
fn signed_pod_is_allowed_and_pinned_unsigned_is_denied() {
    let env = Env::new();
    let policy = env.policy("");
    let signed = pod("good", vec![container("app", &env.signed.0)]);
    let unsigned = pod("bad", vec![container("app", &env.unsigned.0)]);

    let (run, results) = env.admit_json(&policy, std::slice::from_ref(&signed), "mutate");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(results[0]["allowed"], true);
    let patched = apply(&signed, &results[0]["patch"]);
    assert_eq!(
        patched["spec"]["containers"][0]["image"],
        format!("{}@{}", env.signed.0, env.signed.1)
    );
    assert!(env.proxy.count() > 0, "the registry was consulted");

    let (run, results) = env.admit_json(&policy, &[unsigned], "mutate");
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(results[0]["allowed"], false);
    let reason = results[0]["reasons"][0].as_str().unwrap();
    for part in [
        "container \"app\"",
        &env.unsigned.0,
        "rule \"ours\"",
        "no signatures found",
    ] {
        assert!(reason.contains(part), "{part} missing from {reason}");
    }
    assert!(results[0]["patch"].as_array().unwrap().is_empty());
    assert!(
        run.stderr.contains("1 of 1 object would be denied"),
        "{}",
        run.stderr
    );

    // Text output names the verdict, the object and the patch.
    let manifest = env.manifest(
        "both.yaml",
        &[signed, pod("bad", vec![container("app", &env.unsigned.0)])],
    );
    let run = env.admit(&policy, &["-f", &manifest.display().to_string()], None);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("ALLOWED Pod/good"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "patch: replace /spec/containers/0/image {}@{}",
            env.signed.0, env.signed.1
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("DENIED Pod/bad"), "{}", run.stdout);
    assert!(
        run.stdout.contains("reason: container \"app\""),
        "{}",
        run.stdout
    );
}

#[test]
fn untrusted_registries_are_denied_without_a_registry_request() {
    let env = Env::new();
    let policy = env.policy("");
    let evil = "trusted.io.evil.com/imgate/signed:v1";
    let elsewhere = "127.0.0.1:1/imgate/signed:v1";
    let (run, results) = env.admit_json(
        &policy,
        &[
            pod("a", vec![container("app", evil)]),
            pod("b", vec![container("app", elsewhere)]),
        ],
        "mutate",
    );
    assert_eq!(run.code, 1);
    for result in &results {
        assert_eq!(result["allowed"], false);
        assert!(
            result["reasons"][0]
                .as_str()
                .unwrap()
                .contains("is not in trustedRegistries"),
            "{result}"
        );
    }
    assert_eq!(env.proxy.count(), 0, "{:?}", env.proxy.requests());
}

#[test]
fn bypass_attempts_are_denied() {
    let env = Env::new();
    let policy = env.policy("");
    let (signed, unsigned) = (&env.signed.0, &env.unsigned.0);
    let template =
        |containers: Value| json!({"metadata": {"labels": {"app": "x"}}, "spec": containers});
    let docs = vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "init"},
               "spec": {"initContainers": [container("setup", unsigned)], "containers": [container("app", signed)]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ephemeral"},
               "spec": {"containers": [container("app", signed)], "ephemeralContainers": [container("debug", unsigned)]}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cron"},
               "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template":
                   template(json!({"containers": [container("app", signed), container("job", unsigned)]}))}}}}),
        pod(
            "second",
            vec![container("app", signed), container("sidecar", unsigned)],
        ),
        pod(
            "prefix",
            vec![container("app", "trusted.io.evil.com/imgate/signed:v1")],
        ),
        pod(
            "digest",
            vec![container("app", &format!("{signed}@{}", env.unsigned.1))],
        ),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "deploy"},
               "spec": {"template": template(json!({"containers": [container("app", unsigned)]}))}}),
    ];
    let expected = [
        "init container \"setup\"",
        "ephemeral container \"debug\"",
        "container \"job\"",
        "container \"sidecar\"",
        "trusted.io.evil.com",
        &env.unsigned.1,
        "container \"app\"",
    ];
    for endpoint in ["mutate", "validate"] {
        let (run, results) = env.admit_json(&policy, &docs, endpoint);
        assert_eq!(run.code, 1);
        for (result, needle) in results.iter().zip(expected) {
            assert_eq!(result["allowed"], false, "{endpoint}: {result}");
            let reasons: Vec<&str> = result["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let reasons = reasons.join("; ");
            assert!(
                reasons.contains(needle),
                "{endpoint}: {needle} not in {reasons}"
            );
        }
    }
}

#[test]
fn excluded_namespaces_other_kinds_and_audit_mode() {
    let env = Env::new();
    let mut excluded = pod("sys", vec![container("app", &env.unsigned.0)]);
    excluded["metadata"]["namespace"] = "kube-system".into();
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"image": "evil.io/x"}});
    let (run, results) = env.admit_json(&env.policy(""), &[excluded, config], "mutate");
    assert_eq!(run.code, 0, "{run:?}");
    for result in &results {
        assert_eq!(result["allowed"], true);
        assert!(result["patch"].as_array().unwrap().is_empty());
        assert!(result["skipped"].is_string());
    }
    assert_eq!(env.proxy.count(), 0);

    let audit = env.policy("mode: audit\n");
    let docs = [pod(
        "mixed",
        vec![
            container("app", &env.signed.0),
            container("side", &env.unsigned.0),
        ],
    )];
    let (run, results) = env.admit_json(&audit, &docs, "mutate");
    assert_eq!(run.code, 0, "audit mode never denies: {run:?}");
    assert_eq!(results[0]["allowed"], true);
    assert!(
        results[0]["patch"].as_array().unwrap().is_empty(),
        "audit mode changes nothing"
    );
    let warnings = results[0]["warnings"].to_string();
    assert!(
        warnings.contains("would deny: container \\\"side\\\""),
        "{warnings}"
    );
    assert!(
        warnings.contains(&format!(
            "would pin container \\\"app\\\" to {}@{}",
            env.signed.0, env.signed.1
        )),
        "{warnings}"
    );
}

#[test]
fn manifests_from_stdin_and_lists() {
    let env = Env::new();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        pod("one", vec![container("app", &env.signed.0)]),
        pod("two", vec![container("app", &env.unsigned.0)]),
    ]});
    let text = serde_yaml::to_string(&list).unwrap();
    let run = env.admit(
        &env.policy(""),
        &["-f", "-", "--output", "json"],
        Some(text.as_bytes()),
    );
    assert_eq!(run.code, 1, "{run:?}");
    let results = run.json();
    assert_eq!(results.as_array().unwrap().len(), 2);
    assert_eq!(results[0]["allowed"], true);
    assert_eq!(results[1]["allowed"], false);
    assert_eq!(results[1]["name"], "two");

    let run = env.admit(&env.policy(""), &["-f", "/nonexistent/manifest.yaml"], None);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/nonexistent/manifest.yaml"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_registry_that_is_down_follows_on_registry_error() {
    let env = Env::new();
    let docs = [pod("p", vec![container("app", &env.signed.0)])];
    env.proxy.set_mode(imgate_tests::ProxyMode::Hang);
    // Build the binary first: the budget is about the review, not cargo.
    imgate_tests::imgate_bin();
    let started = std::time::Instant::now();
    let manifest = env.manifest("hang.yaml", &docs);
    let manifest = manifest.display().to_string();
    let run = env.admit(
        &env.policy(""),
        &["-f", &manifest, "--output", "json", "--deadline", "2"],
        None,
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.json()[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("registry did not answer within 2s"),
        "{}",
        run.stdout
    );

    let run = env.admit(
        &env.policy("onRegistryError: allow\n"),
        &["-f", &manifest, "--output", "json", "--deadline", "2"],
        None,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json()[0]["warnings"]
        .to_string()
        .contains("onRegistryError: allow"));
}

#[test]
fn policy_check_reports_ok_or_the_field() {
    let env = Env::new();
    let out = run_imgate(
        ["policy", "check", &env.policy("").display().to_string()],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "policy OK: 1 rule, mode enforce"
    );

    let bad = env.dir.path().join("bad.yaml");
    std::fs::write(&bad, "trustedRegistries: [a.io/**]\nrules:\n  - {name: r, images: [a.io/**], verify: none, keys: [{file: ci.pub}]}\n").unwrap();
    let out = run_imgate(["policy", "check", &bad.display().to_string()], &[], None).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rules[0].keys: a rule with verify: none"),
        "{stderr}"
    );
}

/// 100 concurrent reviews of one new image cost what one review costs.
#[test]
fn concurrent_reviews_share_one_verification() {
    let env = Env::new();
    let policy_path = env.policy("");
    let review_of = |image: &str, uid: &str| {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default", "operation": "CREATE", "userInfo": {"username": "test"},
                "object": pod("web", vec![container("app", image)]),
            }
        });
        parse_review(body.to_string().as_bytes()).unwrap()
    };
    let engine = |policy: Policy| {
        let client = RegistryClient::new(policy.client_config(env.proxy.client_config())).unwrap();
        Arc::new(Engine::builder(policy, client).build())
    };
    block_on(async {
        // One review, cold: what one verification costs.
        let (one, _) = env.push("imgate/one", "v1", true).await;
        let (many, _) = env.push("imgate/many", "v1", true).await;
        env.proxy.reset();
        let single = engine(Policy::load(&policy_path).unwrap());
        let out = answer_review(
            &single,
            review_of(&one, "u-single"),
            Endpoint::Mutate,
            std::time::Instant::now(),
        )
        .await;
        assert!(out.response.unwrap().allowed);
        let cost_of_one = env.proxy.count();
        assert!(cost_of_one > 0);

        env.proxy.reset();
        let shared = engine(Policy::load(&policy_path).unwrap());
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let engine = Arc::clone(&shared);
                let review = review_of(&many, &format!("u-{i}"));
                tokio::spawn(async move {
                    answer_review(&engine, review, Endpoint::Mutate, std::time::Instant::now())
                        .await
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let response = task.await.unwrap().response.unwrap();
            assert_eq!(response.uid, format!("u-{i}"));
            assert!(response.allowed, "{response:?}");
            assert!(response.patch.is_some());
        }
        let cost_of_many = env.proxy.count();
        assert_eq!(
            cost_of_many,
            cost_of_one,
            "100 concurrent reviews: {:?}",
            env.proxy.requests()
        );
        assert_eq!(shared.metrics().verification_count(), 1);
    });
}
