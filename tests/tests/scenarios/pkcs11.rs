//! Scenarios: signing with a key on a real PKCS#11 token (SoftHSM2, set up
//! per test in a temp dir through `SOFTHSM2_CONF`, keys made by OpenSC's
//! `pkcs11-tool`), against the real registry with the real binary, in both
//! signature formats; the public key imgate prints equals the token's; each
//! failure has its own message; the PIN never shows in any output.

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use imgate_keys::PublicKey;
use imgate_tests::{run_imgate, ImageBuilder, PushWith, PushedImage, RawClient, Registry, Variant};
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use serde_json::Value;

use crate::common::Run;

/// Where Debian's `softhsm2` installs its module (the first that exists).
const MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];
const TOKEN: &str = "imgate-ci";
/// Distinctive, so a grep for it in the output cannot match by chance.
pub(crate) const PIN: &str = "pin-Zq7x9W";
const SO_PIN: &str = "so-pin-1234";

fn module() -> PathBuf {
    MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("SoftHSM2's module is installed (scripts/install-deps.sh installs softhsm2)")
}

/// A SoftHSM2 token in a temp dir with a generated P-256 key pair
/// (`release`, id 01).
pub(crate) struct Hsm {
    dir: tempfile::TempDir,
    pub(crate) conf: String,
    module: PathBuf,
}

impl Hsm {
    pub(crate) fn new() -> Hsm {
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let hsm = Hsm {
            conf: conf.display().to_string(),
            dir,
            module: module(),
        };
        hsm.tool(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--so-pin",
                SO_PIN,
                "--pin",
                PIN,
            ],
        );
        hsm.pkcs11_tool(&[
            "--login",
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "release",
            "--id",
            "01",
        ]);
        hsm
    }

    fn tool(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{program} runs (install-deps.sh installs it): {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pkcs11_tool(&self, args: &[&str]) -> String {
        let module = self.module.display().to_string();
        let mut all = vec!["--module", &module, "--token-label", TOKEN, "--pin", PIN];
        all.extend_from_slice(args);
        self.tool("pkcs11-tool", &all)
    }

    /// The token's public key `label`, as `pkcs11-tool` reads it (SPKI DER).
    pub(crate) fn public_der(&self, label: &str) -> Vec<u8> {
        let out = self.path(&format!("{label}.pub.der"));
        self.pkcs11_tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            label,
            "--output-file",
            &out,
        ]);
        std::fs::read(&out).expect("pkcs11-tool wrote the public key")
    }

    /// Imports a key pair made outside the token (`label`, id 02) and
    /// returns its unencrypted PKCS#8 PEM file, the same key as a file.
    fn import(&self, label: &str) -> String {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let der = self.path(&format!("{label}.der"));
        std::fs::write(&der, secret.to_pkcs8_der().unwrap().as_bytes()).unwrap();
        let pub_der = self.path(&format!("{label}.pub.import.der"));
        std::fs::write(&pub_der, secret.public_key().to_public_key_der().unwrap()).unwrap();
        for (file, kind) in [(&der, "privkey"), (&pub_der, "pubkey")] {
            self.pkcs11_tool(&[
                "--login",
                "--write-object",
                file,
                "--type",
                kind,
                "--label",
                label,
                "--id",
                "02",
            ]);
        }
        let pem = self.path(&format!("{label}.pem"));
        std::fs::write(
            &pem,
            secret.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        pem
    }

    pub(crate) fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}",
            self.module.display()
        )
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

struct Ctx {
    registry: Registry,
    hsm: Hsm,
}

