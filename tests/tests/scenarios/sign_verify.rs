//! Scenarios: `imgate sign` and `imgate verify` against the real registry
//! (every auth variant) with the real binary, in both signature formats; a
//! tamper matrix where each case must be denied for the right reason (in
//! `tamper`); the CLI's key errors; concurrent signers through the library
//! API.

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Format, Requirements, SignOptions, Verdict};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::image::Blob;
use imgate_tests::{run_imgate, ImageBuilder, PushWith, PushedImage, RawClient, Registry, Variant};
use serde_json::Value;

use crate::common::Run;

mod cold_path;
mod first_contact;
mod tamper;
mod tls_roots;

const PASSWORD: &str = "correct horse";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

impl Run {
    /// The `kind`s of the unmet requirements of the first image (JSON output).
    fn unmet_kinds(&self) -> Vec<String> {
        self.json()[0]["unmet"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| u["kind"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A registry, a scratch dir for keys, and a raw client to tamper with.
struct Ctx {
    registry: Registry,
    dir: tempfile::TempDir,
    raw: RawClient,
}

impl Ctx {
    async fn new(variant: Variant) -> Ctx {
        let registry = Registry::start(variant).await.expect("registry starts");
        let raw = RawClient::new(&registry).expect("raw client");
        Ctx {
            registry,
            dir: tempfile::tempdir().expect("tempdir"),
            raw,
        }
    }

    /// Writes a new cosign key pair `NAME.key` (encrypted with PASSWORD) and `NAME.pub`.
    fn keys(&self, name: &str) -> (String, String) {
        let key = SigningKey::generate();
        let (k, p) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.pub")),
        );
        std::fs::write(&k, key.to_cosign_pem(PASSWORD.as_bytes()).expect("encrypt"))
            .expect("write");
        std::fs::write(&p, key.public_key().to_pem()).expect("write");
        (k, p)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    async fn push(&self, label: &str, repo: &str, tag: &str) -> PushedImage {
        ImageBuilder::new(label)
            .image()
            .push(&self.registry, repo, tag, PushWith::Http)
            .await
            .expect("push")
    }

    fn run(&self, command: &str, args: &[&str]) -> Run {
        let mut all = vec![command.to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(self.registry.cli_args());
        let out = run_imgate(&all, &[("IMGATE_PASSWORD", PASSWORD)], None).expect("imgate runs");
        Run::from_output(&out)
    }

    fn sign(&self, key: &str, args: &[&str]) -> Run {
        let mut all = vec!["--key", key];
        all.extend_from_slice(args);
        let run = self.run("sign", &all);
        assert_eq!(run.code, 0, "sign {args:?} failed: {run:?}");
        run
    }

    /// `imgate verify --output json` with the given public keys.
    fn verify(&self, pubs: &[&str], args: &[&str]) -> Run {
        let mut all = vec!["--output", "json"];
        for p in pubs {
            all.extend(["--key", p]);
        }
        all.extend_from_slice(args);
        self.run("verify", &all)
    }

    fn assert_verified(&self, pubs: &[&str], args: &[&str]) -> Value {
        let run = self.verify(pubs, args);
        assert_eq!(run.code, 0, "verify {args:?} should pass: {run:?}");
        run.json()
    }

    /// Asserts a denial (exit 1) whose unmet kinds include `kind`; returns the run.
    fn assert_denied(&self, pubs: &[&str], args: &[&str], kind: &str) -> Run {
        let run = self.verify(pubs, args);
        assert_eq!(run.code, 1, "verify {args:?} should be denied: {run:?}");
        assert_eq!(run.json()[0]["verified"], false);
        assert!(
            run.unmet_kinds().iter().any(|k| k == kind),
            "verify {args:?}: expected unmet {kind}, got {:?}\n{}",
            run.unmet_kinds(),
            run.stdout
        );
        run
    }

    async fn manifest(&self, repo: &str, reference: &str) -> Value {
        let m = self
            .raw
            .get_manifest(repo, reference)
            .await
            .expect("manifest");
        serde_json::from_slice(&m.bytes).expect("manifest JSON")
    }

    /// The path of a blob's data file in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.registry
            .scratch_dir()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Copies a blob from one repository to another.
    async fn copy_blob(&self, from: &str, to: &str, digest: &str, media_type: &str) {
        let bytes = self.raw.get_blob(from, digest).await.expect("blob");
        self.raw
            .put_blob(to, &Blob::new(media_type, bytes))
            .await
            .expect("put blob");
    }
}

fn repo_of(pushed: &PushedImage) -> String {
    let name = pushed.repository();
    name.split_once('/')
        .map(|(_, r)| r.to_string())
        .expect("host/repo")
}

fn tag_form(digest: &str) -> String {
    digest.replace(':', "-")
}

async fn round_trip(variant: Variant) {
    let ctx = Ctx::new(variant).await;
    let (k1, p1) = ctx.keys("one");
    let (k2, p2) = ctx.keys("two");
    let (_, p3) = ctx.keys("three");
    let img = ctx.push("round-trip", "team/app", "v1").await;

    let run = ctx.sign(&k1, &[&img.reference]);
    assert_eq!(
        run.stdout.trim(),
        img.pinned(),
        "sign prints the pinned reference"
    );
    let ok = ctx.assert_verified(&[&p1], &[&img.reference]);
    assert_eq!(ok[0]["digest"], img.digest.as_str());
    assert_eq!(ok[0]["format"], "legacy");
    assert_eq!(ok[0]["key"], p1.as_str());

    // A second signature keeps the first.
    ctx.sign(&k2, &[&img.reference]);
    let sig = ctx
        .manifest("team/app", &format!("{}.sig", tag_form(&img.digest)))
        .await;
    let layers = sig["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "{sig}");
    assert!(layers.iter().all(|l| l["mediaType"] == SIMPLE_SIGNING));
    ctx.assert_verified(&[&p1], &[&img.reference]);
    ctx.assert_verified(&[&p2], &[&img.reference]);
    ctx.assert_verified(&[&p3, &p2], &[&img.reference]);
    ctx.assert_denied(&[&p3], &[&img.reference], "wrong_key");

    // Signing again with the same key and payload adds nothing.
    ctx.sign(&k1, &[&img.reference]);
    let sig = ctx
        .manifest("team/app", &format!("{}.sig", tag_form(&img.digest)))
        .await;
    assert_eq!(sig["layers"].as_array().map(Vec::len), Some(2));

    // Text output names the digest verified.
    let text = ctx.run("verify", &["--key", &p2, &img.reference]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains(&img.digest), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_http() {
    round_trip(Variant::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_tls() {
    round_trip(Variant::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_basic_auth() {
    round_trip(Variant::BasicAuth).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_token() {
    round_trip(Variant::Token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_round_trip_uses_the_referrers_tag_schema() {
    let ctx = Ctx::new(Variant::Token).await;
    let (k1, p1) = ctx.keys("one");
    let (k2, p2) = ctx.keys("two");
    let img = ctx.push("bundle", "team/app", "v1").await;

    let run = ctx.sign(
        &k1,
        &["--format", "bundle", "-a", "env=prod", &img.reference],
    );
    assert_eq!(run.stdout.trim(), img.pinned());
    let ok = ctx.assert_verified(&[&p1], &["-a", "env=prod", &img.reference]);
    assert_eq!(ok[0]["format"], "bundle");
    assert_eq!(ok[0]["annotations"]["env"], "prod");

    // Distribution 2.8 has no referrers API: the index at sha256-<hex> lists it.
    let index = ctx.manifest("team/app", &tag_form(&img.digest)).await;
    let entries = index["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 1, "{index}");
    let attached = ctx
        .manifest("team/app", entries[0]["digest"].as_str().expect("digest"))
        .await;
    assert_eq!(attached["artifactType"], BUNDLE);
    assert_eq!(attached["layers"][0]["mediaType"], BUNDLE);
    assert_eq!(attached["subject"]["digest"], img.digest.as_str());
    assert_eq!(
        attached["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        attached["annotations"]["dev.sigstore.bundle.predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );

    // A second key appends; the same key again does not duplicate.
    ctx.sign(&k2, &["--format", "bundle", &img.reference]);
    ctx.sign(
        &k1,
        &["--format", "bundle", "-a", "env=prod", &img.reference],
    );
    let index = ctx.manifest("team/app", &tag_form(&img.digest)).await;
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(2),
        "{index}"
    );
    ctx.assert_verified(&[&p2], &[&img.reference]);
    ctx.assert_verified(&[&p1], &[&img.reference]);

    // Both formats side by side: a legacy signature by key two satisfies too.
    ctx.sign(&k2, &[&img.reference]);
    let ok = ctx.assert_verified(&[&p2], &[&img.reference]);
    assert_eq!(ok[0]["format"], "legacy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cosign_key_signs_and_verifies() {
    let ctx = Ctx::new(Variant::Http).await;
    let fixtures = imgate_tests::bin::workspace_root().join("fixtures/cosign");
    let key = fixtures.join("cosign-generated-empty-password.key");
    let public = fixtures.join("cosign-generated-empty-password.pub");
    let img = ctx.push("cosign-key", "team/app", "v1").await;
    let mut args = vec![
        "sign".to_string(),
        "--key".to_string(),
        key.display().to_string(),
        img.reference.clone(),
    ];
    args.extend(ctx.registry.cli_args());
    let out = run_imgate(&args, &[("COSIGN_PASSWORD", "")], None).expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctx.assert_verified(&[&public.display().to_string()], &[&img.reference]);
}

/// The digests of the signature layers of `digest` (legacy payloads or bundle blobs).
async fn signature_layers(ctx: &Ctx, repo: &str, digest: &str, legacy: bool) -> Vec<String> {
    let manifests = if legacy {
        vec![
            ctx.manifest(repo, &format!("{}.sig", tag_form(digest)))
                .await,
        ]
    } else {
        let index = ctx.manifest(repo, &tag_form(digest)).await;
        let mut out = Vec::new();
        for e in index["manifests"].as_array().expect("entries") {
            out.push(
                ctx.manifest(repo, e["digest"].as_str().expect("digest"))
                    .await,
            );
        }
        out
    };
    manifests
        .iter()
        .flat_map(|m| m["layers"].as_array().cloned().unwrap_or_default())
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_image_errors_are_one_clear_line_and_exit_2() {
    let ctx = Ctx::new(Variant::Http).await;
    let (k1, p1) = ctx.keys("ci");
    let img = ctx.push("errors", "team/app", "v1").await;
    let host = ctx.registry.host().to_string();
    // (case, arguments, environment, text the error line must contain)
    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "public key to sign",
            vec![
                "sign".into(),
                "--key".into(),
                p1.clone(),
                img.reference.clone(),
            ],
            vec![],
            "public key",
        ),
        (
            "private key to verify",
            vec![
                "verify".into(),
                "--key".into(),
                k1.clone(),
                img.reference.clone(),
            ],
            vec![],
            "private key",
        ),
        (
            "missing key file",
            vec![
                "sign".into(),
                "--key".into(),
                ctx.path("nope.key"),
                img.reference.clone(),
            ],
            vec![("IMGATE_PASSWORD", PASSWORD)],
            "not found",
        ),
        (
            "wrong password",
            vec![
                "sign".into(),
                "--key".into(),
                k1.clone(),
                img.reference.clone(),
            ],
            vec![("IMGATE_PASSWORD", "wrong")],
            "wrong password",
        ),
        (
            "digest not in the registry",
            vec![
                "sign".into(),
                "--key".into(),
                k1.clone(),
                format!("{host}/team/app@sha256:{}", "0".repeat(64)),
            ],
            vec![("IMGATE_PASSWORD", PASSWORD)],
            "not found",
        ),
    ];
    for (name, mut args, env, needle) in cases {
        args.extend(ctx.registry.cli_args());
        let out = run_imgate(&args, &env, None).expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("imgate:"))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: {stderr}");
        assert!(lines[0].to_lowercase().contains(needle), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing signed or verified");
    }
    // Nothing was pushed by the failed sign runs.
    let sig = ctx
        .raw
        .get_manifest("team/app", &format!("{}.sig", tag_form(&img.digest)))
        .await;
    assert!(sig.is_err(), "no signature should exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildx_metadata_names_what_to_sign() {
    let ctx = Ctx::new(Variant::Http).await;
    let (k1, p1) = ctx.keys("ci");
    let img = ctx.push("buildx", "team/app", "v1").await;
    let meta = ctx.path("metadata.json");
    std::fs::write(
        &meta,
        serde_json::json!({
            "buildx.build.ref": "builder/builder0/x",
            "containerimage.digest": img.digest,
            "image.name": format!("{},{}:latest", img.reference, img.repository()),
        })
        .to_string(),
    )
    .expect("write");
    let run = ctx.sign(&k1, &["--buildx-metadata", &meta]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            img.pinned(),
            format!("{}:latest@{}", img.repository(), img.digest)
        ]
    );
    ctx.assert_verified(&[&p1], &[&img.pinned()]);
}

/// Two signers at once on the same image: both signatures end up present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signers_keep_both_signatures() {
    let ctx = Ctx::new(Variant::Http).await;
    let client = RegistryClient::new(ctx.registry.client_config()).expect("client");
    for (round, format) in [
        Format::Legacy,
        Format::Legacy,
        Format::Legacy,
        Format::Bundle,
        Format::Bundle,
    ]
    .into_iter()
    .enumerate()
    {
        let pushed = ctx
            .push(
                &format!("concurrent-{round}"),
                "team/app",
                &format!("r{round}"),
            )
            .await;
        let image = ImageRef::parse(&pushed.pinned()).expect("ref");
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let opts = SignOptions {
            format,
            annotations: BTreeMap::new(),
        };
        let (ra, rb) = tokio::join!(
            signature::sign(&client, &image, &a, &opts),
            signature::sign(&client, &image, &b, &opts)
        );
        ra.expect("signer a");
        rb.expect("signer b");
        for key in [&a, &b] {
            let req = Requirements {
                keys: vec![key.public_key()],
                annotations: BTreeMap::new(),
                match_repository: false,
                ..Default::default()
            };
            let verdict = signature::verify(&client, &image, &req)
                .await
                .expect("verify");
            assert!(
                matches!(verdict, Verdict::Verified(ref v) if v.format == format),
                "round {round}: {verdict:?}"
            );
        }
        let layers =
            signature_layers(&ctx, "team/app", &pushed.digest, format == Format::Legacy).await;
        assert_eq!(layers.len(), 2, "round {round} ({format}): {layers:?}");
    }
}
