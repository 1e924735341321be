//! `imgate sign` against a private Sigstore on loopback (the harness's OIDC
//! issuer, Fulcio, Rekor v1 and v2, and timestamp authority) and the real
//! registry, through the real binary: keyless signatures in both formats and
//! both log versions, key signatures with `--tlog-upload`, each verified by
//! `imgate verify` at `--tlog required`; every way a service can misbehave,
//! each failing the signing with a clear error and leaving the registry as
//! it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use imgate_tests::sigstore_services::{
    ConfigSpec, Fault, Faults, PrivateSigstore, Svc, TokenSpec, GITHUB_ISSUER,
    GITHUB_REQUEST_TOKEN, GITHUB_WORKFLOW_IDENTITY,
};
use imgate_tests::{
    block_on, run_imgate, ImageBuilder, PushWith, PushedImage, RawClient, Registry, Variant,
};
use serde_json::Value;

use crate::common::Run;

mod failures;
mod independent;
mod keys;
mod webhook;

const EMAIL: &str = "ci@imgate.test";
const REPO: &str = "team/app";

/// A registry with one image, a private Sigstore, and a scratch dir.
struct Ctx {
    registry: Registry,
    sigstore: PrivateSigstore,
    image: PushedImage,
    dir: tempfile::TempDir,
}

impl Ctx {
    fn new(label: &str) -> Ctx {
        Ctx::with(label, false)
    }

    /// [`Ctx::new`] with the services on HTTPS behind a CA of their own.
    fn new_tls(label: &str) -> Ctx {
        Ctx::with(label, true)
    }

