//! Attestations checked by implementations outside imgate, both ways:
//! what `imgate attest` stores verifies with a Python DSSE verifier written
//! from the DSSE and in-toto specs with `cryptography`
//! (`tests/interop/dsse_attest.py`) and, for bundles, with sigstore-js
//! (`@sigstore/verify`, `tests/interop/sigstore-js`); what that Python
//! signer makes verifies with `imgate verify-attestation`. Each checker is
//! also shown to refuse the wrong key, so a pass means something.
//!
//! Needs `cryptography` in `$IMGATE_PYTHON`, and node with
//! `tests/interop/sigstore-js/node_modules` (scripts/install-deps.sh).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use imgate_tests::bin::{python, run_bounded, workspace_root};

use super::*;

/// Exit code, stdout and stderr of a checker run.
fn run_checker(command: Command) -> (i32, String, String) {
    let out = run_bounded(command, None, Duration::from_secs(120))
        .expect("the checker runs (scripts/install-deps.sh --with-python installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dsse_attest(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/interop/dsse_attest.py"))
        .args(args);
    run_checker(command)
}

fn sigstore_js(bundle: &Path, key: &str, digest: &str) -> (i32, String, String) {
    let dir = workspace_root().join("tests/interop/sigstore-js");
    let root = workspace_root().join("sigstore/src/trusted_root.json");
    let mut command = Command::new("node");
    command
        .current_dir(&dir)
        .arg(dir.join("verify.js"))
        .arg(bundle)
        .arg(key)
        .arg(&root)
        .arg(digest);
    run_checker(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgates_attestations_verify_with_other_implementations() {
    let ctx = Ctx::new(Variant::Http).await;
    let (key, public, _) = ctx.keys("ci");
    let (_, other, _) = ctx.keys("other");
    let image = ctx.push("interop-out", "team/app").await;
    let repo = repo_of(&image);
    let predicate = provenance("https://github.com/example/app", "refs/heads/main");
    ctx.attest(
        &key,
        "slsaprovenance1",
        &predicate,
        "legacy",
        &image.reference,
    );
    ctx.attest(
        &key,
        "slsaprovenance1",
        &predicate,
        "bundle",
        &image.reference,
    );

    // The legacy envelope, as the `.att` layer stores it.
    let att = ctx
        .raw
        .get_manifest(&repo, &format!("{}.att", tag_form(&image.digest)))
        .await
        .unwrap();
    let att: Value = serde_json::from_slice(&att.bytes).unwrap();
    let layer = att["layers"][0]["digest"].as_str().unwrap();
    let envelope_file = ctx.path("envelope.json");
    std::fs::write(
        &envelope_file,
        ctx.raw.get_blob(&repo, layer).await.unwrap(),
    )
    .unwrap();
    let (code, out, err) = dsse_attest(&["verify", &envelope_file, &public, &image.digest]);
    assert_eq!(code, 0, "{out}{err}");
    let statement: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(statement["predicateType"], PROVENANCE);
    assert_eq!(
        statement["predicate"]["buildDefinition"]["externalParameters"]["workflow"]["ref"],
        "refs/heads/main"
    );
    let (code, _, err) = dsse_attest(&["verify", &envelope_file, &other, &image.digest]);
    assert_eq!(code, 1, "the Python check refuses another key: {err}");

    // The bundle, as its referrer attaches it.
    let index = ctx
        .raw
        .get_manifest(&repo, &tag_form(&image.digest))
        .await
        .unwrap();
    let index: Value = serde_json::from_slice(&index.bytes).unwrap();
    let referrer = index["manifests"][0]["digest"].as_str().unwrap();
    let referrer = ctx.raw.get_manifest(&repo, referrer).await.unwrap();
    let referrer: Value = serde_json::from_slice(&referrer.bytes).unwrap();
    let bundle_file = ctx.path("bundle.json");
    let bundle_digest = referrer["layers"][0]["digest"].as_str().unwrap();
    std::fs::write(
        &bundle_file,
        ctx.raw.get_blob(&repo, bundle_digest).await.unwrap(),
    )
    .unwrap();
    let (code, out, err) = sigstore_js(Path::new(&bundle_file), &public, &image.digest);
    assert_eq!(code, 0, "sigstore-js: {out}{err}");
    let statement: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(statement["predicateType"], PROVENANCE);
    let (code, _, err) = sigstore_js(Path::new(&bundle_file), &other, &image.digest);
    assert_eq!(code, 1, "sigstore-js refuses another key: {err}");
    let (code, _, err) = sigstore_js(
        Path::new(&bundle_file),
        &public,
        &format!("sha256:{}", "0".repeat(64)),
    );
    assert_eq!(code, 1, "and a statement about another digest: {err}");
    let (code, out, err) = dsse_attest(&["verify", &bundle_file, &public, &image.digest]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_signed_elsewhere_verify_with_imgate() {
    let ctx = Ctx::new(Variant::Http).await;
    let legacy_image = ctx.push("interop-in-legacy", "team/legacy").await;
    let bundle_image = ctx.push("interop-in-bundle", "team/bundle").await;
    let (_, other, _) = ctx.keys("other");

    for (image, format) in [(&legacy_image, "legacy"), (&bundle_image, "bundle")] {
        let stmt = statement(
            PROVENANCE,
            &image.digest,
            provenance("https://github.com/example/app", "refs/heads/main"),
        );
        let stmt_file = ctx.path(&format!("statement-{format}.json"));
        std::fs::write(&stmt_file, &stmt).unwrap();
        let out_dir = ctx.path(&format!("python-{format}"));
        let (code, out, err) = dsse_attest(&["sign", &stmt_file, &out_dir]);
        assert_eq!(code, 0, "{out}{err}");
        let dir = Path::new(&out_dir);
        let public = dir.join("key.pub").display().to_string();
        let repo = repo_of(image);
        if format == "legacy" {
            let envelope = std::fs::read(dir.join("envelope.json")).unwrap();
            ctx.push_att(
                &repo,
                &image.digest,
                &[(envelope, att_annotations(PROVENANCE))],
            )
            .await;
        } else {
            let bundle = std::fs::read(dir.join("bundle.json")).unwrap();
            ctx.push_referrer(&repo, image, &bundle, PROVENANCE).await;
        }
        let ok = ctx.assert_verified(&[
            "--type",
            "slsaprovenance1",
            "--key",
            &public,
            &image.reference,
        ]);
        assert_eq!(ok["statements"][0]["source"]["store"], format);
        assert_eq!(
            ok["statements"][0]["statement"]["subject"][0]["digest"]["sha256"],
            image.digest.trim_start_matches("sha256:")
        );
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
    }
}
