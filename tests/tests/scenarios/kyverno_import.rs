//! Scenarios: `imgate policy import` with the real binary, then `imgate
//! admit --policy` of the written policy over workloads built here, the
//! sequence the rollout guide's "coming from Kyverno" section runs: the real
//! cluster's ClusterPolicy, a verifyImages policy against the real registry
//! with a real signature, the JSON report, standard input, and the exit
//! codes for input that cannot be imported.

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

use imgate_keys::SigningKey;
use imgate_tests::bin::workspace_root;
use imgate_tests::{run_imgate, ImageBuilder, PushWith, Registry, Variant};
use serde_json::{json, Value};

use crate::common::Run;

const PASSWORD: &str = "kyverno import";

fn imgate(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let out = run_imgate(args, &[("IMGATE_PASSWORD", PASSWORD)], stdin).expect("imgate runs");
    Run::from_output(&out)
}

fn fixture() -> PathBuf {
    workspace_root().join("fixtures/kyverno/require-trusted-registries.yaml")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A workload of `kind` in `namespace` whose pod spec is `spec`.
fn workload(kind: &str, namespace: &str, name: &str, spec: Value) -> Value {
    let meta = json!({"name": name, "namespace": namespace});
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": spec});
    match kind {
        "Pod" => json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}),
        "CronJob" => json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}}}),
        _ => json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": template}}),
    }
}

fn containers(images: &[&str]) -> Value {
    images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect()
}

/// `kubectl get pods,deploy,sts,ds,jobs,cronjobs -A -o yaml`, in short:
/// one `List`.
fn write_list(dir: &Path, items: &[Value]) -> PathBuf {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let file = dir.join("workloads.yaml");
    std::fs::write(&file, serde_yaml::to_string(&list).unwrap()).unwrap();
    file
}

/// `imgate admit --output json` results by `namespace/name`.
fn admit(policy: &Path, workloads: &Path, extra: &[String]) -> (Run, Vec<(String, bool, Value)>) {
    let mut args = vec![
        "admit",
        "--policy",
        path(policy),
        "-f",
        path(workloads),
        "--output",
        "json",
    ];
    args.extend(extra.iter().map(String::as_str));
    let run = imgate(&args, None);
    let results = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = format!(
                "{}/{}",
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            );
            (id, r["allowed"].as_bool().unwrap(), r.clone())
        })
        .collect();
    (run, results)
}

fn decision<'a>(results: &'a [(String, bool, Value)], id: &str) -> (bool, &'a Value) {
    let (_, allowed, r) = results
        .iter()
        .find(|(i, _, _)| i == id)
        .unwrap_or_else(|| panic!("no {id}"));
    (*allowed, r)
}

