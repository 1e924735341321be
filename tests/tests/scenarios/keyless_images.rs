//! Keyless-signed images end to end, on the real registry: a private
//! Sigstore (the harness's CA, CT and Rekor keys in a custom trusted root)
//! signs an image keylessly in cosign's legacy layout (`.sig` layer with
//! certificate, chain and Rekor bundle annotations); then `imgate verify`
//! with the identity flags, `imgate admit --policy` and the real webhook
//! binary over TLS admit it by identity and deny it under another identity
//! or issuer, naming the one found and the one wanted; the same for a
//! keyless cosign v3 bundle attached through the referrers tag schema. A
//! cold keyless verification costs no more registry requests than a key
//! one, and a key signature's Rekor entry is checked as `tlog` says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use imgate_core::digest::Digest;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, bundle, Format, Requirements, SignOptions};
use imgate_core::sigstore::{IdentityPolicy, TlogMode, TrustRoot};
use imgate_core::ImageRef;
use imgate_keys::SigningKey;
use imgate_tests::image::Blob;
use imgate_tests::sigstore::{simple_signing_payload, LeafSpec, TestSigstore};
use imgate_tests::tsa::{timestamped_instead_of_logged, TestTsa};
use imgate_tests::webhook::{generate_certs, Webhook, WebhookOptions};
use imgate_tests::{
    run_imgate, CountingProxy, ImageBuilder, PushWith, RawClient, Registry, Variant,
};
use serde_json::{json, Value};

