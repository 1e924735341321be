//! Scenarios: in-toto attestations on the real registry through the real
//! binary. `imgate attest` then `imgate verify-attestation` in both formats;
//! each way a statement must not count, refused with its reason (another
//! digest, a wrong key, a wrong keyless identity, a lying annotation, an
//! unsigned BuildKit attestation: in `buildkit`); the CEL conditions of a
//! policy (`policy`); the caps and peak memory under a flood (`limits`);
//! and checks by implementations outside imgate (`interop`).

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use imgate_core::signature::bundle::{self, Envelope, EnvelopeSignature, IN_TOTO_PAYLOAD_TYPE};
use imgate_core::signature::legacy;
use imgate_core::Digest;
use imgate_keys::SigningKey;
use imgate_tests::image::Blob;
use imgate_tests::{run_imgate, ImageBuilder, PushWith, PushedImage, RawClient, Registry, Variant};
use serde_json::{json, Value};

use crate::common::Run;

mod buildkit;
mod cold_path;
mod interop;
mod keyless_sign;
mod limits;
mod policy;
mod webhook;

const PASSWORD: &str = "attest pass";
const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A registry, a scratch dir and a raw client.
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

    /// A new key pair `NAME.key` (encrypted) and `NAME.pub`, and the key.
    fn keys(&self, name: &str) -> (String, String, SigningKey) {
        let key = SigningKey::generate();
        let (k, p) = (
            self.path(&format!("{name}.key")),
            self.path(&format!("{name}.pub")),
        );
        std::fs::write(&k, key.to_cosign_pem(PASSWORD.as_bytes()).expect("encrypt")).unwrap();
        std::fs::write(&p, key.public_key().to_pem()).unwrap();
        (k, p, key)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn write(&self, name: &str, value: &Value) -> String {
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        path
    }

    async fn push(&self, label: &str, repo: &str) -> PushedImage {
        ImageBuilder::new(label)
            .image()
            .push(&self.registry, repo, "v1", PushWith::Http)
            .await
            .expect("push")
    }

    /// `imgate COMMAND ARGS` with the registry's connection flags.
    fn run(&self, command: &str, args: &[&str]) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(self.registry.cli_args());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_plain(command, &all)
    }

    /// `imgate attest` that must succeed.
    fn attest(&self, key: &str, kind: &str, predicate: &Value, format: &str, image: &str) {
        let file = self.write(&format!("predicate-{}.json", rand_name()), predicate);
        let run = self.run(
            "attest",
            &[
                "--key",
                key,
                "--type",
                kind,
                "--predicate",
                &file,
                "--format",
                format,
                image,
            ],
        );
        assert_eq!(run.code, 0, "attest {kind} {format}: {run:?}");
    }

    /// `imgate verify-attestation --output json` with `args`.
    fn verify(&self, args: &[&str]) -> Run {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        self.run("verify-attestation", &all)
    }

    fn assert_verified(&self, args: &[&str]) -> Value {
        let run = self.verify(args);
        assert_eq!(run.code, 0, "should verify: {run:?}");
        run.json()[0].clone()
    }

    /// A denial (exit 1) whose messages include `needle`; returns the image's result.
    fn assert_denied(&self, args: &[&str], needle: &str) -> Value {
        let run = self.verify(args);
        assert_eq!(run.code, 1, "should be denied: {run:?}");
        let result = run.json()[0].clone();
        let messages: Vec<&str> = result["unmet"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["message"].as_str().unwrap_or_default())
            .collect();
        assert!(
            messages.iter().any(|m| m.contains(needle)),
            "expected {needle:?} in {messages:#?}"
        );
        result
    }

    /// Pushes `.att` layers (envelope bytes with annotations) for `digest`,
    /// the way cosign lays them out (the same envelope may be listed twice).
    async fn push_att(
        &self,
        repo: &str,
        digest: &str,
        layers: &[(Vec<u8>, BTreeMap<String, String>)],
    ) {
        let mut descriptors = Vec::new();
        for (bytes, annotations) in layers {
            let blob = Blob::new(DSSE, bytes.clone());
            if !descriptors
                .iter()
                .any(|d: &imgate_core::oci::Descriptor| d.digest.as_str() == blob.digest)
            {
                self.raw.put_blob(repo, &blob).await.unwrap();
            }
            descriptors.push(imgate_core::oci::Descriptor {
                media_type: DSSE.to_string(),
                digest: Digest::sha256(bytes),
                size: bytes.len() as u64,
                artifact_type: None,
                platform: None,
                annotations: Some(annotations.clone()),
            });
        }
        let config = Blob::new(
            "application/vnd.oci.image.config.v1+json",
            legacy::config_for(&descriptors),
        );
        self.raw.put_blob(repo, &config).await.unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": descriptors,
        });
        self.raw
            .put_manifest(
                repo,
                &format!("{}.att", tag_form(digest)),
                OCI_MANIFEST,
                &serde_json::to_vec(&manifest).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Attaches `bundle_bytes` to the image `subject` as a referrer, listed
    /// in the referrers tag schema index (appended to what is there).
    async fn push_referrer(
        &self,
        repo: &str,
        subject: &PushedImage,
        bundle_bytes: &[u8],
        predicate_type: &str,
    ) {
        let raw_subject = self.raw.get_manifest(repo, &subject.digest).await.unwrap();
        let subject_descriptor = imgate_core::oci::Descriptor {
            media_type: raw_subject.media_type.clone(),
            digest: Digest::parse(&subject.digest).unwrap(),
            size: raw_subject.bytes.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        };
        let manifest = bundle::build_attachment_for(
            bundle_bytes,
            subject_descriptor,
            "2024-06-01T00:00:00Z",
            predicate_type,
        );
        let bytes = serde_json::to_vec(&manifest).unwrap();
        self.raw
            .put_blob(
                repo,
                &Blob::new(bundle::BUNDLE_MEDIA_TYPE, bundle_bytes.to_vec()),
            )
            .await
            .unwrap();
        self.raw
            .put_blob(
                repo,
                &Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec()),
            )
            .await
            .unwrap();
        let digest = self
            .raw
            .put_manifest(
                repo,
                &Digest::sha256(&bytes).to_string(),
                OCI_MANIFEST,
                &bytes,
            )
            .await
            .unwrap();
        let tag = tag_form(&subject.digest);
        let existing = self
            .raw
            .get_manifest(repo, &tag)
            .await
            .ok()
            .and_then(|m| serde_json::from_slice(&m.bytes).ok());
        let index =
            bundle::append_referrer(existing, bundle::referrer_descriptor(&manifest, &bytes))
                .expect("a new referrer");
        assert_eq!(digest, Digest::sha256(&bytes).to_string());
        self.raw
            .put_manifest(repo, &tag, OCI_INDEX, &serde_json::to_vec(&index).unwrap())
            .await
            .unwrap();
    }
}