#[test]
fn the_real_policy_imports_and_admit_shows_what_it_would_deny() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("imgate-policy.yaml");
    let run = imgate(
        &["policy", "import", "-o", path(&policy), path(&fixture())],
        None,
    );
    // Flagged: the report is to be read before switching.
    assert_eq!(run.code, 1, "{run:?}");
    for needle in [
        "`nginx*` -> `docker.io/library/nginx*`",
        "nginx.evil.example/x:1",
        "`10.0.20.10*` -> `10.0.20.10/**`",
        "10.0.20.100:5000/x:1",
        "10.0.20.10:5000/x:1",
        "initContainers: the Kyverno policy never checked",
        "ephemeralContainers: the Kyverno policy never checked",
        "Excluded namespaces (37)",
        "forceFailurePolicyIgnore",
    ] {
        assert!(
            run.stdout.contains(needle),
            "{needle:?} not in the report:\n{}",
            run.stdout
        );
    }
    let check = imgate(&["policy", "check", path(&policy)], None);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("mode enforce"), "{check:?}");

    let workloads = write_list(
        dir.path(),
        &[
            workload(
                "Pod",
                "apps",
                "web",
                json!({"containers": containers(&["nginx:1.25"])}),
            ),
            workload(
                "Pod",
                "apps",
                "hole",
                json!({"containers": containers(&["nginx.evil.example/x:1"])}),
            ),
            workload(
                "Deployment",
                "apps",
                "api",
                json!({
                    "initContainers": containers(&["busybox:1.36"]),
                    "containers": containers(&["ghcr.io/acme/api:1.4.2", "docker.io/library/redis:7"]),
                }),
            ),
            workload(
                "Deployment",
                "apps",
                "migrate",
                json!({
                    "initContainers": containers(&["evil.example/migrate:1"]),
                    "containers": containers(&["ghcr.io/acme/api:1.4.2"]),
                }),
            ),
            workload(
                "CronJob",
                "apps",
                "backup",
                json!({"containers": containers(&["postgres:16-alpine"]), "restartPolicy": "OnFailure"}),
            ),
            workload(
                "StatefulSet",
                "apps",
                "cache",
                json!({"containers": containers(&["10.0.20.10:5000/library/redis:7"])}),
            ),
            workload(
                "DaemonSet",
                "keel",
                "agent",
                json!({"containers": containers(&["evil.example/agent:1"])}),
            ),
            workload(
                "Pod",
                "apps",
                "debug",
                json!({
                    "containers": containers(&["alpine:3.20"]),
                    "ephemeralContainers": [{"name": "dbg", "image": "evil.example/debug:1"}],
                }),
            ),
        ],
    );
    let (run, results) = admit(&policy, &workloads, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    for (id, allowed) in [
        ("apps/web", true),
        ("apps/hole", false),
        ("apps/api", true),
        ("apps/migrate", false),
        ("apps/backup", true),
        ("apps/cache", false),
        ("keel/agent", true),
        ("apps/debug", false),
    ] {
        let (got, r) = decision(&results, id);
        assert_eq!(got, allowed, "{id}: {r}");
    }
    // Why: the reasons name the image and the registries.
    let (_, migrate) = decision(&results, "apps/migrate");
    assert!(
        migrate["reasons"][0]
            .as_str()
            .unwrap()
            .contains("init container"),
        "{migrate}"
    );
    let (_, agent) = decision(&results, "keel/agent");
    assert!(
        agent["skipped"].as_str().unwrap().contains("excluded"),
        "{agent}"
    );
}

#[test]
fn json_report_and_standard_input() {
    let text = std::fs::read(fixture()).unwrap();
    let run = imgate(&["policy", "import", "--report", "json", "-"], Some(&text));
    assert_eq!(run.code, 1, "{run:?}");
    // Without -o the policy goes to standard output, the report to stderr.
    assert!(
        run.stdout
            .starts_with("# imgate policy imported from Kyverno"),
        "{run:?}"
    );
    let report: Value =
        serde_json::from_str(&run.stderr).unwrap_or_else(|e| panic!("{e}: {}", run.stderr));
    assert_eq!(report["clean"], false);
    assert_eq!(
        report["summary"]["policies"],
        json!(["ClusterPolicy/require-trusted-registries"])
    );
    let findings = report["findings"].as_array().unwrap();
    let count = |kind: &str| findings.iter().filter(|f| f["kind"] == kind).count();
    assert_eq!(count("excludedNamespace"), 37);
    assert_eq!(count("notCovered"), 2);
    let nginx = findings.iter().find(|f| f["pattern"] == "nginx*").unwrap();
    assert_eq!(nginx["kind"], "changed");
    assert_eq!(nginx["imgate"], "docker.io/library/nginx*");
    assert!(
        nginx["examples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reference"] == "nginx.evil.example/x:1"
                && e["kyverno"] == "admitted"
                && e["imgate"] == "denied"),
        "{nginx}"
    );
    // What the policy says about itself matches the written policy.
    let written: serde_yaml::Value = serde_yaml::from_str(&run.stdout).unwrap();
    assert_eq!(
        written["trustedRegistries"].as_sequence().unwrap().len(),
        report["summary"]["trustedRegistries"]
            .as_array()
            .unwrap()
            .len()
    );

    // A policy that translates as it was: exit 0.
    let clean = "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: ghcr-only}\nspec:\n  validationFailureAction: Enforce\n  failurePolicy: Fail\n  rules:\n  - name: registries\n    match: {any: [{resources: {kinds: [Pod]}}]}\n    validate:\n      pattern:\n        spec:\n          =(ephemeralContainers): [{image: 'ghcr.io/*'}]\n          =(initContainers): [{image: 'ghcr.io/*'}]\n          containers: [{image: 'ghcr.io/*'}]\n";
    let run = imgate(&["policy", "import", "-"], Some(clean.as_bytes()));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("everything translated as it was"),
        "{run:?}"
    );
    assert!(run.stdout.contains("- \"ghcr.io/**\""), "{run:?}");
}

