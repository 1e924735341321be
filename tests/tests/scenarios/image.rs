//! Scenario: imgate's own image, released the way the release workflows do
//! it and then run. `scripts/build-image.sh` builds it FROM scratch with
//! buildah around the static binary (`IMGATE_STATIC_BIN`, made by
//! `scripts/build-static.sh`; `make test` builds it) and pushes it to the
//! real registry; the release predicates are generated for it; the built
//! `imgate` signs and verifies it twice, as the two release workflows do:
//! with the release key (Forgejo), and keylessly as the GitHub release
//! workflow (its OIDC token from GitHub Actions' token endpoint, against the
//! harness's private Sigstore). The pushed image is then pulled back with
//! skopeo and unpacked: its layout, size and config are checked (and held
//! against the Dockerfile's final stage, in `layout`), and its own binary
//! serves AdmissionReviews over TLS from that root filesystem (`chroot`,
//! user 65532, empty environment, certificates from its own `webhook
//! certs`), admitting the image itself under the shipped policy snippet
//! `deploy/imgate-image-policy.yaml` (its key and its keyless authority,
//! each alone), with the registry reached by host name
//! through a DNS server and through `/etc/hosts`, as in a pod.
//!
//! The release steps are the functions below, in release order; the
//! attestation steps (`imgate attest` of the provenance and the SBOM, then
//! `imgate verify-attestation`) come after `sign` and after `verify`.

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use imgate_tests::bin::{python, run_bounded, workspace_root};
use imgate_tests::sigstore_services::{
    PrivateSigstore, GITHUB_ISSUER, GITHUB_REQUEST_TOKEN, GITHUB_WORKFLOW_IDENTITY,
};
use imgate_tests::webhook::{pod, review, Webhook, WebhookOptions, IMAGE_USER};
use imgate_tests::{run_imgate, DnsServer, ImageBuilder, PushWith, Registry, Variant};
use serde_json::Value;

use crate::common::Run;

mod layout;

/// The largest image allowed, compressed (what a node pulls) and unpacked.
const MAX_IMAGE_BYTES: u64 = 30 * 1024 * 1024;
/// The repository and tag pushed, and the names the webhook reaches the
/// registry by: one from the test DNS server, one from `/etc/hosts`.
const REPO: &str = "platform/imgate";
const TAG: &str = "0.1.0";
const DNS_NAME: &str = "registry.imgate.test";
const HOSTS_NAME: &str = "hosts.imgate.test";
/// The release key's password.
const PASSWORD: &str = "release key password";
/// How long a build or a script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The static binary the image ships: `$IMGATE_STATIC_BIN` (relative to the
/// workspace), which `make test` builds with `scripts/build-static.sh`.
fn static_bin() -> PathBuf {
    let Some(bin) = std::env::var_os("IMGATE_STATIC_BIN") else {
        panic!(
            "IMGATE_STATIC_BIN is not set: build the image's binary with \
             scripts/build-static.sh (it prints the path) and pass it (make test does both)"
        );
    };
    let bin = workspace_root().join(bin);
    assert!(
        bin.is_file(),
        "IMGATE_STATIC_BIN={}: no such file",
        bin.display()
    );
    bin
}

/// Runs a command of the release flow; panics with its output unless it
/// exits 0; returns stdout.
fn must(mut command: Command, what: &str) -> String {
    command.current_dir(workspace_root());
    let out =
        run_bounded(command, None, SCRIPT_TIMEOUT).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let run = Run::from_output(&out);
    assert_eq!(run.code, 0, "{what} failed: {run:?}");
    run.stdout
}

/// The registry, a private Sigstore for keyless signing, and a directory
/// for keys, predicates and the unpacked image.
struct Release {
    registry: Registry,
    sigstore: PrivateSigstore,
    dir: tempfile::TempDir,
}