const IDENTITY: &str = "https://ci.imgate.test/team/app/.github/workflows/release.yml@refs/tags/v1";
const ISSUER: &str = "https://token.imgate.test";
const OTHER_IDENTITY: &str = "mallory@imgate.test";
const OTHER_ISSUER: &str = "https://accounts.imgate.test";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A registry behind a counting proxy, a private Sigstore, its root on disk.
struct Env {
    registry: Registry,
    proxy: CountingProxy,
    sigstore: TestSigstore,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let registry = Registry::start(Variant::Http).await.unwrap();
        let proxy = CountingProxy::start(&registry).await.unwrap();
        let sigstore = TestSigstore::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.json"), sigstore.trusted_root_json()).unwrap();
        Env {
            registry,
            proxy,
            sigstore,
            dir,
        }
    }

    fn root_path(&self) -> PathBuf {
        self.dir.path().join("root.json")
    }

    /// `imgate verify ARGS IMAGE` through the proxy: the exit code, and
    /// stdout and stderr together.
    fn verify_with(&self, args: &[&str], image: &str) -> (i32, String) {
        let mut all: Vec<String> = std::iter::once("verify")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        all.extend(self.proxy.cli_args());
        all.push(image.to_string());
        let out = run_imgate(&all, &[], None).unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Pushes a distinct image; returns `PROXY/repo:tag` and its digest.
    async fn push(&self, repo: &str, tag: &str) -> (String, String) {
        let pushed = ImageBuilder::new(&format!("{repo}:{tag}"))
            .image()
            .push(&self.registry, repo, tag, PushWith::Http)
            .await
            .unwrap();
        (format!("{}/{repo}:{tag}", self.proxy.host()), pushed.digest)
    }

    /// Signs `repo@digest` keylessly as `identity` from `issuer`, in the
    /// legacy layout cosign writes: one simple-signing layer whose
    /// annotations carry the signature, the Fulcio certificate, its chain and
    /// the Rekor entry with its SET.
    async fn sign_keyless_legacy(&self, repo: &str, digest: &str, identity: &str, issuer: &str) {
        let leaf = self
            .sigstore
            .leaf(&LeafSpec::new(identity, issuer))
            .unwrap();
        let payload = simple_signing_payload(&format!("{}/{repo}", self.proxy.host()), digest);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let layer = self.sigstore.legacy_layer(&leaf, &payload, now - 30);
        let annotations = json!({
            signature::SIGNATURE_ANNOTATION: layer.signature_b64,
            signature::legacy::CERTIFICATE_ANNOTATION: layer.cert_pem,
            signature::legacy::CHAIN_ANNOTATION: layer.chain_pem,
            signature::legacy::REKOR_BUNDLE_ANNOTATION: layer.rekor_bundle,
        });
        self.push_sig_layer(repo, digest, &layer.payload, annotations)
            .await;
    }

    /// Writes the `.sig` manifest of `repo@digest`: one simple-signing layer
    /// with `annotations`.
    async fn push_sig_layer(&self, repo: &str, digest: &str, payload: &[u8], annotations: Value) {
        let payload = Blob::new(signature::SIMPLE_SIGNING_MEDIA_TYPE, payload.to_vec());
        let config = Blob::new("application/vnd.oci.image.config.v1+json", b"{}".to_vec());
        let mut descriptor = payload.descriptor();
        descriptor["annotations"] = annotations;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config.descriptor(), "layers": [descriptor],
        }))
        .unwrap();
        let raw = RawClient::new(&self.registry).unwrap();
        raw.put_blob(repo, &payload).await.unwrap();
        raw.put_blob(repo, &config).await.unwrap();
        let tag = format!("{}.sig", digest.replace(':', "-"));
        raw.put_manifest(repo, &tag, OCI_MANIFEST, &manifest)
            .await
            .unwrap();
    }

    /// Signs `repo@digest` keylessly with a cosign v3 bundle (DSSE over an
    /// in-toto statement naming the digest, certificate, Rekor entry with
    /// inclusion proof and checkpoint), attached through the referrers tag
    /// schema.
    async fn sign_keyless_bundle(&self, repo: &str, digest: &str, identity: &str, issuer: &str) {
        let json = self.keyless_bundle(digest, identity, issuer);
        self.attach_bundle(repo, digest, json).await;
    }

    /// A keyless cosign v3 bundle for `digest`, logged 30 seconds ago.
    fn keyless_bundle(&self, digest: &str, identity: &str, issuer: &str) -> String {
        let leaf = self
            .sigstore
            .leaf(&LeafSpec::new(identity, issuer))
            .unwrap();
        let statement = bundle::build_statement(&Digest::parse(digest).unwrap(), &BTreeMap::new());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.sigstore.dsse_bundle(&leaf, &statement, now - 30)
    }

    /// Attaches the bundle `json` to `repo@digest` through the referrers tag
    /// schema, as cosign does on a registry without the referrers API.
    async fn attach_bundle(&self, repo: &str, digest: &str, json: String) {
        let raw = RawClient::new(&self.registry).unwrap();
        let subject = raw.get_manifest(repo, digest).await.unwrap();
        let layer = Blob::new(bundle::BUNDLE_MEDIA_TYPE, json.into_bytes());
        let empty = Blob::new(
            "application/vnd.oci.empty.v1+json",
            bundle::EMPTY_BLOB.to_vec(),
        );
        let attachment = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": bundle::BUNDLE_MEDIA_TYPE,
            "config": empty.descriptor(), "layers": [layer.descriptor()],
            "subject": {"mediaType": subject.media_type, "digest": digest, "size": subject.bytes.len()},
            "annotations": {
                bundle::ANNOTATION_CONTENT: "dsse-envelope",
                bundle::ANNOTATION_PREDICATE_TYPE: bundle::COSIGN_SIGN_PREDICATE,
            },
        }))
        .unwrap();
        let attachment = Blob::new(OCI_MANIFEST, attachment);
        raw.put_blob(repo, &layer).await.unwrap();
        raw.put_blob(repo, &empty).await.unwrap();
        raw.put_manifest(repo, &attachment.digest, OCI_MANIFEST, &attachment.bytes)
            .await
            .unwrap();
        let mut entry = attachment.descriptor();
        entry["artifactType"] = json!(bundle::BUNDLE_MEDIA_TYPE);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry],
        }))
        .unwrap();
        raw.put_manifest(repo, &digest.replace(':', "-"), OCI_INDEX, &index)
            .await
            .unwrap();
    }

    /// Signs keylessly in `format`.
    async fn sign_keyless(&self, format: Format, repo: &str, digest: &str) {
        match format {
            Format::Legacy => {
                self.sign_keyless_legacy(repo, digest, IDENTITY, ISSUER)
                    .await
            }
            Format::Bundle => {
                self.sign_keyless_bundle(repo, digest, IDENTITY, ISSUER)
                    .await
            }
        }
    }

    /// A policy trusting `PROXY/team/**` whose one rule allows `identity`
    /// from `issuer`, with the private root.
    fn policy(&self, name: &str, identity: &str, issuer: &str) -> PathBuf {
        let proxy = self.proxy.host();
        let text = format!(
            "mode: enforce\n\
             onRegistryError: deny\n\
             trustRoot: {root}\n\
             trustedRegistries: [\"{proxy}/team/**\"]\n\
             registries:\n  \"{proxy}\": {{http: true}}\n\
             rules:\n  - name: team\n    images: [\"{proxy}/team/**\"]\n    keyless:\n      - subject: {identity:?}\n        issuer: {issuer:?}\n",
            root = self.root_path().display(),
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `imgate verify` with the identity flags; returns (exit code, stdout + stderr).
    fn verify(&self, image: &str, identity: &str, issuer: &str) -> (i32, String) {
        let root = self.root_path().display().to_string();
        self.verify_with(
            &[
                "--certificate-identity",
                identity,
                "--certificate-oidc-issuer",
                issuer,
                "--trusted-root",
                &root,
            ],
            image,
        )
    }
}

fn pod(image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

#[rstest::rstest]
#[case::legacy(Format::Legacy)]
#[case::bundle(Format::Bundle)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgate_verify_accepts_the_identity_and_names_found_and_wanted_otherwise(
    #[case] format: Format,
) {
    let env = Env::new().await;
    let (image, digest) = env.push("team/app", "v1").await;
    env.sign_keyless(format, "team/app", &digest).await;

    let (code, text) = env.verify(&image, IDENTITY, ISSUER);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&digest), "{text}");

    let (code, text) = env.verify(&image, OTHER_IDENTITY, ISSUER);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(IDENTITY) && text.contains(OTHER_IDENTITY),
        "{text}"
    );

    let (code, text) = env.verify(&image, IDENTITY, OTHER_ISSUER);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(ISSUER) && text.contains(OTHER_ISSUER),
        "{text}"
    );

    // The public-good root does not know the private CA: denied.
    let mut args = vec![
        "verify".to_string(),
        "--certificate-identity".into(),
        IDENTITY.into(),
        "--certificate-oidc-issuer".into(),
        ISSUER.into(),
    ];
    args.extend(env.proxy.cli_args());
    args.push(image.clone());
    let out = run_imgate(&args, &[], None).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[rstest::rstest]
