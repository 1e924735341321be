//! Scenarios: signing with a key in Vault/OpenBao transit. No Vault server
//! can be installed here, so the client talks to the harness's loopback
//! transit engine (`imgate_tests::vault`, TLS with a test CA, real P-256
//! keys, Vault's request and error shapes); `real_vault_round_trip` runs
//! the same flow against a real server when one is given (DEVELOPMENT.md).

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imgate_keys::PublicKey;
use imgate_tests::registry::free_port;
use imgate_tests::vault::FakeVault;
use imgate_tests::{run_imgate, ImageBuilder, PushWith, PushedImage, Registry, Variant};
use serde_json::Value;

use crate::common::Run;

const TOKEN: &str = "hvs.test-Kx81aQ";
const KEY: &str = "release";

struct Ctx {
    registry: Registry,
    vault: FakeVault,
    dir: tempfile::TempDir,
}

impl Ctx {
    async fn new() -> Ctx {
        let vault = FakeVault::start(TOKEN, &["transit", "ci/transit"])
            .await
            .expect("fake Vault starts");
        vault.add_key("transit", KEY, "ecdsa-p256");
        Ctx {
            registry: Registry::start(Variant::Tls)
                .await
                .expect("registry starts"),
            vault,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn env(&self) -> Vec<(&str, String)> {
        vec![
            ("VAULT_ADDR", self.vault.addr().to_string()),
            ("VAULT_TOKEN", TOKEN.to_string()),
            ("VAULT_CACERT", self.vault.ca_file().display().to_string()),
        ]
    }

    /// Runs imgate with the Vault environment, `overrides` replacing or
    /// (with an empty value) removing variables.
    fn run_with(&self, args: &[&str], overrides: &[(&str, &str)], registry: bool) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if registry {
            all.extend(self.registry.cli_args());
        }
        let mut env: Vec<(&str, String)> = self
            .env()
            .into_iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .collect();
        env.extend(
            overrides
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (*k, v.to_string())),
        );
        env.push(("HOME", self.dir.path().display().to_string()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Run::from_output(&run_imgate(&all, &env, None).expect("imgate runs"))
    }

    fn run(&self, args: &[&str], registry: bool) -> Run {
        self.run_with(args, &[], registry)
    }

    async fn push(&self, label: &str, tag: &str) -> PushedImage {
        ImageBuilder::new(label)
            .image()
            .push(&self.registry, "team/vault", tag, PushWith::Http)
            .await
            .expect("push")
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn verify(&self, public: &str, image: &str) -> Run {
        self.run(
            &["verify", "--output", "json", "--key", public, image],
            true,
        )
    }
}

fn one_line_error(run: &Run, needle: &str) {
    run.assert_one_line_error(needle);
    assert!(
        !run.stderr.contains(TOKEN),
        "the Vault token leaked: {run:?}"
    );
}

fn same_key(pem_a: &str, pem_b: &str) -> bool {
    PublicKey::from_pem(pem_a.as_bytes(), "a").unwrap()
        == PublicKey::from_pem(pem_b.as_bytes(), "b").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_key_signs_both_formats_and_verifies_with_the_printed_key() {
    let ctx = Ctx::new().await;
    let reference = format!("hashivault://{KEY}");
    let run = ctx.run(&["keys", "public", "--key", &reference], false);
    assert_eq!(run.code, 0, "{run:?}");
    let vault_pem = ctx.vault.public_key_pem("transit", KEY, 1).unwrap();
    assert!(
        same_key(&run.stdout, &vault_pem),
        "the newest version's key is printed"
    );
    let public = ctx.write("release.pub", &run.stdout);

    for (format, tag) in [("legacy", "v1"), ("bundle", "v2")] {
        let img = ctx.push(&format!("vault-{format}"), tag).await;
        let run = ctx.run(
            &[
                "sign",
                "--key",
                &reference,
                "--format",
                format,
                &img.reference,
            ],
            true,
        );
        assert_eq!(run.code, 0, "sign --format {format}: {run:?}");
        assert_eq!(run.stdout.trim(), img.pinned());
        let run = ctx.verify(&public, &img.reference);
        assert_eq!(run.code, 0, "verify: {run:?}");
        assert_eq!(run.json()[0]["format"], format);
    }

    // What imgate sent: Vault's sign endpoint with the token header, a
    // prehashed SHA-256 digest, pinned to the version read.
    let signs: Vec<_> = ctx
        .vault
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/sign/"))
        .collect();
    assert_eq!(signs.len(), 2, "{signs:?}");
    for request in &signs {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, format!("/v1/transit/sign/{KEY}/sha2-256"));
        assert_eq!(request.token.as_deref(), Some(TOKEN));
        assert_eq!(request.body["prehashed"], true);
        assert_eq!(request.body["hash_algorithm"], "sha2-256");
        assert_eq!(request.body["key_version"], 1);
        let input = request.body["input"].as_str().unwrap();
        use base64::Engine as _;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(input)
            .unwrap();
        assert_eq!(digest.len(), 32, "a SHA-256 digest, not the payload");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_signs_with_its_newest_version() {
    let ctx = Ctx::new().await;
    ctx.vault.rotate("transit", KEY);
    let v1 = ctx.write(
        "v1.pub",
        &ctx.vault.public_key_pem("transit", KEY, 1).unwrap(),
    );
    let v2_pem = ctx.vault.public_key_pem("transit", KEY, 2).unwrap();
    let run = ctx.run(&["keys", "public", "--key", "hashivault://release"], false);
    assert!(same_key(&run.stdout, &v2_pem), "{run:?}");
    let v2 = ctx.write("v2.pub", &run.stdout);

    let img = ctx.push("vault-rotated", "v1").await;
    let run = ctx.run(
        &["sign", "--key", "hashivault://release", &img.reference],
        true,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ctx.verify(&v2, &img.reference).code, 0);
    assert_eq!(
        ctx.verify(&v1, &img.reference).code,
        1,
        "version 1 did not sign it"
    );
    let last = ctx
        .vault
        .requests()
        .into_iter()
        .rfind(|r| r.path.contains("/sign/"))
        .unwrap();
    assert_eq!(last.body["key_version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_generate_creates_the_transit_key_as_cosign_does() {
    let ctx = Ctx::new().await;
    let prefix = ctx.dir.path().join("fresh").display().to_string();
    let run = ctx.run_with(
        &[
            "keys",
            "generate",
            "--kms",
            "hashivault://fresh",
            "--output-prefix",
            &prefix,
            "--output",
            "json",
        ],
        &[("TRANSIT_SECRET_ENGINE_PATH", "ci/transit")],
        false,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = run.json();
    assert_eq!(report["version"], 1);
    let create = ctx
        .vault
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v1/ci/transit/keys/fresh")
        .expect("a create request");
    assert_eq!(create.body, serde_json::json!({"type": "ecdsa-p256"}));
    let written = std::fs::read_to_string(format!("{prefix}.pub")).unwrap();
    assert!(same_key(
        &written,
        &ctx.vault.public_key_pem("ci/transit", "fresh", 1).unwrap()
    ));
    assert!(
        !std::path::Path::new(&format!("{prefix}.key")).exists(),
        "no private key file"
    );

    let img = ctx.push("vault-fresh", "v1").await;
    let run = ctx.run_with(
        &["sign", "--key", "hashivault://fresh", &img.reference],
        &[("TRANSIT_SECRET_ENGINE_PATH", "ci/transit")],
        true,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ctx.verify(&format!("{prefix}.pub"), &img.reference).code, 0);

    // The public key file is not overwritten without --force.
    let run = ctx.run_with(
        &[
            "keys",
            "generate",
            "--kms",
            "hashivault://fresh",
            "--output-prefix",
            &prefix,
        ],
        &[("TRANSIT_SECRET_ENGINE_PATH", "ci/transit")],
        false,
    );
    one_line_error(&run, "already exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_failures_name_the_culprit_in_one_line() {
    let ctx = Ctx::new().await;
    ctx.vault.add_key("transit", "symmetric", "aes256-gcm96");
    let img = ctx.push("vault-errors", "v1").await;
    let sign = |key: &str, overrides: &[(&str, &str)]| {
        ctx.run_with(&["sign", "--key", key, &img.reference], overrides, true)
    };
    let key = "hashivault://release";

    one_line_error(
        &sign(key, &[("VAULT_TOKEN", "hvs.expired")]),
        "denied reading the key for hashivault://release (403)",
    );
    one_line_error(
        &sign("hashivault://nope", &[]),
        "Vault transit key nope not found under mount transit/",
    );
    one_line_error(
        &sign(key, &[("TRANSIT_SECRET_ENGINE_PATH", "signing")]),
        "no transit secrets engine mounted at signing/",
    );
    let closed = format!("https://127.0.0.1:{}", free_port().unwrap());
    one_line_error(
        &sign(key, &[("VAULT_ADDR", &closed)]),
        "cannot reach Vault at",
    );
    // Without the CA the server's certificate is not trusted: fail closed.
    let run = sign(key, &[("VAULT_CACERT", "")]);
    one_line_error(&run, "cannot reach Vault at");
    assert!(run.stderr.to_lowercase().contains("certificate"), "{run:?}");
    one_line_error(&sign("hashivault://symmetric", &[]), "type aes256-gcm96");
    one_line_error(&sign(key, &[("VAULT_ADDR", "")]), "VAULT_ADDR is not set");
    one_line_error(
        &sign(key, &[("VAULT_TOKEN", "")]),
        "no Vault token for hashivault://release",
    );
    one_line_error(
        &sign(key, &[("VAULT_ADDR", "http://vault.example:8200")]),
        "clear text",
    );
    one_line_error(
        &sign("awskms:///arn:aws:kms:eu-west-1:1:key/k", &[]),
        "awskms:// keys are not supported by imgate",
    );
    one_line_error(
        &sign("gcpkms://projects/p/keyRings/r/cryptoKeys/k", &[]),
        "not supported",
    );
    one_line_error(
        &sign("azurekms://v.vault.azure.net/k", &[]),
        "not supported",
    );

    // None of the failures signed anything.
    let public = ctx.write(
        "r.pub",
        &ctx.vault.public_key_pem("transit", KEY, 1).unwrap(),
    );
    assert_eq!(ctx.verify(&public, &img.reference).code, 1);
}

/// The same flow against a real Vault or OpenBao: needs VAULT_ADDR,
/// VAULT_TOKEN (a token allowed to create, read and sign with transit keys)
/// and transit mounted (TRANSIT_SECRET_ENGINE_PATH, default `transit`).
/// Creates a key named imgate-test-<pid>; delete it afterwards if wanted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Vault or OpenBao: set VAULT_ADDR and VAULT_TOKEN, run with --ignored (DEVELOPMENT.md)"]
async fn real_vault_round_trip() {
    let vars: Vec<(String, String)> = [
        "VAULT_ADDR",
        "VAULT_TOKEN",
        "VAULT_CACERT",
        "TRANSIT_SECRET_ENGINE_PATH",
        "VAULT_NAMESPACE",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    assert!(
        vars.iter().any(|(k, _)| k == "VAULT_ADDR"),
        "set VAULT_ADDR (and VAULT_TOKEN) to run this test"
    );
    let registry = Registry::start(Variant::Tls)
        .await
        .expect("registry starts");
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let key = format!("hashivault://imgate-test-{}", std::process::id());
    let prefix = dir.path().join("real").display().to_string();
    let run = |args: &[&str], with_registry: bool| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if with_registry {
            all.extend(registry.cli_args());
        }
        Run::from_output(&run_imgate(&all, &env, None).expect("imgate runs"))
    };
    let gen = run(
        &[
            "keys",
            "generate",
            "--kms",
            &key,
            "--output-prefix",
            &prefix,
        ],
        false,
    );
    assert_eq!(gen.code, 0, "{gen:?}");
    let public = run(&["keys", "public", "--key", &key], false);
    assert_eq!(public.code, 0, "{public:?}");
    let written = std::fs::read_to_string(format!("{prefix}.pub")).unwrap();
    assert!(same_key(&public.stdout, &written));
    let img = ImageBuilder::new("real-vault")
        .image()
        .push(&registry, "team/vault", "v1", PushWith::Http)
        .await
        .expect("push");
    for format in ["legacy", "bundle"] {
        let signed = run(
            &["sign", "--key", &key, "--format", format, &img.reference],
            true,
        );
        assert_eq!(signed.code, 0, "{signed:?}");
    }
    let pub_file = format!("{prefix}.pub");
    let verified = run(&["verify", "--key", &pub_file, &img.reference], true);
    assert_eq!(verified.code, 0, "{verified:?}");
}