impl Release {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `buildah push`'s `--cert-dir`: the registry's CA as `ca.crt`.
    fn cert_dir(&self) -> PathBuf {
        let dir = self.path("registry-certs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.registry.ca_file().unwrap(), dir.join("ca.crt")).unwrap();
        dir
    }

    /// Step 1: build the image with buildah and push it; the pinned reference.
    fn build_and_push(&self) -> String {
        let image = format!("{}/{REPO}:{TAG}", self.registry.host());
        let mut command = Command::new(workspace_root().join("scripts/build-image.sh"));
        command
            .arg("--binary")
            .arg(static_bin())
            .arg("--cert-dir")
            .arg(self.cert_dir())
            .arg(&image);
        let out = must(command, "scripts/build-image.sh");
        let pinned = out.lines().last().unwrap_or_default().to_string();
        assert!(
            pinned.starts_with(&format!("{image}@sha256:")) && pinned.len() == image.len() + 72,
            "build-image.sh prints the pinned reference: {out:?}"
        );
        pinned
    }

    /// Step 2: the predicates the release attests (SBOM, provenance).
    fn predicates(&self, pinned: &str) -> (PathBuf, PathBuf) {
        let script = workspace_root().join("scripts/release/predicates.py");
        let (sbom, provenance) = (self.path("sbom.cdx.json"), self.path("provenance.json"));
        let mut command = Command::new(python());
        command.arg(&script).arg("sbom").arg("--out").arg(&sbom);
        must(command, "predicates.py sbom");
        let mut command = Command::new(python());
        command
            .arg(&script)
            .args(["provenance", "--image", pinned, "--builder-id"])
            .arg("https://example.invalid/imgate/tests/image-scenario")
            // The repository the shipped policy snippet requires.
            .args(["--source", "https://github.com/example/imgate"])
            .arg("--out")
            .arg(&provenance);
        must(command, "predicates.py provenance");
        let statement: Value =
            serde_json::from_slice(&std::fs::read(&provenance).unwrap()).unwrap();
        assert_eq!(
            statement["buildDefinition"]["externalParameters"]["image"], pinned,
            "the provenance describes the pushed image"
        );
        (sbom, provenance)
    }

    /// Step 3: sign the pushed digest with the release key (`imgate sign --key`).
    fn sign(&self, pinned: &str, key: &Path) {
        let mut args = vec![
            "sign".to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        args.extend(self.registry.cli_args());
        args.push(pinned.to_string());
        let run =
            Run::from_output(&run_imgate(&args, &[("IMGATE_PASSWORD", PASSWORD)], None).unwrap());
        assert_eq!(run.code, 0, "imgate sign: {run:?}");
        assert_eq!(
            run.stdout.trim(),
            pinned,
            "sign prints what it signed: {run:?}"
        );
    }

    /// Step 3, GitHub: sign keylessly as the release workflow, with the
    /// job's OIDC token from GitHub Actions' token endpoint
    /// (`permissions: id-token: write`).
    fn sign_keylessly(&self, pinned: &str) {
        let mut args = self.sigstore_args("sign");
        args.extend([
            "--signing-config".into(),
            self.sigstore.signing_config_path().display().to_string(),
        ]);
        args.extend(["--allow-http".into(), "127.0.0.1".into()]);
        args.extend(self.registry.cli_args());
        args.push(pinned.to_string());
        let url = self.sigstore.actions_token_url();
        let env = [
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", GITHUB_REQUEST_TOKEN),
        ];
        let run = Run::from_output(&run_imgate(&args, &env, None).unwrap());
        assert_eq!(run.code, 0, "imgate sign (keyless): {run:?}");
        assert_eq!(run.stdout.trim(), pinned, "{run:?}");
    }

    /// Step 4: attest a predicate (`--type` a cosign short name) with the
    /// release key, or keylessly as the GitHub workflow when `key` is `None`.
    fn attest(&self, pinned: &str, predicate: &Path, kind: &str, key: Option<&Path>) {
        let mut args = match key {
            Some(key) => vec![
                "attest".to_string(),
                "--key".into(),
                key.display().to_string(),
            ],
            None => {
                let mut args = self.sigstore_args("attest");
                args.extend([
                    "--signing-config".into(),
                    self.sigstore.signing_config_path().display().to_string(),
                    "--allow-http".into(),
                    "127.0.0.1".into(),
                ]);
                args
            }
        };
        args.extend([
            "--predicate".into(),
            predicate.display().to_string(),
            "--type".into(),
            kind.into(),
        ]);
        args.extend(self.registry.cli_args());
        args.push(pinned.to_string());
        let url = self.sigstore.actions_token_url();
        let env = [
            ("IMGATE_PASSWORD", PASSWORD),
            ("GITHUB_ACTIONS", "true"),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", GITHUB_REQUEST_TOKEN),
        ];
        let run = Run::from_output(&run_imgate(&args, &env, None).unwrap());
        assert_eq!(run.code, 0, "imgate attest --type {kind}: {run:?}");
    }

    /// Step 5, attestations: `imgate verify-attestation --type KIND` by
    /// `signer`; the statements verified, as JSON.
    fn verify_attestation(&self, pinned: &str, kind: &str, signer: Signer<'_>) -> Run {
        let mut args = match signer {
            Signer::Key(public) => vec![
                "verify-attestation".to_string(),
                "--key".into(),
                public.display().to_string(),
            ],
            Signer::Workflow => {
                let mut args = self.sigstore_args("verify-attestation");
                args.extend([
                    "--certificate-identity".into(),
                    GITHUB_WORKFLOW_IDENTITY.into(),
                    "--certificate-oidc-issuer".into(),
                    GITHUB_ISSUER.into(),
                ]);
                args
            }
        };
        args.extend([
            "--type".into(),
            kind.into(),
            "--output".into(),
            "json".into(),
        ]);
        args.extend(self.registry.cli_args());
        args.push(pinned.to_string());
        Run::from_output(&run_imgate(&args, &[], None).unwrap())
    }

    /// `imgate SUB --trusted-root ROOT` of the private Sigstore.
    fn sigstore_args(&self, sub: &str) -> Vec<String> {
        let root = self.sigstore.trusted_root_path();
        vec![
            sub.to_string(),
            "--trusted-root".into(),
            root.display().to_string(),
        ]
    }

    /// Step 5: verify the signature as a deployer would: `imgate verify
    /// --key PUB` or, keyless, by the workflow's identity.
    fn verify(&self, pinned: &str, signer: Signer<'_>) -> Run {
        let mut args = match signer {
            Signer::Key(public) => vec![
                "verify".to_string(),
                "--key".into(),
                public.display().to_string(),
            ],
            Signer::Workflow => {
                let mut args = self.sigstore_args("verify");
                args.extend([
                    "--certificate-identity".into(),
                    GITHUB_WORKFLOW_IDENTITY.into(),
                    "--certificate-oidc-issuer".into(),
                    GITHUB_ISSUER.into(),
                ]);
                args
            }
        };
        args.extend(self.registry.cli_args());
        args.push(pinned.to_string());
        Run::from_output(&run_imgate(&args, &[], None).unwrap())
    }
}

/// Who a verification expects to have signed.
#[derive(Clone, Copy)]
enum Signer<'a> {
    /// The holder of this public key's private key.
    Key(&'a Path),
    /// The harness's GitHub release workflow, keylessly.
    Workflow,
}

#[test]
fn imgate_image_is_built_signed_verified_and_serves_reviews_from_its_own_root() {
    imgate_tests::block_on(async {
        let release = Release {
            registry: Registry::start(Variant::Tls).await.unwrap(),
            sigstore: PrivateSigstore::start().await.unwrap(),
            dir: tempfile::tempdir().unwrap(),
        };
        let key_prefix = release.path("imgate-release");
        let keygen = run_imgate(
            [
                "keys",
                "generate",
                "--output-prefix",
                key_prefix.to_str().unwrap(),
            ],
            &[("IMGATE_PASSWORD", PASSWORD)],
            None,
        )
        .unwrap();
        assert!(keygen.status.success(), "{keygen:?}");
        let (key, public) = (
            release.path("imgate-release.key"),
            release.path("imgate-release.pub"),
        );

        let pinned = release.build_and_push();
        let digest = pinned.rsplit_once('@').unwrap().1.to_string();
        let (sbom, provenance) = release.predicates(&pinned);
        // The two release workflows' signatures: Forgejo's release key,
        // GitHub's keyless workflow identity; nobody else's.
        let other = release.path("other");
        let keygen = run_imgate(
            [
                "keys",
                "generate",
                "--output-prefix",
                other.to_str().unwrap(),
            ],
            &[("IMGATE_PASSWORD", "")],
            None,
        )
        .unwrap();
        assert!(keygen.status.success(), "{keygen:?}");
        let refused = release.verify(&pinned, Signer::Key(&release.path("other.pub")));
        assert_eq!(refused.code, 1, "nothing signed yet: {refused:?}");
        release.sign(&pinned, &key);
        release.attest(&pinned, &provenance, "slsaprovenance1", Some(&key));
        release.attest(&pinned, &sbom, "cyclonedx", Some(&key));
        let verified = release.verify(&pinned, Signer::Key(&public));
        assert_eq!(verified.code, 0, "imgate verify --key: {verified:?}");
        for kind in ["slsaprovenance1", "cyclonedx"] {
            let verified = release.verify_attestation(&pinned, kind, Signer::Key(&public));
            assert_eq!(verified.code, 0, "verify-attestation {kind}: {verified:?}");
            let statement = &verified.json()[0]["statements"][0]["statement"];
            assert_eq!(
                statement["subject"][0]["digest"]["sha256"],
                digest.trim_start_matches("sha256:"),
                "{verified:?}"
            );
        }
        let refused = release.verify_attestation(
            &pinned,
            "slsaprovenance1",
            Signer::Key(&release.path("other.pub")),
        );
        assert_eq!(refused.code, 1, "another key attested nothing: {refused:?}");
        let refused = release.verify(&pinned, Signer::Workflow);
        assert_eq!(
            refused.code, 1,
            "a key signature is not the workflow's: {refused:?}"
        );
        release.sign_keylessly(&pinned);
        release.attest(&pinned, &provenance, "slsaprovenance1", None);
        release.attest(&pinned, &sbom, "cyclonedx", None);
        for kind in ["slsaprovenance1", "cyclonedx"] {
            let verified = release.verify_attestation(&pinned, kind, Signer::Workflow);
            assert_eq!(
                verified.code, 0,
                "verify-attestation {kind} by identity: {verified:?}"
            );
        }
        let verified = release.verify(&pinned, Signer::Workflow);
        assert_eq!(verified.code, 0, "imgate verify by identity: {verified:?}");
        let refused = release.verify(&pinned, Signer::Key(&release.path("other.pub")));
        assert_eq!(refused.code, 1, "another key did not sign it: {refused:?}");

        // What was pushed, pulled back and unpacked.
        let image = layout::pull_and_unpack(
            &release.registry,
            &pinned,
            &release.cert_dir(),
            &release.path("pulled"),
        )
        .await;
        assert_eq!(image.manifest_digest, digest, "pulled what was pushed");
        println!(
            "imgate image {pinned}: {} bytes compressed (manifest, config, layers), {} bytes unpacked",
            image.compressed_bytes, image.unpacked_bytes
        );
        assert!(
            image.compressed_bytes < MAX_IMAGE_BYTES,
            "image over 30 MB: {}",
            image.compressed_bytes
        );
        assert!(
            image.unpacked_bytes < MAX_IMAGE_BYTES,
            "unpacked image over 30 MB: {}",
            image.unpacked_bytes
        );
        layout::assert_runtime_layout(&image.root, &static_bin());
        layout::assert_config(&image.config);
        layout::assert_matches_dockerfile(&image.config);

        serve_from_the_image_root(&release, &image.root, &public, &digest).await;
    });
}

/// Step 6: the image's own binary, from the image's root filesystem, admits
/// the image under the shipped policy snippet and denies an unsigned one.
async fn serve_from_the_image_root(release: &Release, root: &Path, public: &Path, digest: &str) {
    let port = release
        .registry
        .host()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let dns = DnsServer::start(&[(DNS_NAME, Ipv4Addr::LOCALHOST)])
        .await
        .unwrap();
    // What the kubelet mounts into a container: resolv.conf, hosts, the
    // ConfigMaps and the Secret.
    std::fs::write(root.join("etc/resolv.conf"), dns.resolv_conf()).unwrap();
    std::fs::write(
        root.join("etc/hosts"),
        format!("127.0.0.1 localhost\n127.0.0.1 {HOSTS_NAME}\n"),
    )
    .unwrap();
    let etc = root.join("etc/imgate");
    for dir in ["policy", "keys", "tls"] {
        std::fs::create_dir_all(etc.join(dir)).unwrap();
    }
    std::os::unix::fs::chown(etc.join("tls"), Some(65532), Some(65532)).unwrap();
    std::fs::copy(public, etc.join("keys/imgate-release.pub")).unwrap();
    std::fs::copy(
        release.registry.ca_file().unwrap(),
        etc.join("keys/registry-ca.pem"),
    )
    .unwrap();
    std::fs::copy(
        release.sigstore.trusted_root_path(),
        etc.join("keys/trusted_root.json"),
    )
    .unwrap();
    let names = [format!("{DNS_NAME}:{port}"), format!("{HOSTS_NAME}:{port}")];
    std::fs::write(
        etc.join("policy/policy.yaml"),
        policy_for(&names, Signers::Both),
    )
    .unwrap();

    // The serving certificate, made by the image's binary as the image's user.
    let mut certs = Command::new("/usr/sbin/chroot");
    certs
        .arg(format!("--userspec={IMAGE_USER}"))
        .arg(root)
        .args([
            "/imgate",
            "webhook",
            "certs",
            "--out-dir",
            "/etc/imgate/tls",
        ])
        .env_clear();
    must(certs, "imgate webhook certs in the image root");

    let webhook = serve(root);
    let status = std::fs::read_to_string(format!("/proc/{}/status", webhook.pid())).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uids.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "65532", "65532", "65532", "65532"]
    );
    assert_eq!(
        webhook.get_side("/readyz").await.unwrap().0,
        200,
        "{}",
        webhook.logs()
    );