#[case::legacy(Format::Legacy)]
#[case::bundle(Format::Bundle)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgate_admit_admits_by_identity_pins_and_denies_another_identity(#[case] format: Format) {
    let env = Env::new().await;
    let (image, digest) = env.push("team/app", "v1").await;
    env.sign_keyless(format, "team/app", &digest).await;
    let manifest = env.dir.path().join("pod.json");
    std::fs::write(&manifest, serde_json::to_vec(&pod(&image)).unwrap()).unwrap();
    let admit = |policy: &PathBuf| {
        let policy = policy.display().to_string();
        let manifest = manifest.display().to_string();
        let out = run_imgate(
            [
                "admit", "--policy", &policy, "-f", &manifest, "--output", "json",
            ],
            &[],
            None,
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let results: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{out:?}"));
        (out.status.code(), results[0].clone(), format!("{out:?}"))
    };

    let (code, result, out) = admit(&env.policy("ok.yaml", IDENTITY, ISSUER));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(result["allowed"], true, "{result}");
    let patch = result["patch"].to_string();
    assert!(patch.contains(&format!("{image}@{digest}")), "{patch}");

    let (code, result, out) = admit(&env.policy("other.yaml", OTHER_IDENTITY, ISSUER));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(result["allowed"], false, "{result}");
    let text = result.to_string();
    assert!(
        text.contains(IDENTITY) && text.contains(OTHER_IDENTITY),
        "{text}"
    );
}

