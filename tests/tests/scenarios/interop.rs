//! Interop with tools outside imgate: signatures `imgate sign` stores in the
//! real registry are checked by `tests/interop/cosign_check.py`, a Python
//! verifier written from cosign's format description with urllib and the
//! `cryptography` package; keys `imgate keys generate` writes are opened by
//! `keys/tests/interop/decrypt_cosign_key.py` (PyNaCl + hashlib scrypt).
//!
//! The checker itself is first shown to accept what real cosign wrote (the
//! vectors in `fixtures/cosign/`), so a pass on imgate's output means more
//! than "two programs agree with each other".
//!
//! Needs `cryptography` and `pynacl` in `$IMGATE_PYTHON` (the project
//! virtualenv `scripts/install-deps.sh --with-python` fills).

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use imgate_tests::bin::{python as python_bin, run_bounded, workspace_root};
use imgate_tests::image::Blob;
use imgate_tests::{run_imgate, ImageBuilder, PushWith, PushedImage, RawClient, Registry, Variant};
use serde_json::{json, Value};

const PASSWORD: &str = "interop pass";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);

/// What a Python script said.
#[derive(Debug)]
struct Py {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Py {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

fn python(script: &Path, args: &[String], env: &[(&str, &str)]) -> Py {
    let mut command = Command::new(python_bin());
    command.arg(script).args(args);
    command.env_remove("IMGATE_PASSWORD");
    command.envs(env.iter().copied());
    let out = run_bounded(command, None, PYTHON_TIMEOUT)
        .expect("$IMGATE_PYTHON runs (scripts/install-deps.sh --with-python)");
    Py {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("fixtures/cosign").join(name)
}

/// A registry, a scratch dir and the checker's transport flags for it.
struct Env {
    registry: Registry,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new(variant: Variant) -> Env {
        Env {
            registry: Registry::start(variant).await.expect("registry starts"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// `imgate ARGS` (with this registry's flags when `registry`), asserting exit 0.
    fn imgate(&self, args: &[&str], registry: bool, password: &str) -> String {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if registry {
            all.extend(self.registry.cli_args());
        }
        let out = run_imgate(&all, &[("IMGATE_PASSWORD", password)], None).expect("imgate runs");
        assert!(
            out.status.success(),
            "imgate {args:?} failed ({:?}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `imgate keys generate --output-prefix DIR/NAME`; returns (key, pub).
    fn generate(&self, name: &str, password: &str) -> (String, String) {
        let prefix = self.path(name);
        self.imgate(
            &["keys", "generate", "--output-prefix", prefix.as_str()],
            false,
            password,
        );
        (format!("{prefix}.key"), format!("{prefix}.pub"))
    }

    async fn push(&self, label: &str, repo: &str) -> PushedImage {
        ImageBuilder::new(label)
            .image()
            .push(&self.registry, repo, "v1", PushWith::Http)
            .await
            .expect("push")
    }

    fn sign(&self, key: &str, image: &PushedImage, extra: &[&str]) {
        let pinned = image.pinned();
        let mut args = vec!["sign", "--key", key];
        args.extend_from_slice(extra);
        args.push(&pinned);
        self.imgate(&args, true, PASSWORD);
    }

    /// Runs the checker for `repo@digest` with `key`; `extra` adds flags.
    fn check(&self, repo: &str, digest: &str, key: &str, extra: &[&str]) -> Py {
        let mut args = vec![
            self.registry.host().to_string(),
            repo.to_string(),
            digest.to_string(),
            key.to_string(),
            "--json".to_string(),
        ];
        match self.registry.ca_file() {
            Some(ca) => args.extend(["--ca".to_string(), ca.display().to_string()]),
            None => args.push("--http".to_string()),
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        python(
            &workspace_root().join("tests/interop/cosign_check.py"),
            &args,
            &[],
        )
    }
}

fn assert_verified(run: &Py, signatures: usize, verified: u64) -> Value {
    assert_eq!(run.code, 0, "checker should pass: {run:?}");
    let summary = run.json();
    assert_eq!(summary["problems"], json!([]), "{}", run.stdout);
    assert_eq!(
        summary["signatures"].as_array().map(Vec::len),
        Some(signatures),
        "{}",
        run.stdout
    );
    assert_eq!(summary["verified"], verified, "{}", run.stdout);
    summary
}

fn assert_rejected(run: &Py, why: &str) {
    assert_eq!(run.code, 1, "checker should fail: {run:?}");
    assert_eq!(run.json()["verified"], 0, "{}", run.stdout);
    assert!(
        run.stdout.contains(why),
        "expected {why:?} in {}",
        run.stdout
    );
}

/// The whole round: keys from `imgate keys generate`, two legacy signatures
/// and a bundle from `imgate sign`, each read back by the Python checker.
async fn sign_then_check(variant: Variant) {
    let env = Env::new(variant).await;
    let (key, public) = env.generate("ci", PASSWORD);
    let (_, other) = env.generate("other", PASSWORD);
    let image = env.push("interop-app", "team/app").await;
    let unsigned = env.push("interop-unsigned", "team/app").await;
    let repo = "team/app";

    env.sign(&key, &image, &[]);
    let legacy = env.check(repo, &image.digest, &public, &[]);
    assert_verified(&legacy, 1, 1);

    env.sign(&key, &image, &["--format", "bundle", "-a", "env=prod"]);
    env.sign(&key, &image, &["-a", "env=prod", "-a", "team=platform"]);

    // Both legacy layers are kept and both verify; only the second carries
    // the annotation.
    let legacy = env.check(repo, &image.digest, &public, &[]);
    assert_verified(&legacy, 2, 2);
    let annotated = env.check(repo, &image.digest, &public, &["--annotation", "env=prod"]);
    let summary = assert_verified(&annotated, 2, 1);
    assert_eq!(
        summary["signatures"][1]["verified"], true,
        "{}",
        annotated.stdout
    );

    let bundle = env.check(repo, &image.digest, &public, &["--bundle"]);
    let summary = assert_verified(&bundle, 1, 1);
    // securesystemslib is optional; when installed, its DSSE verifier agrees.
    assert!(
        summary["securesystemslib"].is_null() || summary["securesystemslib"] == 1,
        "{}",
        bundle.stdout
    );
    let bundle = env.check(
        repo,
        &image.digest,
        &public,
        &["--bundle", "--annotation", "env=prod"],
    );
    assert_verified(&bundle, 1, 1);

    // Negative: another key, a missing annotation, an image never signed.
    assert_rejected(
        &env.check(repo, &image.digest, &other, &[]),
        "signature does not verify",
    );
    assert_rejected(
        &env.check(repo, &image.digest, &other, &["--bundle"]),
        "DSSE signatures verifies",
    );
    assert_rejected(
        &env.check(
            repo,
            &image.digest,
            &public,
            &["--bundle", "--annotation", "env=dev"],
        ),
        "annotation env='dev' missing",
    );
    assert_rejected(&env.check(repo, &unsigned.digest, &public, &[]), "HTTP 404");
    assert_rejected(
        &env.check(repo, &unsigned.digest, &public, &["--bundle"]),
        "HTTP 404",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_checker_verifies_imgate_signatures_over_http() {
    sign_then_check(Variant::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_checker_verifies_imgate_signatures_over_tls() {
    sign_then_check(Variant::Tls).await;
}

/// The checker accepts what real cosign wrote, laid out in the registry the
/// way cosign lays it out, and rejects it with the wrong key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_checker_accepts_real_cosign_signatures() {
    let env = Env::new(Variant::Http).await;
    let raw = RawClient::new(&env.registry).expect("raw client");
    let repo = "cosign/vectors";

    // Legacy: cosign's payload and signature for registry-testing.svc.lan/busybox.
    let payload = Blob::new(
        SIMPLE_SIGNING,
        std::fs::read(fixture("signature-vector-1.payload.json")).unwrap(),
    );
    let signature = std::fs::read_to_string(fixture("signature-vector-1.sig.b64")).unwrap();
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec(&json!({
            "architecture": "", "os": "", "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "rootfs": {"type": "layers", "diff_ids": [payload.digest]},
        }))
        .unwrap(),
    );
    let mut layer = payload.descriptor();
    layer["annotations"] = json!({"dev.cosignproject.cosign/signature": signature.trim()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config.descriptor(), "layers": [layer],
    }))
    .unwrap();
    let digest = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
    raw.put_blob(repo, &payload).await.unwrap();
    raw.put_blob(repo, &config).await.unwrap();
    raw.put_manifest(
        repo,
        &format!("{}.sig", digest.replace(':', "-")),
        OCI_MANIFEST,
        &manifest,
    )
    .await
    .unwrap();
    let vector_pub = fixture("signature-vector-1.pub").display().to_string();
    let identity = ["--identity", "registry-testing.svc.lan/busybox"];
    assert_verified(&env.check(repo, digest, &vector_pub, &identity), 1, 1);
    let run = env.check(repo, digest, &vector_pub, &[]);
    assert_rejected(&run, "docker-reference 'registry-testing.svc.lan/busybox'");
    let leaf_pub = fixture("bundle-v03-keyless-leaf.pub").display().to_string();
    assert_rejected(
        &env.check(repo, digest, &leaf_pub, &identity),
        "signature does not verify",
    );

    // Bundle: cosign v3's bundle for kubewarden-controller, attached through
    // the referrers tag schema as cosign does on a registry without the API.
    let bundle = Blob::new(
        BUNDLE,
        std::fs::read(fixture("bundle-v03-keyless.json")).unwrap(),
    );
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let subject = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    let attachment = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE,
        "config": empty.descriptor(), "layers": [bundle.descriptor()],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1234},
        "annotations": {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
        },
    }))
    .unwrap();
    let attachment = Blob::new(OCI_MANIFEST, attachment);
    raw.put_blob(repo, &bundle).await.unwrap();
    raw.put_blob(repo, &empty).await.unwrap();
    raw.put_manifest(repo, &attachment.digest, OCI_MANIFEST, &attachment.bytes)
        .await
        .unwrap();
    // As older cosign 3.x fallback indexes do: the entry's artifactType is
    // the empty-config type, so the checker must select by layer.
    let mut entry = attachment.descriptor();
    entry["artifactType"] = json!("application/vnd.oci.empty.v1+json");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry],
    }))
    .unwrap();
    raw.put_manifest(repo, &subject.replace(':', "-"), OCI_INDEX, &index)
        .await
        .unwrap();
    assert_verified(&env.check(repo, subject, &leaf_pub, &["--bundle"]), 1, 1);
    assert_rejected(
        &env.check(repo, subject, &vector_pub, &["--bundle"]),
        "DSSE signatures verifies",
    );
}

/// A key pair `imgate keys generate` writes opens with PyNaCl + scrypt and
/// parses with `cryptography` (what cosign's own format reader does), with
/// a password and with the empty password cosign allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_open_in_python() {
    let dir = tempfile::tempdir().unwrap();
    let script = workspace_root().join("keys/tests/interop/decrypt_cosign_key.py");
    for (name, password) in [("with-password", PASSWORD), ("empty-password", "")] {
        let prefix = dir.path().join(name).display().to_string();
        let out = run_imgate(
            ["keys", "generate", "--output-prefix", prefix.as_str()],
            &[("IMGATE_PASSWORD", password)],
            None,
        )
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        let (key, public) = (format!("{prefix}.key"), format!("{prefix}.pub"));
        let run = python(
            &script,
            &[key.clone(), public.clone()],
            &[("IMGATE_PASSWORD", password)],
        );
        assert_eq!(run.code, 0, "{name}: {run:?}");
        assert!(run.stdout.contains("scrypt N=65536 r=8 p=1"), "{run:?}");
        if !password.is_empty() {
            let wrong = python(&script, &[key, public], &[("IMGATE_PASSWORD", "nope")]);
            assert_ne!(
                wrong.code, 0,
                "a wrong password must not open the key: {wrong:?}"
            );
        }
    }
}