    let client = webhook.client(false).unwrap();
    let images: Vec<String> = names.iter().map(|n| format!("{n}/{REPO}:{TAG}")).collect();
    let object = pod("apps", &[&images[0], &images[1]]);
    let (status, body) = webhook
        .post(&client, "/mutate", &review("self", "apps", &object))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let answer = &body["response"];
    assert_eq!(answer["uid"], "self", "{body}");
    assert_eq!(answer["allowed"], true, "{body}\n{}", webhook.logs());
    let result = patched(&object, answer);
    for (i, image) in images.iter().enumerate() {
        assert_eq!(
            result["spec"]["containers"][i]["image"],
            format!("{image}@{digest}"),
            "{answer}"
        );
    }
    let asked = dns.queries();
    assert!(
        asked.contains(&format!("{DNS_NAME} A")),
        "the registry's name came from DNS: {asked:?}"
    );
    assert!(
        !asked.iter().any(|q| q.starts_with(HOSTS_NAME)),
        "/etc/hosts answers first: {asked:?}"
    );

    // An unsigned image in the same repository: denied, naming it.
    ImageBuilder::new("imgate-unsigned")
        .image()
        .push(&release.registry, REPO, "unsigned", PushWith::Http)
        .await
        .unwrap();
    let unsigned = format!("{}/{REPO}:unsigned", names[0]);
    let object = pod("apps", &[&unsigned]);
    let (status, body) = webhook
        .post(&client, "/mutate", &review("unsigned", "apps", &object))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    let message = body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains(&unsigned), "{message}");
    drop(webhook);

    // Each signer of the snippet admits the image alone.
    for signers in [Signers::KeyOnly, Signers::KeylessOnly] {
        std::fs::write(etc.join("policy/policy.yaml"), policy_for(&names, signers)).unwrap();
        let webhook = serve(root);
        let client = webhook.client(false).unwrap();
        let object = pod("apps", &[&images[0]]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("one", "apps", &object))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["response"]["allowed"],
            true,
            "{signers:?}: {body}\n{}",
            webhook.logs()
        );
    }
}