#[rstest::rstest]
#[case::legacy(Format::Legacy)]
#[case::bundle(Format::Bundle)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_admits_by_identity_and_denies_another(#[case] format: Format) {
    let env = Env::new().await;
    let (image, digest) = env.push("team/app", "v1").await;
    env.sign_keyless(format, "team/app", &digest).await;
    let certs = env.dir.path().join("certs");
    generate_certs(&certs, false).unwrap();
    let review = |uid: &str| {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "apps", "operation": "CREATE",
                "userInfo": {"username": "ci"},
                "object": pod(&image), "oldObject": null, "dryRun": false,
            }
        })
    };
    for (name, identity, allowed) in [
        ("ok.yaml", IDENTITY, true),
        ("other.yaml", OTHER_IDENTITY, false),
    ] {
        let policy = env.policy(name, identity, ISSUER);
        let webhook = Webhook::start(&WebhookOptions::new(&policy, &certs)).unwrap();
        let client = webhook.client(false).unwrap();
        let (status, body) = webhook
            .post(&client, "/mutate", &review(name))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let answer = &body["response"];
        assert_eq!(answer["allowed"], allowed, "{name}: {body}");
        if allowed {
            assert_eq!(answer["patchType"], "JSONPatch", "{body}");
            let patch = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                answer["patch"].as_str().unwrap(),
            )
            .unwrap();
            let patch = String::from_utf8(patch).unwrap();
            assert!(patch.contains(&format!("{image}@{digest}")), "{patch}");
        } else {
            let message = answer["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(IDENTITY) && message.contains(OTHER_IDENTITY),
                "{message}"
            );
        }
    }
}

#[rstest::rstest]
#[case::legacy(Format::Legacy)]
#[case::bundle(Format::Bundle)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_keyless_verification_costs_no_more_requests_than_a_key_one(#[case] format: Format) {
    let env = Env::new().await;
    let (_, keyless_digest) = env.push("team/keyless", "v1").await;
    env.sign_keyless(format, "team/keyless", &keyless_digest)
        .await;
    let (_, key_digest) = env.push("team/key", "v1").await;
    let key = SigningKey::generate();
    let direct = RegistryClient::new(env.registry.client_config()).unwrap();
    let target =
        ImageRef::parse(&format!("{}/team/key@{key_digest}", env.registry.host())).unwrap();
    let opts = SignOptions {
        format,
        annotations: BTreeMap::new(),
    };
    signature::sign(&direct, &target, &key, &opts)
        .await
        .unwrap();

    let root = std::sync::Arc::new(
        TrustRoot::from_json("root.json", env.sigstore.trusted_root_json().as_bytes()).unwrap(),
    );
    let keyless_req = Requirements {
        keyless: vec![IdentityPolicy::exact(IDENTITY, ISSUER).into()],
        trust_root: Some(root),
        ..Default::default()
    };
    let key_req = Requirements {
        keys: vec![key.public_key()],
        ..Default::default()
    };
    let mut counts = Vec::new();
    for (repo, req) in [("team/keyless", &keyless_req), ("team/key", &key_req)] {
        env.proxy.reset();
        // A fresh client: cold, nothing known about the registry.
        let client = RegistryClient::new(env.proxy.client_config()).unwrap();
        let tag = ImageRef::parse(&format!("{}/{repo}:v1", env.proxy.host())).unwrap();
        let pinned = client.resolve(&tag).await.unwrap().pinned;
        let verdict = signature::verify(&client, &pinned, req).await.unwrap();
        assert!(verdict.is_verified(), "{repo}: {verdict:?}");
        counts.push((repo, env.proxy.requests()));
    }
    let (keyless, key) = (&counts[0].1, &counts[1].1);
    eprintln!(
        "{format} cold requests: keyless {} {keyless:?}; key {} {key:?}",
        keyless.len(),
        key.len()
    );
    assert!(
        keyless.len() <= key.len(),
        "keyless {keyless:?} vs key {key:?}"
    );
}