    fn with(label: &str, tls: bool) -> Ctx {
        block_on(async {
            let registry = Registry::start(Variant::Http)
                .await
                .expect("registry starts");
            let sigstore = if tls {
                PrivateSigstore::start_tls().await
            } else {
                PrivateSigstore::start().await
            }
            .expect("sigstore starts");
            let image = ImageBuilder::new(label)
                .image()
                .push(&registry, REPO, "v1", PushWith::Http)
                .await
                .expect("push");
            Ctx {
                registry,
                sigstore,
                image,
                dir: tempfile::tempdir().expect("tempdir"),
            }
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A token for [`EMAIL`] from the private issuer.
    fn token(&self) -> String {
        self.sigstore
            .token(&TokenSpec::email(EMAIL))
            .expect("token")
    }

    /// `imgate ARGS` with the registry's options appended.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.registry.cli_args());
        // No token or GitHub credentials from the environment the tests run in.
        let mut env_all = vec![
            ("SIGSTORE_ID_TOKEN", ""),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", ""),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", ""),
        ];
        env_all.retain(|(k, _)| !env.iter().any(|(e, _)| e == k));
        env_all.extend_from_slice(env);
        Run::from_output(&run_imgate(&all, &env_all, None).expect("imgate runs"))
    }

    /// `imgate sign` against the private instance with `config` (a signing
    /// configuration path) and `extra` arguments, the image last.
    fn sign_with(&self, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
        self.sign_image(&self.image.reference, config, extra, env)
    }

    /// [`Ctx::sign_with`] for another image of the registry.
    fn sign_image(&self, image: &str, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let root = self.sigstore.trusted_root_path();
        let mut args = vec![
            "sign",
            "--signing-config",
            config,
            "--trusted-root",
            root.to_str().unwrap(),
            "--allow-http",
            "127.0.0.1",
        ];
        if !extra.contains(&"--sigstore-timeout") {
            args.extend(["--sigstore-timeout", "5s"]);
        }
        args.extend_from_slice(extra);
        args.push(image);
        self.run(&args, env)
    }

    /// Push another image to the registry under [`REPO`].
    fn push(&self, label: &str, tag: &str) -> PushedImage {
        block_on(
            ImageBuilder::new(label)
                .image()
                .push(&self.registry, REPO, tag, PushWith::Http),
        )
        .expect("push")
    }

    /// Keyless `imgate sign` with the default configuration (Rekor v1, TSA),
    /// the token in SIGSTORE_ID_TOKEN.
    fn sign_keyless(&self, extra: &[&str]) -> Run {
        let config = self.sigstore.signing_config_path();
        let token = self.token();
        self.sign_with(
            config.to_str().unwrap(),
            extra,
            &[("SIGSTORE_ID_TOKEN", &token)],
        )
    }

    /// `imgate verify --output json` by identity at `--tlog required`.
    fn verify_identity(&self, identity: &str, issuer: &str, extra: &[&str]) -> Run {
        let root = self.sigstore.trusted_root_path();
        let mut args = vec![
            "verify",
            "--output",
            "json",
            "--tlog",
            "required",
            "--trusted-root",
            root.to_str().unwrap(),
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer",
            issuer,
        ];
        args.extend_from_slice(extra);
        args.push(&self.image.reference);
        self.run(&args, &[])
    }

    fn assert_verified_keyless(&self, format: &str) -> Value {
        let issuer = self.sigstore.issuer();
        let run = self.verify_identity(EMAIL, &issuer, &[]);
        assert_eq!(
            run.code, 0,
            "keyless {format} signature should verify: {run:?}"
        );
        let out = run.json();
        assert_eq!(out[0]["format"], format, "{out}");
        out
    }

    /// The repository's tags.
    fn tags(&self) -> Vec<String> {
        block_on(async {
            let raw = RawClient::new(&self.registry).expect("raw client");
            let mut tags = raw.list_tags(REPO).await.expect("tags");
            tags.sort();
            tags
        })
    }

    /// The legacy `.sig` manifest's layers.
    fn sig_layers(&self) -> Vec<Value> {
        block_on(async {
            let raw = RawClient::new(&self.registry).expect("raw client");
            let tag = format!("{}.sig", self.image.digest.replace(':', "-"));
            let m = raw.get_manifest(REPO, &tag).await.expect("sig manifest");
            let m: Value = serde_json::from_slice(&m.bytes).expect("json");
            m["layers"].as_array().cloned().unwrap_or_default()
        })
    }

    /// The bundle attached through the referrers tag schema (the registry
    /// has no referrers API): the last one listed.
    fn bundle(&self) -> Value {
        block_on(async {
            let raw = RawClient::new(&self.registry).expect("raw client");
            let tag = self.image.digest.replace(':', "-");
            let index = raw.get_manifest(REPO, &tag).await.expect("referrers index");
            let index: Value = serde_json::from_slice(&index.bytes).expect("json");
            let last = index["manifests"]
                .as_array()
                .and_then(|m| m.last())
                .cloned()
                .expect("a referrer");
            let artifact = raw
                .get_manifest(REPO, last["digest"].as_str().unwrap())
                .await
                .expect("artifact manifest");
            let artifact: Value = serde_json::from_slice(&artifact.bytes).expect("json");
            let blob = raw
                .get_blob(REPO, artifact["layers"][0]["digest"].as_str().unwrap())
                .await
                .expect("bundle blob");
            serde_json::from_slice(&blob).expect("bundle json")
        })
    }
}

#[test]
fn keyless_legacy_signature_carries_cosigns_annotations_and_verifies_at_tlog_required() {
    let ctx = Ctx::new("keyless-legacy");
    let run = ctx.sign_keyless(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), ctx.image.pinned());
    let layers = ctx.sig_layers();
    assert_eq!(layers.len(), 1);
    let annotations = &layers[0]["annotations"];
    for key in [
        "dev.cosignproject.cosign/signature",
        "dev.sigstore.cosign/certificate",
        "dev.sigstore.cosign/chain",
        "dev.sigstore.cosign/bundle",
        "dev.sigstore.cosign/rfc3161timestamp",
    ] {
        assert!(annotations[key].is_string(), "{key} missing: {annotations}");
    }
    let rekor: Value =
        serde_json::from_str(annotations["dev.sigstore.cosign/bundle"].as_str().unwrap()).unwrap();
    assert!(rekor["SignedEntryTimestamp"].is_string(), "{rekor}");
    assert_eq!(ctx.sigstore.logged(false), 1);
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), 1);
    assert_eq!(ctx.sigstore.calls(Svc::Tsa), 1);

    let out = ctx.assert_verified_keyless("legacy");
    assert_eq!(out[0]["digest"], ctx.image.digest.as_str());
    // Another identity is refused by the same verifier.
    let issuer = ctx.sigstore.issuer();
    let other = ctx.verify_identity("someone@imgate.test", &issuer, &[]);
    assert_eq!(other.code, 1, "{other:?}");
}