#[test]
fn input_that_cannot_be_imported_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases = [
        (write("broken.yaml", "spec: [unclosed\n"), "broken.yaml document 1: not valid YAML"),
        (write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), "ConfigMap (v1) is not a Kyverno policy"),
        (write("labels.yaml", "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: labels}\nspec:\n  rules:\n  - name: l\n    validate: {pattern: {metadata: {labels: {team: '?*'}}}}\n"), "no image rules in ClusterPolicy/labels"),
        (dir.path().join("missing.yaml"), "cannot read"),
        (write("many.yaml", &format!("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {{name: many}}\nspec:\n  rules:\n  - name: r\n    validate: {{pattern: {{spec: {{containers: [{{image: '{}'}}]}}}}}}\n", vec!["ghcr.io/x/*"; 5000].join(" | "))), "5000 alternatives"),
    ];
    for (file, needle) in cases {
        let out = dir.path().join("out.yaml");
        let run = imgate(&["policy", "import", "-o", path(&out), path(&file)], None);
        run.assert_one_line_error(needle);
        assert!(!out.exists(), "nothing is written on error: {run:?}");
    }
}

/// A Kyverno policy for the registry at `host`: its images allowed, those
/// under `team/` signed by `pem` (`ignore_tlog`: the Kyverno setting for
/// key-only signatures).
fn verify_images_policy(host: &str, pem: &str, ignore_tlog: bool) -> String {
    let key: String = pem
        .lines()
        .map(|l| format!("\n              {l}"))
        .collect();
    let rekor = if ignore_tlog {
        "\n            rekor: {ignoreTlog: true}"
    } else {
        ""
    };
    format!(
        "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {{name: signed-images}}\nspec:\n  validationFailureAction: Enforce\n  webhookTimeoutSeconds: 15\n  rules:\n  - name: registries\n    match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}\n    validate:\n      pattern: {{spec: {{containers: [{{image: '{host}/*'}}]}}}}\n  - name: signed\n    match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}\n    verifyImages:\n    - imageReferences: ['{host}/team/*']\n      attestors:\n      - count: 1\n        entries:\n        - keys:\n            publicKeys: |-{key}{rekor}\n"
    )
}