/// A key signature carrying a Rekor entry (`dev.sigstore.cosign/bundle`), on
/// the image path: its entry is verified as the rule's `tlog` says, and a
/// forged entry denies even though the key signature itself is good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_signature_with_a_rekor_entry_is_checked_per_tlog() {
    let env = Env::new().await;
    let (_, digest) = env.push("team/logged", "v1").await;
    let payload = simple_signing_payload(&format!("{}/team/logged", env.proxy.host()), &digest);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let layer = env.sigstore.key_layer(&payload, now - 30).unwrap();
    let key = imgate_keys::PublicKey::from_spki_der(&layer.spki_der, "logged.pub").unwrap();
    let root = std::sync::Arc::new(
        TrustRoot::from_json("root.json", env.sigstore.trusted_root_json().as_bytes()).unwrap(),
    );
    let client = RegistryClient::new(env.proxy.client_config()).unwrap();
    let image = ImageRef::parse(&format!("{}/team/logged@{digest}", env.proxy.host())).unwrap();
    let req = |tlog| Requirements {
        keys: vec![key.clone()],
        trust_root: Some(std::sync::Arc::clone(&root)),
        tlog,
        ..Default::default()
    };

    // Genuine entry: verified under every mode.
    env.push_sig_layer(
        "team/logged",
        &digest,
        &layer.payload,
        json!({
            signature::SIGNATURE_ANNOTATION: layer.signature_b64,
            signature::legacy::REKOR_BUNDLE_ANNOTATION: layer.rekor_bundle,
        }),
    )
    .await;
    for mode in [TlogMode::Required, TlogMode::IfPresent, TlogMode::Ignore] {
        let verdict = signature::verify(&client, &image, &req(mode))
            .await
            .unwrap();
        assert!(verdict.is_verified(), "{mode:?}: {verdict:?}");
    }
    // A forged SET: denied unless the log is ignored.
    let mut forged: Value = serde_json::from_str(&layer.rekor_bundle).unwrap();
    forged["Payload"]["integratedTime"] = json!(now - 10);
    env.push_sig_layer(
        "team/logged",
        &digest,
        &layer.payload,
        json!({
            signature::SIGNATURE_ANNOTATION: layer.signature_b64,
            signature::legacy::REKOR_BUNDLE_ANNOTATION: forged.to_string(),
        }),
    )
    .await;
    for mode in [TlogMode::Required, TlogMode::IfPresent] {
        let verdict = signature::verify(&client, &image, &req(mode))
            .await
            .unwrap();
        assert!(!verdict.is_verified(), "{mode:?}: {verdict:?}");
        assert!(
            format!("{verdict:?}").contains("Tlog"),
            "{mode:?}: {verdict:?}"
        );
    }
    let verdict = signature::verify(&client, &image, &req(TlogMode::Ignore))
        .await
        .unwrap();
    assert!(verdict.is_verified(), "{verdict:?}");
    // No entry at all: only `required` denies.
    env.push_sig_layer(
        "team/logged",
        &digest,
        &layer.payload,
        json!({signature::SIGNATURE_ANNOTATION: layer.signature_b64}),
    )
    .await;
    let verdict = signature::verify(&client, &image, &req(TlogMode::Required))
        .await
        .unwrap();
    assert!(!verdict.is_verified(), "{verdict:?}");
    let verdict = signature::verify(&client, &image, &req(TlogMode::IfPresent))
        .await
        .unwrap();
    assert!(verdict.is_verified(), "{verdict:?}");
}