#[test]
fn keyless_bundle_logged_in_rekor_v1_verifies_at_tlog_required() {
    let ctx = Ctx::new("keyless-bundle-v1");
    let run = ctx.sign_keyless(&["--format", "bundle"]);
    assert_eq!(run.code, 0, "{run:?}");
    let bundle = ctx.bundle();
    let material = &bundle["verificationMaterial"];
    assert!(material["certificate"]["rawBytes"].is_string(), "{bundle}");
    let entry = &material["tlogEntries"][0];
    assert_eq!(entry["kindVersion"]["kind"], "dsse", "{entry}");
    assert_eq!(entry["kindVersion"]["version"], "0.0.1");
    assert!(entry["inclusionPromise"]["signedEntryTimestamp"].is_string());
    assert!(entry["inclusionProof"]["checkpoint"]["envelope"].is_string());
    assert_eq!(
        material["timestampVerificationData"]["rfc3161Timestamps"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    ctx.assert_verified_keyless("bundle");
}

#[test]
fn keyless_bundle_logged_in_rekor_v2_is_a_hashedrekord_with_a_timestamp() {
    let ctx = Ctx::new("keyless-bundle-v2");
    let config = ctx
        .sigstore
        .write_signing_config(
            "v2.json",
            ConfigSpec {
                rekor_v1: true,
                rekor_v2: true,
                tsa: true,
            },
        )
        .unwrap();
    let token = ctx.token();
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &["--format", "bundle", "--identity-token", &token],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        (ctx.sigstore.logged(true), ctx.sigstore.logged(false)),
        (1, 0)
    );
    let entry = ctx.bundle()["verificationMaterial"]["tlogEntries"][0].clone();
    assert_eq!(entry["kindVersion"]["kind"], "hashedrekord", "{entry}");
    assert_eq!(entry["kindVersion"]["version"], "0.0.2");
    assert!(
        entry.get("inclusionPromise").is_none(),
        "v2 has no SET: {entry}"
    );
    ctx.assert_verified_keyless("bundle");

    // The legacy layout needs a SET: with both logs configured it takes v1.
    let run = ctx.sign_with(config.to_str().unwrap(), &["--identity-token", &token], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ctx.sigstore.logged(false), 1);
    ctx.assert_verified_keyless("legacy");
}

#[test]
fn legacy_layout_with_only_a_v2_log_is_refused_before_any_service_is_called() {
    let ctx = Ctx::new("legacy-v2-only");
    let config = ctx
        .sigstore
        .write_signing_config(
            "v2-only.json",
            ConfigSpec {
                rekor_v1: false,
                rekor_v2: true,
                tsa: true,
            },
        )
        .unwrap();
    let token = ctx.token();
    let before = ctx.tags();
    let run = ctx.sign_with(config.to_str().unwrap(), &["--identity-token", &token], &[]);
    run.assert_one_line_error("--format bundle");
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), 0);
    assert_eq!(ctx.tags(), before);
}