impl Ctx {
    async fn new() -> Ctx {
        Ctx {
            registry: Registry::start(Variant::Tls)
                .await
                .expect("registry starts"),
            hsm: Hsm::new(),
        }
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)], registry: bool) -> Run {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if registry {
            all.extend(self.registry.cli_args());
        }
        let mut env = env.to_vec();
        env.push(("SOFTHSM2_CONF", &self.hsm.conf));
        Run::from_output(&run_imgate(&all, &env, None).expect("imgate runs"))
    }

    fn run(&self, args: &[&str], registry: bool) -> Run {
        self.run_with(args, &[("IMGATE_PKCS11_PIN", PIN)], registry)
    }

    async fn push(&self, label: &str, tag: &str) -> PushedImage {
        ImageBuilder::new(label)
            .image()
            .push(&self.registry, "team/hsm", tag, PushWith::Http)
            .await
            .expect("push")
    }

    /// `imgate keys public --key KEY` written to a file.
    fn public_key_file(&self, key: &str, name: &str) -> (String, String) {
        let run = self.run(&["keys", "public", "--key", key], false);
        assert_eq!(run.code, 0, "keys public: {run:?}");
        let path = self.hsm.path(name);
        std::fs::write(&path, &run.stdout).unwrap();
        (path, run.stdout)
    }

    fn verify(&self, public: &str, image: &str) -> Value {
        let run = self.run(
            &["verify", "--output", "json", "--key", public, image],
            true,
        );
        assert_eq!(run.code, 0, "verify {image}: {run:?}");
        run.json()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_key_signs_both_formats_and_verifies_with_the_printed_key() {
    let ctx = Ctx::new().await;
    let uri = ctx.hsm.uri("release");
    let (public, pem) = ctx.public_key_file(&uri, "release.pub");
    let printed = PublicKey::from_pem(pem.as_bytes(), "printed").unwrap();
    assert_eq!(
        printed.to_spki_der(),
        ctx.hsm.public_der("release").as_slice(),
        "imgate keys public prints the key pkcs11-tool reads from the token"
    );

    for (format, tag) in [("legacy", "v1"), ("bundle", "v2")] {
        let img = ctx.push(&format!("hsm-{format}"), tag).await;
        let run = ctx.run(
            &["sign", "--key", &uri, "--format", format, &img.reference],
            true,
        );
        assert_eq!(run.code, 0, "sign --format {format}: {run:?}");
        assert_eq!(run.stdout.trim(), img.pinned());
        let report = ctx.verify(&public, &img.reference);
        assert_eq!(report[0]["verified"], true, "{report}");
        assert_eq!(report[0]["format"], format, "{report}");
    }

    // A key of another token does not verify it: the check can fail.
    let other = Hsm::new();
    let other_pub = other.path("other.pub");
    let other_pem = PublicKey::from_spki_der(&other.public_der("release"), "other")
        .unwrap()
        .to_pem();
    std::fs::write(&other_pub, other_pem).unwrap();
    let img = ctx.push("hsm-legacy", "v1").await;
    let run = ctx.run(&["verify", "--key", &other_pub, &img.reference], true);
    assert_eq!(run.code, 1, "another key is denied: {run:?}");
}

/// The same key through the token and through a file writes the same
/// payloads in the same layout; only the (randomised) ECDSA values differ,
/// and each verifies with the one public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_file_signatures_have_the_same_payload_and_layout() {
    let ctx = Ctx::new().await;
    let file_key = ctx.hsm.import("imported");
    let uri = ctx.hsm.uri("imported");
    let (token_pub, token_pem) = ctx.public_key_file(&uri, "imported-token.pub");
    let (_, file_pem) = ctx.public_key_file(&file_key, "imported-file.pub");
    assert_eq!(token_pem, file_pem, "the token holds the file's key");

    let raw = RawClient::new(&ctx.registry).unwrap();
    for (format, tag) in [("legacy", "same-legacy"), ("bundle", "same-bundle")] {
        let img = ctx.push(&format!("same-{format}"), tag).await;
        for key in [&file_key, &uri] {
            let run = ctx.run(
                &["sign", "--key", key, "--format", format, &img.reference],
                true,
            );
            assert_eq!(run.code, 0, "sign with {key}: {run:?}");
        }
        let signatures = match format {
            "legacy" => legacy_layers(&raw, &img).await,
            _ => bundles(&raw, &img).await,
        };
        assert_eq!(signatures.len(), 2, "{format}: two signatures");
        assert_eq!(
            signatures[0], signatures[1],
            "{format}: same payload and layout apart from the signature value"
        );
        let report = ctx.verify(&token_pub, &img.reference);
        assert_eq!(report[0]["verified"], true, "{report}");
    }
}