/// A registry with token auth, a scratch dir, and a key written there as
/// `ci.key` (encrypted with [`PASSWORD`]).
async fn signing_setup() -> (Registry, String, tempfile::TempDir, SigningKey, PathBuf) {
    let registry = Registry::start(Variant::Token)
        .await
        .expect("registry starts");
    let host = registry.host().to_string();
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let key_file = dir.path().join("ci.key");
    std::fs::write(&key_file, key.to_cosign_pem(PASSWORD.as_bytes()).unwrap()).unwrap();
    (registry, host, dir, key, key_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_images_with_a_key_against_the_real_registry() {
    let (registry, host, dir, key, key_file) = signing_setup().await;
    let mut images = Vec::new();
    for repo in ["team/app", "team/other", "vendor/tool"] {
        let pushed = ImageBuilder::new(&format!("kyverno import {repo}"))
            .image()
            .push(&registry, repo, "v1", PushWith::Skopeo)
            .await
            .expect("push");
        images.push(format!("{host}/{repo}:v1"));
        let _ = pushed;
    }
    let mut sign = vec![
        "sign".to_string(),
        "--key".into(),
        path(&key_file).into(),
        images[0].clone(),
    ];
    sign.extend(registry.cli_args());
    let args: Vec<&str> = sign.iter().map(String::as_str).collect();
    let run = imgate(&args, None);
    assert_eq!(run.code, 0, "sign: {run:?}");

    let workloads = write_list(
        dir.path(),
        &[
            workload(
                "Pod",
                "apps",
                "signed",
                json!({"containers": containers(&[&images[0]])}),
            ),
            workload(
                "Pod",
                "apps",
                "unsigned",
                json!({"containers": containers(&[&images[1]])}),
            ),
            workload(
                "Pod",
                "apps",
                "vendor",
                json!({"containers": containers(&[&images[2]])}),
            ),
        ],
    );
    for ignore_tlog in [true, false] {
        let kyverno = dir.path().join(format!("kyverno-{ignore_tlog}.yaml"));
        std::fs::write(
            &kyverno,
            verify_images_policy(&host, &key.public_key().to_pem(), ignore_tlog),
        )
        .unwrap();
        let policy = dir.path().join(format!("imgate-{ignore_tlog}.yaml"));
        let run = imgate(
            &["policy", "import", "-o", path(&policy), path(&kyverno)],
            None,
        );
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stdout.contains("timeoutSeconds: 15"), "{}", run.stdout);
        let written = std::fs::read_to_string(&policy).unwrap();
        assert!(
            written.contains(&format!("images: [\"{host}/team/**\"]")),
            "{written}"
        );
        let (run, results) = admit(&policy, &workloads, &registry.cli_args());
        assert_eq!(run.code, 1, "{run:?}");
        let (signed, r) = decision(&results, "apps/signed");
        let (unsigned, u) = decision(&results, "apps/unsigned");
        let (vendor, v) = decision(&results, "apps/vendor");
        assert!(!unsigned, "{u}");
        assert!(vendor, "no signature needed outside team/: {v}");
        if ignore_tlog {
            assert!(signed, "{r}");
            // mutateDigest: the Pod is pinned to the verified digest.
            assert!(
                r["patch"][0]["value"]
                    .as_str()
                    .unwrap()
                    .contains("@sha256:"),
                "{r}"
            );
        } else {
            // Kyverno checked key signatures against Rekor by default, and
            // so does the import: a key-only signature is denied, as
            // Kyverno would have denied it; the report said so.
            assert!(!signed, "{r}");
            assert!(written.contains("tlog: required"), "{written}");
        }
    }
}

/// `imgate ARGS` against `registry`, which must succeed.
fn imgate_ok(registry: &Registry, args: &[&str]) -> Run {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(registry.cli_args());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let run = imgate(&all, None);
    assert_eq!(run.code, 0, "{args:?}: {run:?}");
    run
}

/// A Kyverno policy for the registry at `host`: images under `team/`
/// signed by `pem` and carrying SLSA v0.2 provenance signed by it too,
/// built from one of acme's repositories (key-only signatures: Kyverno's
/// `ignoreTlog`).
fn attested_policy(host: &str, pem: &str) -> String {
    let key = |indent: usize| -> String {
        let pad = " ".repeat(indent);
        pem.lines().map(|l| format!("\n{pad}{l}")).collect()
    };
    format!(
        "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {{name: provenance}}\nspec:\n  validationFailureAction: Enforce\n  rules:\n  - name: built-by-acme\n    match: {{any: [{{resources: {{kinds: [Pod]}}}}]}}\n    verifyImages:\n    - imageReferences: ['{host}/team/*']\n      attestors:\n      - entries:\n        - keys:\n            publicKeys: |-{}\n            rekor: {{ignoreTlog: true}}\n      attestations:\n      - type: https://slsa.dev/provenance/v0.2\n        attestors:\n        - entries:\n          - keys:\n              publicKeys: |-{}\n              rekor: {{ignoreTlog: true}}\n        conditions:\n        - all:\n          - key: '{{{{ invocation.configSource.uri }}}}'\n            operator: Equals\n            value: 'git+https://github.com/acme/*'\n            message: built from one of acme's repositories\n          - key: '{{{{ builder.id }}}}'\n            operator: NotEquals\n            value: local\n",
        key(14),
        key(16)
    )
}

/// SLSA v0.2 provenance of a build of `uri` (as cosign's `slsaprovenance`
/// predicate holds it).
fn provenance_of(uri: &str) -> Value {
    json!({
        "builder": {"id": "https://github.com/actions/runner/github-hosted"},
        "buildType": "https://github.com/slsa-framework/slsa-github-generator/generic@v1",
        "invocation": {"configSource": {"uri": uri, "digest": {"sha1": "0123456789abcdef0123456789abcdef01234567"}, "entryPoint": ".github/workflows/release.yml"}},
        "materials": [],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_images_attestation_conditions_against_the_real_registry() {
    let (registry, host, dir, key, key_file) = signing_setup().await;
    // Four signed images: provenance from acme, from someone else, none,
    // and both (Kyverno held every statement to the conditions).
    let acme_uri = "git+https://github.com/acme/app@refs/heads/main";
    let evil_uri = "git+https://github.com/evil/app@refs/heads/main";
    let mut images = Vec::new();
    for (repo, uris) in [
        ("team/acme", vec![acme_uri]),
        ("team/evil", vec![evil_uri]),
        ("team/bare", vec![]),
        ("team/mixed", vec![acme_uri, evil_uri]),
    ] {
        ImageBuilder::new(&format!("kyverno attest {repo}"))
            .image()
            .push(&registry, repo, "v1", PushWith::Skopeo)
            .await
            .expect("push");
        let image = format!("{host}/{repo}:v1");
        imgate_ok(&registry, &["sign", "--key", path(&key_file), &image]);
        for (n, uri) in uris.into_iter().enumerate() {
            let predicate = dir
                .path()
                .join(format!("{}-{n}.json", repo.replace('/', "-")));
            std::fs::write(&predicate, provenance_of(uri).to_string()).unwrap();
            imgate_ok(
                &registry,
                &[
                    "attest",
                    "--key",
                    path(&key_file),
                    "--type",
                    "slsaprovenance",
                    "--predicate",
                    path(&predicate),
                    &image,
                ],
            );
        }
        images.push(image);
    }

    let kyverno = dir.path().join("kyverno.yaml");
    std::fs::write(&kyverno, attested_policy(&host, &key.public_key().to_pem())).unwrap();
    let policy = dir.path().join("imgate-policy.yaml");
    let run = imgate(
        &["policy", "import", "-o", path(&policy), path(&kyverno)],
        None,
    );
    // Translated as Kyverno read it: nothing flagged, the report says how.
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("every one there must meet the conditions"),
        "{}",
        run.stdout
    );
    let written = std::fs::read_to_string(&policy).unwrap();
    assert!(
        written.contains("predicateType: \"https://slsa.dev/provenance/v0.2\"")
            && written.contains("statements: all")
            && written.contains("stores: [att]"),
        "{written}"
    );
    let check = imgate(&["policy", "check", path(&policy)], None);
    assert_eq!(check.code, 0, "{check:?}");

    let pods: Vec<Value> = ["acme", "evil", "bare", "mixed"]
        .iter()
        .zip(&images)
        .map(|(name, image)| {
            workload(
                "Pod",
                "apps",
                name,
                json!({"containers": containers(&[image])}),
            )
        })
        .collect();
    let workloads = write_list(dir.path(), &pods);
    let (run, results) = admit(&policy, &workloads, &registry.cli_args());
    assert_eq!(run.code, 1, "{run:?}");
    let (acme, a) = decision(&results, "apps/acme");
    assert!(acme, "provenance from acme: {a}");
    let (evil, e) = decision(&results, "apps/evil");
    assert!(!evil, "{e}");
    let reason = e["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("built from one of acme's repositories")
            && reason.contains("git+https://github.com/evil/app@refs/heads/main"),
        "the denial names the condition and what it saw: {reason}"
    );
    let (bare, b) = decision(&results, "apps/bare");
    assert!(!bare, "{b}");
    assert!(
        b["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no https://slsa.dev/provenance/v0.2 statement"),
        "{b}"
    );

    // A statement that meets the conditions beside one that does not:
    // denied, as Kyverno denied it.
    let (mixed, m) = decision(&results, "apps/mixed");
    assert!(!mixed, "{m}");
    assert!(
        m["reasons"][0]
            .as_str()
            .unwrap()
            .contains("git+https://github.com/evil/app@refs/heads/main"),
        "{m}"
    );

    // `imgate verify --policy` says the same of each image.
    for (image, code) in images.iter().zip([0, 1, 1, 1]) {
        let mut args = vec!["verify", "--policy", path(&policy), image.as_str()];
        let extra = registry.cli_args();
        args.extend(extra.iter().map(String::as_str));
        let run = imgate(&args, None);
        assert_eq!(run.code, code, "{image}: {run:?}");
    }
}