#[test]
fn github_actions_ambient_credentials_sign_as_the_workflow() {
    let ctx = Ctx::new("keyless-gha");
    let config = ctx.sigstore.signing_config_path();
    let url = ctx.sigstore.actions_token_url();
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &["--format", "bundle"],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", GITHUB_REQUEST_TOKEN),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ctx.sigstore.calls(Svc::Oidc), 1);
    let run = ctx.verify_identity(
        GITHUB_WORKFLOW_IDENTITY,
        GITHUB_ISSUER,
        &[
            "--certificate-github-workflow-repository",
            "imgate-test/app",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn identity_token_from_a_file_is_read_and_a_flag_beats_the_environment() {
    let ctx = Ctx::new("keyless-token-file");
    let file = ctx.path("token");
    std::fs::write(&file, format!("{}\n", ctx.token())).unwrap();
    let flag = format!("@{}", file.display());
    let config = ctx.sigstore.signing_config_path();
    // A garbage SIGSTORE_ID_TOKEN is not read when the flag names a token.
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &["--identity-token", &flag],
        &[("SIGSTORE_ID_TOKEN", "not-a-jwt")],
    );
    assert_eq!(run.code, 0, "{run:?}");
    ctx.assert_verified_keyless("legacy");
}

#[test]
fn the_self_check_holds_the_certificate_to_the_identity_given_on_the_command_line() {
    let ctx = Ctx::new("keyless-expected-identity");
    let before = ctx.tags();
    let issuer = ctx.sigstore.issuer();
    let run = ctx.sign_keyless(&[
        "--certificate-identity",
        "release@imgate.test",
        "--certificate-oidc-issuer",
        &issuer,
    ]);
    run.assert_one_line_error("another identity");
    assert!(
        run.stderr.contains("release@imgate.test") && run.stderr.contains(EMAIL),
        "{run:?}"
    );
    assert_eq!(ctx.sigstore.calls(Svc::RekorV1), 0);
    assert_eq!(ctx.tags(), before);
    // The identity the token stands for, stated explicitly, passes.
    let run = ctx.sign_keyless(&[
        "--certificate-identity",
        EMAIL,
        "--certificate-oidc-issuer",
        &issuer,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn without_any_token_the_error_names_every_source() {
    let ctx = Ctx::new("keyless-no-token");
    let config = ctx.sigstore.signing_config_path();
    let before = ctx.tags();
    let run = ctx.sign_with(config.to_str().unwrap(), &[], &[]);
    run.assert_one_line_error("no identity token");
    for named in [
        "--identity-token",
        "SIGSTORE_ID_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "id-token: write",
        "--key",
    ] {
        assert!(run.stderr.contains(named), "{named}: {run:?}");
    }
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), 0);
    assert_eq!(ctx.tags(), before);
}

#[test]
fn help_says_what_goes_public() {
    let out = run_imgate(["sign", "--help"], &[], None).expect("imgate runs");
    let help = String::from_utf8_lossy(&out.stdout);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains(
            "Public: keyless signing and --tlog-upload record, on the public-good Rekor log"
        ),
        "{help}"
    );
    assert!(
        help.contains("the certificate (your CI identity: repository, workflow, ref)"),
        "{help}"
    );
}

#[test]
fn trust_root_update_fetches_the_signing_configuration_and_imgate_signs_with_it() {
    let ctx = Ctx::new("tuf-signing-config");
    let root = ctx.sigstore.trusted_root_json().unwrap();
    let spec = ConfigSpec {
        rekor_v1: true,
        rekor_v2: false,
        tsa: true,
    };
    let config = ctx.sigstore.signing_config_json(spec).to_string();
    let mut repo = imgate_tests::tuf::TufRepo::serve(root.as_bytes()).unwrap();
    repo.publish_targets(&[
        ("trusted_root.json", root.as_bytes()),
        ("signing_config.v0.2.json", config.as_bytes()),
    ])
    .unwrap();
    let anchor = ctx.path("root.json");
    std::fs::write(&anchor, repo.first_root()).unwrap();
    let (root_out, config_out) = (
        ctx.path("trusted_root.json"),
        ctx.path("signing_config.json"),
    );
    let update = |state: &str| {
        let state = ctx.path(state);
        let out = run_imgate(
            [
                "trust-root",
                "update",
                "--tuf-url",
                &repo.url(),
                "--tuf-root",
                anchor.to_str().unwrap(),
                "--tuf-state",
                state.to_str().unwrap(),
                "--out",
                root_out.to_str().unwrap(),
                "--signing-config-out",
                config_out.to_str().unwrap(),
            ],
            &[],
            None,
        );
        Run::from_output(&out.expect("imgate runs"))
    };
    let run = update("tuf-state");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(&config_out).unwrap(), config);
    assert_eq!(std::fs::read_to_string(&root_out).unwrap(), root);

    // What TUF delivered is what signing uses.
    let token = ctx.token();
    let run = ctx.sign_with(
        config_out.to_str().unwrap(),
        &["--identity-token", &token],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    ctx.assert_verified_keyless("legacy");

    // Bytes that are not the ones the targets metadata pins are refused (a
    // fresh TUF state, so nothing cached answers instead), and the file
    // written before stays as it was.
    repo.tamper("targets/signing_config.v0.2.json", b"{}".to_vec())
        .unwrap();
    let run = update("fresh-tuf-state");
    run.assert_one_line_error("signing_config.v0.2.json");
    assert_eq!(std::fs::read_to_string(&config_out).unwrap(), config);
}

#[test]
fn neither_token_nor_key_reach_the_logs_or_the_disk() {
    let ctx = Ctx::new("keyless-secrets");
    let token = ctx.token();
    let config = ctx.sigstore.signing_config_path();
    let root = ctx.sigstore.trusted_root_path();
    // An empty home, working and temp dir: still empty afterwards.
    let scratch = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(imgate_tests::imgate_bin());
    command
        .args([
            "sign",
            "--signing-config",
            config.to_str().unwrap(),
            "--trusted-root",
            root.to_str().unwrap(),
            "--allow-http",
            "127.0.0.1",
            "--format",
            "bundle",
        ])
        .args(ctx.registry.cli_args())
        .arg(&ctx.image.reference)
        .current_dir(scratch.path())
        .env("HOME", scratch.path())
        .env("TMPDIR", scratch.path())
        .env("SIGSTORE_ID_TOKEN", &token)
        .env("IMGATE_LOG", "trace");
    let out =
        imgate_tests::bin::run_bounded(command, None, std::time::Duration::from_secs(60)).unwrap();
    let run = Run::from_output(&out);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("TRACE") || run.stderr.contains("DEBUG"),
        "trace logs were on: {run:?}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !run.stderr.contains(signature) && !run.stdout.contains(signature),
        "the token leaked: {run:?}"
    );
    let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(left.is_empty(), "files written: {left:?}");
}