/// `imgate COMMAND ARGS`, nothing added.
fn run_plain(command: &str, args: &[&str]) -> Run {
    let mut all = vec![command];
    all.extend_from_slice(args);
    let out = run_imgate(&all, &[("IMGATE_PASSWORD", PASSWORD)], None).expect("imgate runs");
    Run::from_output(&out)
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn tag_form(digest: &str) -> String {
    digest.replace(':', "-")
}

fn repo_of(pushed: &PushedImage) -> String {
    let name = pushed.repository();
    name.split_once('/')
        .map(|(_, r)| r.to_string())
        .expect("host/repo")
}

/// An in-toto statement of `predicate_type` about `digest`.
fn statement(predicate_type: &str, digest: &str, predicate: Value) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').unwrap();
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app", "digest": {alg: hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .unwrap()
}

/// A DSSE envelope over `payload` signed by `key`.
fn envelope(key: &SigningKey, payload: &[u8]) -> Envelope {
    let sig = key.sign(&bundle::pae(IN_TOTO_PAYLOAD_TYPE, payload));
    Envelope {
        payload: B64.encode(payload),
        payload_type: IN_TOTO_PAYLOAD_TYPE.to_string(),
        signatures: vec![EnvelopeSignature {
            sig: B64.encode(sig),
            keyid: None,
        }],
    }
}

