//! `imgate sign --key REF --tlog-upload`: a key signature recorded in Rekor
//! and timestamped, for every kind of key reference (a cosign key file, a
//! PKCS#11 token, Vault transit), verified by `imgate verify --key` at
//! `--tlog required`; without `--tlog-upload` nothing is logged and the same
//! check refuses the signature.

use imgate_keys::{PublicKey, SigningKey};
use imgate_tests::vault::FakeVault;

use super::*;
use crate::pkcs11::{Hsm, PIN};

pub(super) const PASSWORD: &str = "tlog upload";

impl Ctx {
    /// A cosign key pair in the scratch dir: (private, public) paths.
    pub(super) fn key_pair(&self) -> (String, String) {
        let key = SigningKey::generate();
        let (private, public) = (self.path("ci.key"), self.path("ci.pub"));
        std::fs::write(&private, key.to_cosign_pem(PASSWORD.as_bytes()).unwrap()).unwrap();
        std::fs::write(&public, key.public_key().to_pem()).unwrap();
        (private.display().to_string(), public.display().to_string())
    }

    /// `imgate verify --key PUBLIC --tlog TLOG --output json`.
    fn verify_key(&self, public: &str, tlog: &str) -> Run {
        let root = self.sigstore.trusted_root_path();
        self.run(
            &[
                "verify",
                "--output",
                "json",
                "--key",
                public,
                "--tlog",
                tlog,
                "--trusted-root",
                root.to_str().unwrap(),
                &self.image.reference,
            ],
            &[],
        )
    }

    /// A signing configuration with Rekor v2 (and v1) and the TSA.
    pub(super) fn v2_config(&self) -> String {
        let spec = ConfigSpec {
            rekor_v1: true,
            rekor_v2: true,
            tsa: true,
        };
        let path = self.sigstore.write_signing_config("v2.json", spec).unwrap();
        path.display().to_string()
    }
}

#[test]
fn a_key_file_signature_with_tlog_upload_verifies_at_tlog_required_in_both_formats() {
    for (format, v2) in [("legacy", false), ("bundle", true)] {
        let ctx = Ctx::new(&format!("key-tlog-{format}"));
        let (private, public) = ctx.key_pair();
        let config = if v2 {
            ctx.v2_config()
        } else {
            ctx.sigstore.signing_config_path().display().to_string()
        };
        let run = ctx.sign_with(
            &config,
            &["--key", &private, "--tlog-upload", "--format", format],
            &[("IMGATE_PASSWORD", PASSWORD)],
        );
        assert_eq!(run.code, 0, "{format}: {run:?}");
        assert_eq!(ctx.sigstore.logged(v2), 1, "{format}");
        assert_eq!(
            ctx.sigstore.calls(Svc::Fulcio),
            0,
            "a key needs no certificate"
        );
        assert_eq!(ctx.sigstore.calls(Svc::Tsa), 1);
        let run = ctx.verify_key(&public, "required");
        assert_eq!(run.code, 0, "{format}: {run:?}");
        assert_eq!(run.json()[0]["format"], format);
    }
}

#[test]
fn without_tlog_upload_a_key_signature_is_not_logged_and_fails_tlog_required() {
    let ctx = Ctx::new("key-no-tlog");
    let (private, public) = ctx.key_pair();
    let run = ctx.run(
        &["sign", "--key", &private, &ctx.image.reference],
        &[("IMGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ctx.sigstore.logged(false) + ctx.sigstore.logged(true), 0);
    assert_eq!(ctx.verify_key(&public, "required").code, 1);
    assert_eq!(ctx.verify_key(&public, "if-present").code, 0);
}

#[test]
fn tlog_upload_needs_a_key_and_keyless_options_refuse_one() {
    let ctx = Ctx::new("tlog-no-key");
    let run = ctx.run(&["sign", "--tlog-upload", &ctx.image.reference], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--key"), "{run:?}");
    // Keyless-only options are refused with a key, never silently ignored.
    let (private, _) = ctx.key_pair();
    let run = ctx.run(
        &[
            "sign",
            "--key",
            &private,
            "--certificate-identity",
            EMAIL,
            "--certificate-oidc-issuer",
            "https://issuer.test",
            &ctx.image.reference,
        ],
        &[("IMGATE_PASSWORD", PASSWORD)],
    );
    run.assert_one_line_error("--certificate-identity applies to keyless signing");
    let run = ctx.run(
        &[
            "sign",
            "--key",
            &private,
            "--identity-token",
            "x.y.z",
            &ctx.image.reference,
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn a_pkcs11_key_signature_with_tlog_upload_verifies_at_tlog_required() {
    let ctx = Ctx::new("key-tlog-pkcs11");
    let hsm = Hsm::new();
    let public = PublicKey::from_spki_der(&hsm.public_der("release"), "release").unwrap();
    let public_path = ctx.path("release.pub");
    std::fs::write(&public_path, public.to_pem()).unwrap();
    let config = ctx.sigstore.signing_config_path();
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &["--key", &hsm.uri("release"), "--tlog-upload"],
        &[("IMGATE_PKCS11_PIN", PIN), ("SOFTHSM2_CONF", &hsm.conf)],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains(PIN), "the PIN never shows");
    assert_eq!(ctx.sigstore.logged(false), 1);
    let run = ctx.verify_key(public_path.to_str().unwrap(), "required");
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn a_vault_transit_signature_with_tlog_upload_verifies_at_tlog_required() {
    const TOKEN: &str = "hvs.tlog-upload";
    let ctx = Ctx::new("key-tlog-vault");
    let vault = block_on(FakeVault::start(TOKEN, &["transit"])).expect("fake Vault starts");
    vault.add_key("transit", "release", "ecdsa-p256");
    let public_path = ctx.path("release.pub");
    std::fs::write(
        &public_path,
        vault.public_key_pem("transit", "release", 1).unwrap(),
    )
    .unwrap();
    let ca = vault.ca_file().display().to_string();
    let config = ctx.v2_config();
    let run = ctx.sign_with(
        &config,
        &[
            "--key",
            "hashivault://release",
            "--tlog-upload",
            "--format",
            "bundle",
        ],
        &[
            ("VAULT_ADDR", vault.addr()),
            ("VAULT_TOKEN", TOKEN),
            ("VAULT_CACERT", &ca),
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ctx.sigstore.logged(true), 1);
    let run = ctx.verify_key(public_path.to_str().unwrap(), "required");
    assert_eq!(run.code, 0, "{run:?}");
}