/// `imgate webhook` of the image at `root`, with the policy and certificates
/// where the deployment mounts them.
fn serve(root: &Path) -> Webhook {
    let options = WebhookOptions::new(
        Path::new("/etc/imgate/policy/policy.yaml"),
        Path::new("/etc/imgate/tls"),
    );
    Webhook::start(&options.in_root(root)).unwrap()
}

/// Which of the snippet's signers a test policy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signers {
    Both,
    KeyOnly,
    KeylessOnly,
}

/// `deploy/imgate-image-policy.yaml` for the image at the registry `names`
/// (each `HOST:PORT`), trusting the test CA for them, its keyless authority
/// pointed at the harness's workflow and private Sigstore, with `signers`.
fn policy_for(names: &[String], signers: Signers) -> String {
    let text =
        std::fs::read_to_string(workspace_root().join("deploy/imgate-image-policy.yaml")).unwrap();
    let mut policy: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let repos: Vec<serde_yaml::Value> =
        names.iter().map(|n| format!("{n}/{REPO}").into()).collect();
    assert_eq!(
        policy["trustedRegistries"].as_sequence().map(Vec::len),
        Some(1),
        "{text}"
    );
    policy["trustedRegistries"] = repos.clone().into();
    assert_eq!(
        policy["rules"][0]["images"].as_sequence().map(Vec::len),
        Some(1),
        "{text}"
    );
    policy["rules"][0]["images"] = repos.into();
    let mut registries = serde_yaml::Mapping::new();
    for name in names {
        let mut settings = serde_yaml::Mapping::new();
        settings.insert("caFile".into(), "../keys/registry-ca.pem".into());
        registries.insert(name.clone().into(), settings.into());
    }
    policy["registries"] = registries.into();
    let rule = &mut policy["rules"][0];
    let authority = &mut rule["keyless"][0];
    let subject = authority["subjectRegExp"].as_str().unwrap().to_string();
    let ours = subject
        .replace("example/imgate", "imgate-test/app")
        .replace("refs/tags/v.+", "refs/heads/main");
    assert_ne!(
        ours, subject,
        "the snippet's identity is the release workflow's: {subject}"
    );
    authority["subjectRegExp"] = ours.into();
    authority["trustRoot"] = "../keys/trusted_root.json".into();
    let rule = rule.as_mapping_mut().unwrap();
    match signers {
        Signers::Both => {}
        Signers::KeyOnly => assert!(rule.remove("keyless").is_some()),
        Signers::KeylessOnly => assert!(rule.remove("keys").is_some()),
    }
    serde_yaml::to_string(&policy).unwrap()
}

/// Applies the response's JSONPatch (if any) to `object`.
fn patched(object: &Value, response: &Value) -> Value {
    let mut object = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &ops).unwrap();
    }
    object
}