/// A regex with an unbalanced `)` would, pasted into `^(?:…)$`, close the
/// anchoring group early and accept any identity. It is refused on the
/// command line, by `policy check` and by `admit`, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_regex_that_would_escape_its_anchors_is_refused() {
    const ESCAPING: &str = r"https://nobody\.example/x)|(.*";
    let env = Env::new().await;
    let (image, digest) = env.push("team/app", "v1").await;
    env.sign_keyless(Format::Legacy, "team/app", &digest).await;

    let root = env.root_path().display().to_string();
    let mut args = vec![
        "verify".to_string(),
        "--certificate-identity-regexp".into(),
        ESCAPING.into(),
        "--certificate-oidc-issuer".into(),
        ISSUER.into(),
        "--trusted-root".into(),
        root,
    ];
    args.extend(env.proxy.cli_args());
    args.push(image.clone());
    let out = run_imgate(&args, &[], None).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("--certificate-identity-regexp"), "{stderr}");

    let proxy = env.proxy.host();
    let policy = env.dir.path().join("escaping.yaml");
    std::fs::write(
        &policy,
        format!(
            "mode: enforce\n\
             trustRoot: {root}\n\
             trustedRegistries: [\"{proxy}/team/**\"]\n\
             registries:\n  \"{proxy}\": {{http: true}}\n\
             rules:\n  - name: team\n    images: [\"{proxy}/team/**\"]\n    keyless:\n      - subjectRegExp: '{ESCAPING}'\n        issuer: {ISSUER:?}\n",
            root = env.root_path().display(),
        ),
    )
    .unwrap();
    let policy = policy.display().to_string();
    let out = run_imgate(["policy", "check", &policy], &[], None).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("subjectRegExp"), "{stderr}");

    let manifest = env.dir.path().join("pod.json");
    std::fs::write(&manifest, serde_json::to_vec(&pod(&image)).unwrap()).unwrap();
    let manifest = manifest.display().to_string();
    let out = run_imgate(["admit", "--policy", &policy, "-f", &manifest], &[], None).unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// A keyless bundle with a trusted RFC 3161 timestamp and no log entry (how
