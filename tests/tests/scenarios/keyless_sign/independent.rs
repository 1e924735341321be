//! An implementation outside this repository, at its default settings,
//! accepts what `imgate sign` made keylessly: sigstore-python (PyPI
//! `sigstore` 4.x in the project virtualenv, installed by
//! `scripts/install-deps.sh --with-python`), its verifier built from a
//! client trust configuration holding the private instance's trusted root
//! and signing configuration, as its CLI builds it (see
//! `tests/interop/sigstore_python_verify.py` for why the CLI itself cannot
//! read a cosign image bundle). No switch turns off the log or timestamp
//! checks. A missing sigstore-python fails the test.

use std::process::Command;

use imgate_tests::bin::{python, workspace_root};
use rstest::rstest;

use super::*;

/// The checker on the bundle for the image digest; (exit 0, its output).
fn sigstore_python(
    ctx: &Ctx,
    config: &std::path::Path,
    bundle: &std::path::Path,
    identity: &str,
) -> (bool, String) {
    let python = python();
    let script = workspace_root().join("tests/interop/sigstore_python_verify.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(config)
        .arg(bundle)
        .args([identity, &ctx.sigstore.issuer(), &ctx.image.digest])
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", python.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(3),
        "sigstore-python is missing from {}: {text}",
        python.display()
    );
    (out.status.success(), text)
}

#[rstest]
#[case::rekor_v1(false)]
#[case::rekor_v2(true)]
fn sigstore_python_verifies_the_keyless_bundle_at_its_default_settings(#[case] v2: bool) {
    let ctx = Ctx::new(if v2 { "python-v2" } else { "python-v1" });
    let spec = ConfigSpec {
        rekor_v1: !v2,
        rekor_v2: v2,
        tsa: true,
    };
    let config = ctx
        .sigstore
        .write_signing_config("config.json", spec)
        .unwrap();
    let token = ctx.token();
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &["--format", "bundle", "--identity-token", &token],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let bundle = ctx.bundle();
    let kind = bundle["verificationMaterial"]["tlogEntries"][0]["kindVersion"].clone();
    assert_eq!(
        kind["version"],
        if v2 { "0.0.2" } else { "0.0.1" },
        "{kind}"
    );
    let bundle_path = ctx.path("image.sigstore.json");
    std::fs::write(&bundle_path, bundle.to_string()).unwrap();
    let trust = ctx.path("trust_config.json");
    std::fs::write(&trust, ctx.sigstore.client_trust_config_json(spec).unwrap()).unwrap();

    let (ok, out) = sigstore_python(&ctx, &trust, &bundle_path, EMAIL);
    assert!(ok, "sigstore-python refused imgate's bundle:\n{out}");
    assert_eq!(out.trim(), "OK");
    // The same check refuses another identity: it is really checking.
    let (ok, out) = sigstore_python(&ctx, &trust, &bundle_path, "someone@imgate.test");
    assert!(!ok, "sigstore-python accepted the wrong identity:\n{out}");
}