/// The `.sig` manifest's layers with the signature annotation's value
/// blanked after checking it is there.
async fn legacy_layers(raw: &RawClient, img: &PushedImage) -> Vec<Value> {
    let tag = format!("{}.sig", img.digest.replace(':', "-"));
    let manifest = raw
        .get_manifest("team/hsm", &tag)
        .await
        .expect(".sig manifest");
    let manifest: Value = serde_json::from_slice(&manifest.bytes).unwrap();
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|layer| {
            let mut layer = layer.clone();
            let sig = &mut layer["annotations"]["dev.cosignproject.cosign/signature"];
            assert!(sig.as_str().is_some_and(|s| !s.is_empty()), "{layer}");
            *sig = Value::Null;
            layer
        })
        .collect()
}

/// The bundles attached as referrers, with the DSSE signature blanked.
async fn bundles(raw: &RawClient, img: &PushedImage) -> Vec<Value> {
    // Distribution 2.8 has no referrers API: the index at sha256-<hex> lists them.
    let index = raw
        .get_manifest("team/hsm", &img.digest.replace(':', "-"))
        .await
        .expect("referrers index");
    let index: Value = serde_json::from_slice(&index.bytes).unwrap();
    let mut out = Vec::new();
    for entry in index["manifests"].as_array().expect("manifests") {
        let digest = entry["digest"].as_str().unwrap();
        let manifest = raw.get_manifest("team/hsm", digest).await.unwrap();
        let manifest: Value = serde_json::from_slice(&manifest.bytes).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let bytes = raw.get_blob("team/hsm", layer).await.unwrap();
        let mut bundle: Value = serde_json::from_slice(&bytes).unwrap();
        let sig = &mut bundle["dsseEnvelope"]["signatures"][0]["sig"];
        assert!(sig.as_str().is_some_and(|s| !s.is_empty()), "{bundle}");
        *sig = Value::Null;
        out.push(bundle);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_missing_object_and_missing_module_each_say_so() {
    let ctx = Ctx::new().await;
    let img = ctx.push("hsm-errors", "v1").await;
    let sign = |key: &str, pin: &str| {
        ctx.run_with(
            &["sign", "--key", key, &img.reference],
            &[("IMGATE_PKCS11_PIN", pin)],
            true,
        )
    };
    let run = sign(&ctx.hsm.uri("release"), "0000-wrong");
    run.assert_one_line_error("wrong PIN for PKCS#11 token \"imgate-ci\"");

    let run = sign(&ctx.hsm.uri("nope"), PIN);
    run.assert_one_line_error("no private key object=\"nope\" on token \"imgate-ci\"");

    let missing =
        format!("pkcs11:token={TOKEN};object=release?module-path=/nonexistent/libpkcs11.so");
    let run = sign(&missing, PIN);
    run.assert_one_line_error("cannot load PKCS#11 module /nonexistent/libpkcs11.so");

    let not_a_module = ctx.hsm.path("softhsm2.conf");
    let run = sign(
        &format!("pkcs11:token={TOKEN};object=release?module-path={not_a_module}"),
        PIN,
    );
    run.assert_one_line_error("cannot load PKCS#11 module");

    let run = sign(
        &format!(
            "pkcs11:token=absent;object=release?module-path={}",
            ctx.hsm.module.display()
        ),
        PIN,
    );
    run.assert_one_line_error("no PKCS#11 token matches");

    let no_module = format!("pkcs11:token={TOKEN};object=release");
    let run = sign(&no_module, PIN);
    run.assert_one_line_error("IMGATE_PKCS11_MODULE_PATH");
    // ... which the environment can supply.
    let module = ctx.hsm.module.display().to_string();
    let run = ctx.run_with(
        &["keys", "public", "--key", &no_module],
        &[("IMGATE_PKCS11_MODULE_PATH", &module)],
        false,
    );
    assert_eq!(run.code, 0, "module from the environment: {run:?}");

    // Keys of another type on the token are refused by type.
    for (object, key_type, id) in [("rsa", "rsa:2048", "03"), ("p384", "EC:secp384r1", "04")] {
        ctx.hsm.pkcs11_tool(&[
            "--login",
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            object,
            "--id",
            id,
        ]);
    }
    sign(&ctx.hsm.uri("rsa"), PIN).assert_one_line_error("a key of type RSA on the token");
    sign(&ctx.hsm.uri("p384"), PIN).assert_one_line_error("an EC key on another curve than P-256");

    // Without a PIN anywhere and no terminal, signing says where to put one.
    let run = ctx.run_with(
        &["sign", "--key", &ctx.hsm.uri("release"), &img.reference],
        &[],
        true,
    );
    run.assert_one_line_error("no PIN for");

    // Nothing was signed by the failed runs.
    let run = ctx.run(
        &[
            "verify",
            "--key",
            &ctx.public_key_file(&ctx.hsm.uri("release"), "r.pub").0,
            &img.reference,
        ],
        true,
    );
    assert_eq!(run.code, 1, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_in_the_uri_never_reaches_the_output() {
    let ctx = Ctx::new().await;
    let img = ctx.push("hsm-pin", "v1").await;
    let with_pin = |object: &str, pin: &str| {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}&pin-value={pin}",
            ctx.hsm.module.display()
        )
    };
    let debug = [("IMGATE_LOG", "debug")];
    let runs = [
        ctx.run_with(
            &["sign", "--key", &with_pin("release", PIN), &img.reference],
            &debug,
            true,
        ),
        ctx.run_with(
            &[
                "--log-format",
                "json",
                "keys",
                "public",
                "--output",
                "json",
                "--key",
                &with_pin("release", PIN),
            ],
            &debug,
            false,
        ),
        ctx.run_with(
            &["sign", "--key", &with_pin("nope", PIN), &img.reference],
            &debug,
            true,
        ),
        ctx.run_with(
            &[
                "sign",
                "--key",
                &with_pin("release", "wrong-Pq3"),
                &img.reference,
            ],
            &debug,
            true,
        ),
    ];
    assert_eq!(runs[0].code, 0, "{:?}", runs[0]);
    assert_eq!(runs[1].code, 0, "{:?}", runs[1]);
    assert_eq!(runs[2].code, 2, "{:?}", runs[2]);
    assert_eq!(runs[3].code, 2, "{:?}", runs[3]);
    assert!(
        runs[0].stderr.contains("pin-value"),
        "the PIN in the URI is warned about: {:?}",
        runs[0]
    );
    for (run, secret) in runs.iter().zip([PIN, PIN, PIN, "wrong-Pq3"]) {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "the PIN leaked: {run:?}"
        );
    }
    assert!(
        runs[2].stderr.contains("pin-value=<redacted>"),
        "{:?}",
        runs[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_spelt_otherwise_or_split_by_an_ampersand_never_reaches_the_output() {
    let ctx = Ctx::new().await;
    let img = ctx.push("hsm-pin-spelling", "v1").await;
    let key = |query: &str| {
        format!(
            "pkcs11:token={TOKEN};object=release?module-path={}&{query}",
            ctx.hsm.module.display()
        )
    };
    let debug = [("IMGATE_LOG", "debug")];
    // Upper case or percent-encoded, the attribute is still the PIN: it
    // logs in, signs, is warned about and is redacted.
    for name in ["PIN-VALUE", "pin%2Dvalue"] {
        let run = ctx.run_with(
            &[
                "sign",
                "--key",
                &key(&format!("{name}={PIN}")),
                &img.reference,
            ],
            &debug,
            true,
        );
        assert_eq!(run.code, 0, "{name}: {run:?}");
        assert!(
            !run.stdout.contains(PIN) && !run.stderr.contains(PIN),
            "the PIN leaked: {run:?}"
        );
        assert!(run.stderr.contains("pin-value"), "not warned: {run:?}");
    }
    // A PIN holding an unencoded '&' is cut in two; neither half is echoed.
    let run = ctx.run_with(
        &[
            "sign",
            "--key",
            &key("pin-value=Zq7x&Tail8k"),
            &img.reference,
        ],
        &debug,
        true,
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("has no '='"), "{run:?}");
    for fragment in ["Zq7x", "Tail8k"] {
        assert!(
            !run.stdout.contains(fragment) && !run.stderr.contains(fragment),
            "part of the PIN leaked: {run:?}"
        );
    }
}