/// GitHub attests private repositories): accepted where the rule's `tlog`
/// allows it (`ifPresent`, the default, and `ignore`), denied under
/// `required`, and denied when the timestamp's authority is not in the
/// trusted root. Through `imgate verify --tlog` and `imgate admit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_bundle_with_a_trusted_timestamp_and_no_log_entry_follows_tlog() {
    let env = Env::new().await;
    let tsa = TestTsa::new().unwrap();
    let stranger = TestTsa::new().unwrap();
    std::fs::write(
        env.root_path(),
        tsa.add_to(&env.sigstore.trusted_root_json()).unwrap(),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (trusted, digest) = env.push("team/stamped", "v1").await;
    let logged = env.keyless_bundle(&digest, IDENTITY, ISSUER);
    let stamped = timestamped_instead_of_logged(&logged, &tsa, now - 20).unwrap();
    assert!(!stamped.contains("inclusionProof"), "{stamped}");
    env.attach_bundle("team/stamped", &digest, stamped).await;
    let (untrusted, digest) = env.push("team/stranger", "v1").await;
    let logged = env.keyless_bundle(&digest, IDENTITY, ISSUER);
    let stamped = timestamped_instead_of_logged(&logged, &stranger, now - 20).unwrap();
    env.attach_bundle("team/stranger", &digest, stamped).await;

    let root = env.root_path().display().to_string();
    let verify = |image: &str, tlog: &str| {
        env.verify_with(
            &[
                "--certificate-identity",
                IDENTITY,
                "--certificate-oidc-issuer",
                ISSUER,
                "--trusted-root",
                &root,
                "--tlog",
                tlog,
            ],
            image,
        )
    };
    for tlog in ["if-present", "ignore"] {
        let (code, text) = verify(&trusted, tlog);
        assert_eq!(code, 0, "--tlog {tlog}: {text}");
        assert!(text.contains(IDENTITY), "{text}");
    }
    let (code, text) = verify(&trusted, "required");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no transparency-log entry"), "{text}");
    for tlog in ["if-present", "ignore"] {
        let (code, text) = verify(&untrusted, tlog);
        assert_eq!(code, 1, "--tlog {tlog}: {text}");
        assert!(text.to_lowercase().contains("timestamp"), "{text}");
    }

    // The same bundle read as an attestation (of cosign's signing predicate)
    // follows the same `tlog`.
    let attested = |image: &str, tlog: &str| {
        let mut args: Vec<String> = [
            "verify-attestation",
            "--type",
            bundle::COSIGN_SIGN_PREDICATE,
            "--certificate-identity",
            IDENTITY,
            "--certificate-oidc-issuer",
            ISSUER,
            "--trusted-root",
            &root,
            "--tlog",
            tlog,
        ]
        .map(String::from)
        .to_vec();
        args.extend(env.proxy.cli_args());
        args.push(image.to_string());
        let out = run_imgate(&args, &[], None).unwrap();
        (out.status.code(), format!("{out:?}"))
    };
    let (code, out) = attested(&trusted, "if-present");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = attested(&trusted, "required");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no transparency-log entry"), "{out}");
    let (code, out) = attested(&untrusted, "if-present");
    assert_eq!(code, Some(1), "{out}");

    // The same through a policy: the rule's `tlog` decides.
    let manifest = env.dir.path().join("pod.json");
    std::fs::write(&manifest, serde_json::to_vec(&pod(&trusted)).unwrap()).unwrap();
    let admit = |tlog: &str| {
        let proxy = env.proxy.host();
        let policy = env.dir.path().join(format!("tlog-{tlog}.yaml"));
        std::fs::write(
            &policy,
            format!(
                "mode: enforce\n\
                 trustRoot: {root}\n\
                 trustedRegistries: [\"{proxy}/team/**\"]\n\
                 registries:\n  \"{proxy}\": {{http: true}}\n\
                 rules:\n  - name: team\n    images: [\"{proxy}/team/**\"]\n    tlog: {tlog}\n    keyless:\n      - subject: {IDENTITY:?}\n        issuer: {ISSUER:?}\n",
                root = env.root_path().display(),
            ),
        )
        .unwrap();
        let out = run_imgate(
            [
                "admit",
                "--policy",
                policy.to_str().unwrap(),
                "-f",
                manifest.to_str().unwrap(),
            ],
            &[],
            None,
        )
        .unwrap();
        (out.status.code(), format!("{out:?}"))
    };
    let (code, out) = admit("ifPresent");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = admit("required");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no transparency-log entry"), "{out}");
}