/// cosign's annotations of a `.att` layer claiming `predicate_type`.
fn att_annotations(predicate_type: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "dev.cosignproject.cosign/signature".to_string(),
            String::new(),
        ),
        ("predicateType".to_string(), predicate_type.to_string()),
    ])
}

/// A GitHub-hosted SLSA v1 provenance predicate for `repository` at `git_ref`.
fn provenance(repository: &str, git_ref: &str) -> Value {
    json!({
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {
                "ref": git_ref,
                "repository": repository,
                "path": ".github/workflows/release.yml",
            }},
            "resolvedDependencies": [],
        },
        "runDetails": {
            "builder": {"id": "https://github.com/actions/runner/github-hosted"},
            "metadata": {"invocationId": "https://github.com/example/app/actions/runs/1/attempts/1"},
        },
    })
}

async fn attest_and_verify(variant: Variant, format: &str) {
    let ctx = Ctx::new(variant).await;
    let (key, public, _) = ctx.keys("ci");
    let (_, other, _) = ctx.keys("other");
    let image = ctx.push(&format!("attest-{format}"), "team/app").await;

    ctx.attest(
        &key,
        "slsaprovenance1",
        &provenance("https://github.com/example/app", "refs/heads/main"),
        format,
        &image.reference,
    );
    let ok = ctx.assert_verified(&[
        "--type",
        "slsaprovenance1",
        "--key",
        &public,
        &image.reference,
    ]);
    assert_eq!(ok["digest"], image.digest.as_str());
    let statements = ok["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{ok:#}");
    let s = &statements[0];
    assert_eq!(s["predicateType"], PROVENANCE);
    assert_eq!(
        s["source"]["store"],
        if format == "legacy" {
            "legacy"
        } else {
            "bundle"
        }
    );
    assert_eq!(s["signer"]["kind"], "key");
    assert_eq!(s["statement"]["_type"], "https://in-toto.io/Statement/v0.1");
    assert_eq!(
        s["statement"]["subject"][0]["digest"]["sha256"],
        image.digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        s["statement"]["predicate"]["buildDefinition"]["externalParameters"]["workflow"]
            ["repository"],
        "https://github.com/example/app"
    );

    // A second attestation is appended, the first kept.
    ctx.attest(&key, "vuln", &json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": {}}, "metadata": {"scanFinishedOn": "2024-06-01T00:00:00Z"}}), format, &image.reference);
    ctx.assert_verified(&[
        "--type",
        "slsaprovenance1",
        "--key",
        &public,
        &image.reference,
    ]);
    let vuln = ctx.assert_verified(&["--type", "vuln", "--key", &public, &image.reference]);
    assert_eq!(vuln["statements"][0]["predicateType"], VULN);
    let repo = repo_of(&image);
    if format == "legacy" {
        let att = ctx
            .raw
            .get_manifest(&repo, &format!("{}.att", tag_form(&image.digest)))
            .await
            .unwrap();
        let att: Value = serde_json::from_slice(&att.bytes).unwrap();
        let layers = att["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "{att:#}");
        assert!(layers.iter().all(|l| l["mediaType"] == DSSE));
        assert_eq!(layers[0]["annotations"]["predicateType"], PROVENANCE);
        assert_eq!(layers[1]["annotations"]["predicateType"], VULN);
    } else {
        let index = ctx
            .raw
            .get_manifest(&repo, &tag_form(&image.digest))
            .await
            .unwrap();
        let index: Value = serde_json::from_slice(&index.bytes).unwrap();
        let types: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["annotations"]["dev.sigstore.bundle.predicateType"].as_str())
            .collect();
        assert_eq!(types, [PROVENANCE, VULN], "{index:#}");
    }

    // The wrong key, a type never attested, the text output.
    ctx.assert_denied(
        &[
            "--type",
            "slsaprovenance1",
            "--key",
            &other,
            &image.reference,
        ],
        "not signed by any of the allowed keys",
    );
    ctx.assert_denied(
        &["--type", "spdxjson", "--key", &public, &image.reference],
        "no https://spdx.dev/Document statement",
    );
    let text = ctx.run(
        "verify-attestation",
        &["--type", PROVENANCE, "--key", &public, &image.reference],
    );
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout
            .starts_with(&format!("verified {}", image.pinned())),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("\"predicateType\":\"https://slsa.dev/provenance/v1\""),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attest_then_verify_legacy() {
    attest_and_verify(Variant::Tls, "legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attest_then_verify_bundle() {
    attest_and_verify(Variant::Token, "bundle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_about_another_digest_and_a_lying_annotation_are_refused() {
    let ctx = Ctx::new(Variant::Http).await;
    let (_, public, key) = ctx.keys("ci");
    let image = ctx.push("refusals", "team/app").await;
    let other = ctx.push("refusals-other", "team/other").await;
    let repo = repo_of(&image);

    // Signed by the right key, but about the other image.
    let elsewhere = statement(PROVENANCE, &other.digest, provenance("r", "f"));
    let elsewhere = serde_json::to_vec(&envelope(&key, &elsewhere)).unwrap();
    // Its annotation says provenance; the signed statement is a scan.
    let liar = statement(VULN, &image.digest, json!({"scanner": {"result": {}}}));
    let liar = serde_json::to_vec(&envelope(&key, &liar)).unwrap();
    ctx.push_att(
        &repo,
        &image.digest,
        &[
            (elsewhere, att_annotations(PROVENANCE)),
            (liar, att_annotations(PROVENANCE)),
        ],
    )
    .await;

    let denied = ctx.assert_denied(
        &[
            "--type",
            "slsaprovenance1",
            "--key",
            &public,
            &image.reference,
        ],
        &format!(
            "the statement is about {}, not {}",
            other.digest, image.digest
        ),
    );
    let message = denied["unmet"][0]["message"].as_str().unwrap();
    assert!(message.contains(".att layer 1"), "{message}");
    assert!(
        message.contains(&format!(
            ".att layer 2: its annotation claims predicate type {PROVENANCE}, but the statement inside is {VULN}"
        )),
        "{message}"
    );
    // An annotation only ever decides what is not read: the scan it
    // mislabels is not found as a scan either (fail closed).
    ctx.assert_denied(
        &["--type", "vuln", "--key", &public, &image.reference],
        &format!("no {VULN} statement"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_attestations_are_judged_by_identity() {
    use imgate_tests::sigstore::{LeafSpec, TestSigstore};
    let ctx = Ctx::new(Variant::Http).await;
    let image = ctx.push("keyless-attest", "team/app").await;
    let sigstore = TestSigstore::new().unwrap();
    let root = ctx.path("trusted_root.json");
    std::fs::write(&root, sigstore.trusted_root_json()).unwrap();
    let identity = "https://github.com/example/app/.github/workflows/release.yml@refs/heads/main";
    let issuer = "https://token.actions.githubusercontent.com";
    let leaf = sigstore.leaf(&LeafSpec::new(identity, issuer)).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let stmt = statement(
        PROVENANCE,
        &image.digest,
        provenance("https://github.com/example/app", "refs/heads/main"),
    );
    let bundle_json = sigstore.dsse_bundle(&leaf, &stmt, now);
    ctx.push_referrer(&repo_of(&image), &image, bundle_json.as_bytes(), PROVENANCE)
        .await;

    let ok = ctx.assert_verified(&[
        "--type",
        PROVENANCE,
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        issuer,
        "--trusted-root",
        &root,
        &image.reference,
    ]);
    let signer = &ok["statements"][0]["signer"];
    assert_eq!(signer["kind"], "keyless");
    assert_eq!(signer["identity"], identity);
    assert_eq!(signer["issuer"], issuer);

    ctx.assert_denied(
        &[
            "--type",
            PROVENANCE,
            "--certificate-identity",
            "https://github.com/evil/app/.github/workflows/release.yml@refs/heads/main",
            "--certificate-oidc-issuer",
            issuer,
            "--trusted-root",
            &root,
            &image.reference,
        ],
        &format!("certificate identity \"{identity}\" does not match"),
    );
    // A key is not a certificate.
    let (_, public, _) = ctx.keys("ci");
    ctx.assert_denied(
        &["--type", PROVENANCE, "--key", &public, &image.reference],
        "signed with a certificate, but no keyless signer is allowed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_legacy_attestations_carry_their_rekor_entry() {
    use imgate_tests::sigstore::{LeafSpec, TestSigstore};
    let ctx = Ctx::new(Variant::Http).await;
    let image = ctx.push("keyless-att", "team/app").await;
    let sigstore = TestSigstore::new().unwrap();
    let root = ctx.path("trusted_root.json");
    std::fs::write(&root, sigstore.trusted_root_json()).unwrap();
    let (identity, issuer) = ("release@example.com", "https://issuer.example.com");
    let leaf = sigstore.leaf(&LeafSpec::new(identity, issuer)).unwrap();
    let stmt = statement(
        PROVENANCE,
        &image.digest,
        provenance("https://github.com/example/app", "refs/heads/main"),
    );
    let sig = leaf.sign(&bundle::pae(IN_TOTO_PAYLOAD_TYPE, &stmt));
    let envelope = serde_json::to_vec(&json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": B64.encode(&stmt),
        "signatures": [{"keyid": "", "sig": B64.encode(&sig)}],
    }))
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut annotations = att_annotations(PROVENANCE);
    annotations.insert(
        "dev.sigstore.cosign/certificate".into(),
        leaf.cert_pem.clone(),
    );
    annotations.insert("dev.sigstore.cosign/chain".into(), sigstore.ca_pem());
    annotations.insert(
        "dev.sigstore.cosign/bundle".into(),
        sigstore.intoto_entry(&leaf, &envelope, now).unwrap(),
    );
    ctx.push_att(&repo_of(&image), &image.digest, &[(envelope, annotations)])
        .await;

    let flags = |who: &str| -> Vec<String> {
        [
            "--type",
            PROVENANCE,
            "--certificate-identity",
            who,
            "--certificate-oidc-issuer",
            issuer,
            "--trusted-root",
            &root,
            &image.reference,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = flags(identity);
    let ok = ctx.assert_verified(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ok["statements"][0]["source"]["store"], "legacy");
    assert_eq!(ok["statements"][0]["signer"]["identity"], identity);
    let args = flags("intruder@example.com");
    ctx.assert_denied(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "certificate identity \"release@example.com\" does not match",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_name_the_culprit() {
    let ctx = Ctx::new(Variant::Http).await;
    let (key, public, _) = ctx.keys("ci");
    let image = ctx.push("usage", "team/app").await;
    let run = ctx.run(
        "verify-attestation",
        &["--type", "provenance", "--key", &public, &image.reference],
    );
    run.assert_one_line_error("--type: \"provenance\" is neither a predicate type URI nor one of");
    let predicate = ctx.write("p.json", &json!([1, 2]));
    let run = ctx.run(
        "attest",
        &[
            "--key",
            &key,
            "--type",
            "vuln",
            "--predicate",
            &predicate,
            &image.reference,
        ],
    );
    run.assert_one_line_error(
        "predicate for https://cosign.sigstore.dev/attestation/vuln/v1: not a JSON object",
    );
    let run = ctx.run(
        "attest",
        &[
            "--key",
            &key,
            "--type",
            "vuln",
            "--predicate",
            &ctx.path("missing.json"),
            &image.reference,
        ],
    );
    run.assert_one_line_error("cannot read the predicate");
    let missing = format!("{}@sha256:{}", image.repository(), "0".repeat(64));
    let run = ctx.run(
        "attest",
        &[
            "--key",
            &key,
            "--type",
            "vuln",
            "--predicate",
            &ctx.write("q.json", &json!({})),
            &missing,
        ],
    );
    assert_eq!(run.code, 2, "{run:?}");
}