/// GitHub's own Sigstore instance, which attests private repositories: a
/// trusted root with a Fulcio CA and a timestamp authority and neither a
/// transparency log nor a CT log, certificates with no SCT, bundles with a
/// timestamp only. Such a bundle verifies against such a root; the same
/// bundle is refused for its missing SCT under a root that lists a CT log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_without_ct_logs_takes_certificates_without_an_sct() {
    let env = Env::new().await;
    let tsa = TestTsa::new().unwrap();
    let with_ct = tsa.add_to(&env.sigstore.trusted_root_json()).unwrap();
    let mut github: Value = serde_json::from_str(&with_ct).unwrap();
    github["ctlogs"] = json!([]);
    github["tlogs"] = json!([]);
    let roots = [("github", github.to_string()), ("with-ct", with_ct)];
    for (name, root) in &roots {
        std::fs::write(env.dir.path().join(format!("{name}.json")), root).unwrap();
    }

    let (image, digest) = env.push("team/private", "v1").await;
    let mut spec = LeafSpec::new(IDENTITY, ISSUER);
    spec.sct = false;
    let leaf = env.sigstore.leaf(&spec).unwrap();
    let statement = bundle::build_statement(&Digest::parse(&digest).unwrap(), &BTreeMap::new());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let logged = env.sigstore.dsse_bundle(&leaf, &statement, now - 30);
    let stamped = timestamped_instead_of_logged(&logged, &tsa, now - 20).unwrap();
    env.attach_bundle("team/private", &digest, stamped).await;

    let verify = |root: &str| {
        let root = env.dir.path().join(format!("{root}.json"));
        env.verify_with(
            &[
                "--certificate-identity",
                IDENTITY,
                "--certificate-oidc-issuer",
                ISSUER,
                "--trusted-root",
                root.to_str().unwrap(),
            ],
            &image,
        )
    };
    let (code, text) = verify("github");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(IDENTITY), "{text}");
    let (code, text) = verify("with-ct");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("SCT"), "{text}");
}

/// A DSSE bundle over `digest`'s signing statement, signed by `key`, with no
/// log entry and no timestamp (what `timestamped_instead_of_logged` adds to).
fn key_bundle(digest: &str, key: &SigningKey) -> String {
    const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
    let b64 =
        |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let statement = bundle::build_statement(&Digest::parse(digest).unwrap(), &BTreeMap::new());
    let mut pae = format!(
        "DSSEv1 {} {PAYLOAD_TYPE} {} ",
        PAYLOAD_TYPE.len(),
        statement.len()
    )
    .into_bytes();
    pae.extend_from_slice(&statement);
    json!({
        "mediaType": bundle::BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": ""}},
        "dsseEnvelope": {
            "payload": b64(&statement),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": b64(&key.sign(&pae)), "keyid": ""}],
        },
    })
    .to_string()
}

/// A key-signed bundle with a trusted RFC 3161 timestamp and no log entry:
/// `--tlog required` denies it (a timestamp proves when, not that anyone can
/// see the signature; cosign and Kyverno deny it by default too, and the
/// Kyverno import writes `required` for them); `if-present` verifies the
/// timestamp and passes it, and denies one from an authority outside the
/// trusted root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bundle_with_only_a_timestamp_does_not_meet_tlog_required() {
    let env = Env::new().await;
    let tsa = TestTsa::new().unwrap();
    let stranger = TestTsa::new().unwrap();
    std::fs::write(
        env.root_path(),
        tsa.add_to(&env.sigstore.trusted_root_json()).unwrap(),
    )
    .unwrap();
    let key = SigningKey::generate();
    let public = env.dir.path().join("ci.pub");
    std::fs::write(&public, key.public_key().to_pem()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut images = Vec::new();
    for (repo, authority) in [("team/stamped", &tsa), ("team/stranger", &stranger)] {
        let (image, digest) = env.push(repo, "v1").await;
        let stamped =
            timestamped_instead_of_logged(&key_bundle(&digest, &key), authority, now - 20).unwrap();
        env.attach_bundle(repo, &digest, stamped).await;
        images.push(image);
    }

    let root = env.root_path();
    let verify = |image: &str, tlog: &str| {
        env.verify_with(
            &[
                "--key",
                public.to_str().unwrap(),
                "--trusted-root",
                root.to_str().unwrap(),
                "--tlog",
                tlog,
            ],
            image,
        )
    };
    let (code, text) = verify(&images[0], "if-present");
    assert_eq!(code, 0, "{text}");
    let (code, text) = verify(&images[0], "required");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("no transparency-log entry") && text.contains("a timestamp alone"),
        "{text}"
    );
    let (code, text) = verify(&images[1], "if-present");
    assert_eq!(code, 1, "{text}");
    assert!(text.to_lowercase().contains("timestamp"), "{text}");
}
