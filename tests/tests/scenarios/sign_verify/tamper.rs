//! The tamper matrix: a signed image whose signature artefacts are copied,
//! forged, rewritten or corrupted in the registry, each case denied with the
//! right unmet requirement, in both signature formats.

use std::path::Path;

use imgate_tests::image::Blob;
use imgate_tests::{ImageBuilder, PushWith, PushedImage, Variant};
use serde_json::Value;

use super::{repo_of, signature_layers, tag_form, Ctx, BUNDLE, SIMPLE_SIGNING};

async fn tamper_matrix(format: &str) {
    let ctx = Ctx::new(Variant::Http).await;
    let (k1, p1) = ctx.keys("ci");
    let (_, p2) = ctx.keys("other");
    let fmt = ["--format", format];
    let legacy = format == "legacy";

    // A signed image, and its signature artefacts.
    let a = ctx.push("tamper-a", "team/app", "a").await;
    ctx.sign(
        &k1,
        &[&fmt[..], &["-a", "env=staging", &a.reference]].concat(),
    );
    ctx.assert_verified(&[&p1], &[&a.reference]);

    // Wrong key.
    let run = ctx.assert_denied(&[&p2], &[&a.reference], "wrong_key");
    let msg = run.json()[0]["unmet"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("not signed by any of the allowed keys") && msg.contains("other.pub"),
        "{msg}"
    );

    // Required annotation different, and missing.
    let run = ctx.assert_denied(
        &[&p1],
        &["-a", "env=prod", &a.reference],
        "missing_annotation",
    );
    let unmet = &run.json()[0]["unmet"][0];
    assert_eq!(
        (
            unmet["key"].as_str(),
            unmet["want"].as_str(),
            unmet["found"].as_str()
        ),
        (Some("env"), Some("prod"), Some("staging"))
    );
    let run = ctx.assert_denied(
        &[&p1],
        &["-a", "team=web", &a.reference],
        "missing_annotation",
    );
    assert!(run.json()[0]["unmet"][0]["found"].is_null());

    // Unsigned image in the same repository.
    let unsigned = ctx.push("tamper-unsigned", "team/app", "unsigned").await;
    let run = ctx.assert_denied(&[&p1], &[&unsigned.reference], "no_signatures");
    assert!(run.json()[0]["unmet"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .contains(&unsigned.digest));

    // A signature copied from A to B, in the same repository and in another.
    let same = ctx.push("tamper-b", "team/app", "b").await;
    let other = ctx.push("tamper-c", "elsewhere/app", "c").await;
    for target in [&same, &other] {
        copy_signature(&ctx, &a, target, legacy).await;
        let run = ctx.assert_denied(&[&p1], &[&target.reference], "digest_mismatch");
        let unmet = &run.json()[0]["unmet"][0];
        assert_eq!(unmet["want"], target.digest.as_str());
        assert!(
            unmet["found"]
                .as_str()
                .unwrap_or_default()
                .contains(a.digest.trim_start_matches("sha256:")),
            "{unmet}"
        );
    }

    // A mirror (same digest, another repository) with the signature copied:
    // passes by default, as in cosign; legacy payloads name the repository,
    // so --match-repository denies; bundles name none, so under
    // --match-repository they never qualify, even in their own repository.
    let mirror = ctx.push("tamper-a", "mirror/app", "a").await;
    assert_eq!(mirror.digest, a.digest);
    copy_signature(&ctx, &a, &mirror, legacy).await;
    ctx.assert_verified(&[&p1], &[&mirror.reference]);
    if legacy {
        let run = ctx.assert_denied(
            &[&p1],
            &["--match-repository", &mirror.reference],
            "repository_mismatch",
        );
        assert!(run.stdout.contains("team/app"), "{}", run.stdout);
        ctx.assert_verified(&[&p1], &["--match-repository", &a.reference]);
    } else {
        for image in [&mirror, &a] {
            let run = ctx.assert_denied(
                &[&p1],
                &["--match-repository", &image.reference],
                "no_repository",
            );
            assert!(run.stdout.contains("names no repository"), "{}", run.stdout);
        }
    }

    // Hand-crafted: the signature kept, the layer descriptor pointing at other
    // content (a payload or statement claiming env=prod).
    let forged_img = ctx.push("tamper-forged", "team/app", "forged").await;
    forge_signature(&ctx, &a, &forged_img, legacy).await;
    ctx.assert_denied(
        &[&p1],
        &["-a", "env=prod", &forged_img.reference],
        "wrong_key",
    );

    // The blob swapped in the registry's storage: it no longer hashes to its descriptor.
    let swapped = ctx.push("tamper-swap", "team/app", "swap").await;
    ctx.sign(&k1, &[&fmt[..], &[&swapped.reference]].concat());
    ctx.assert_verified(&[&p1], &[&swapped.reference]);
    let layer = signature_layers(&ctx, "team/app", &swapped.digest, legacy).await;
    flip_byte(&ctx.blob_file(&layer[0]));
    let run = ctx.assert_denied(&[&p1], &[&swapped.reference], "blob_mismatch");
    assert!(run.stdout.contains(&layer[0]), "{}", run.stdout);

    // Multi-arch: the index signed; a platform digest is not, until --recursive.
    let index = ImageBuilder::new("tamper-multi")
        .index()
        .push(&ctx.registry, "team/multi", "v1", PushWith::Http)
        .await
        .expect("push index");
    let run = ctx.sign(&k1, &[&fmt[..], &[&index.reference]].concat());
    assert_eq!(run.stdout.trim(), index.pinned());
    ctx.assert_verified(&[&p1], &[&index.reference]);
    let host = ctx.registry.host().to_string();
    let platform = format!("{host}/team/multi@{}", index.platform_digests[0]);
    ctx.assert_denied(&[&p1], &[&platform], "no_signatures");
    let run = ctx.sign(
        &k1,
        &[&fmt[..], &["--recursive", &index.reference]].concat(),
    );
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    ctx.assert_verified(&[&p1], &[&platform]);
    ctx.assert_verified(
        &[&p1],
        &[&format!("{host}/team/multi@{}", index.platform_digests[1])],
    );

    // Several images: exit 1 if any is denied, and each is reported.
    let run = ctx.verify(&[&p1], &[&a.reference, &unsigned.reference]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()[0]["verified"], true);
    assert_eq!(run.json()[1]["verified"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_matrix_legacy() {
    tamper_matrix("legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_matrix_bundle() {
    tamper_matrix("bundle").await;
}

/// Copies `from`'s signature onto `to` (blobs too when the repository differs).
async fn copy_signature(ctx: &Ctx, from: &PushedImage, to: &PushedImage, legacy: bool) {
    let (src, dst) = (repo_of(from), repo_of(to));
    if legacy {
        let tag = format!("{}.sig", tag_form(&from.digest));
        let raw = ctx
            .raw
            .get_manifest(&src, &tag)
            .await
            .expect("sig manifest");
        let m: Value = serde_json::from_slice(&raw.bytes).expect("json");
        if src != dst {
            ctx.copy_blob(
                &src,
                &dst,
                m["config"]["digest"].as_str().expect("d"),
                "application/vnd.oci.image.config.v1+json",
            )
            .await;
            for l in m["layers"].as_array().expect("layers") {
                ctx.copy_blob(&src, &dst, l["digest"].as_str().expect("d"), SIMPLE_SIGNING)
                    .await;
            }
        }
        ctx.raw
            .put_manifest(
                &dst,
                &format!("{}.sig", tag_form(&to.digest)),
                &raw.media_type,
                &raw.bytes,
            )
            .await
            .expect("put copied signature");
    } else {
        let index = ctx.manifest(&src, &tag_form(&from.digest)).await;
        let mut entries = Vec::new();
        for e in index["manifests"].as_array().expect("entries") {
            let mut m = ctx.manifest(&src, e["digest"].as_str().expect("d")).await;
            if src != dst {
                ctx.copy_blob(
                    &src,
                    &dst,
                    m["config"]["digest"].as_str().expect("d"),
                    "application/vnd.oci.empty.v1+json",
                )
                .await;
                ctx.copy_blob(
                    &src,
                    &dst,
                    m["layers"][0]["digest"].as_str().expect("d"),
                    BUNDLE,
                )
                .await;
            }
            // Re-attached to the target: only the subject changes, the bundle is the original.
            let target = ctx
                .raw
                .get_manifest(&dst, &to.digest)
                .await
                .expect("target");
            m["subject"] = serde_json::json!({"mediaType": target.media_type, "digest": to.digest, "size": target.bytes.len()});
            let bytes = serde_json::to_vec(&m).expect("json");
            let blob = Blob::new("application/vnd.oci.image.manifest.v1+json", bytes);
            ctx.raw
                .put_manifest(&dst, &blob.digest, &blob.media_type, &blob.bytes)
                .await
                .expect("put");
            entries.push(serde_json::json!({"mediaType": blob.media_type, "digest": blob.digest, "size": blob.bytes.len(), "artifactType": BUNDLE}));
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
        ctx.raw
            .put_manifest(
                &dst,
                &tag_form(&to.digest),
                "application/vnd.oci.image.index.v1+json",
                &serde_json::to_vec(&index).expect("json"),
            )
            .await
            .expect("put index");
    }
}

/// Puts on `to` a signature whose signature bytes come from `from`'s signature
/// but whose layer is other content, claiming `env=prod` for `to`'s digest.
async fn forge_signature(ctx: &Ctx, from: &PushedImage, to: &PushedImage, legacy: bool) {
    use base64::Engine as _;
    let repo = repo_of(to);
    let layer_digest = &signature_layers(ctx, &repo_of(from), &from.digest, legacy).await[0];
    let original = ctx
        .raw
        .get_blob(&repo_of(from), layer_digest)
        .await
        .expect("blob");
    if legacy {
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{}"}},"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":{{"env":"prod"}}}}"#,
            to.repository(),
            to.digest
        );
        let blob = Blob::new(SIMPLE_SIGNING, payload.into_bytes());
        ctx.raw.put_blob(&repo, &blob).await.expect("put payload");
        let sig_manifest = ctx
            .manifest(&repo_of(from), &format!("{}.sig", tag_form(&from.digest)))
            .await;
        let mut m = sig_manifest.clone();
        m["layers"][0]["digest"] = blob.digest.clone().into();
        m["layers"][0]["size"] = blob.bytes.len().into();
        ctx.raw
            .put_manifest(
                &repo,
                &format!("{}.sig", tag_form(&to.digest)),
                "application/vnd.oci.image.manifest.v1+json",
                &serde_json::to_vec(&m).expect("json"),
            )
            .await
            .expect("put forged");
    } else {
        let mut bundle: Value = serde_json::from_slice(&original).expect("bundle");
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{}"}},"annotations":{{"env":"prod"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#,
            to.digest.trim_start_matches("sha256:")
        );
        bundle["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD
            .encode(statement)
            .into();
        let blob = Blob::new(BUNDLE, serde_json::to_vec(&bundle).expect("json"));
        ctx.raw.put_blob(&repo, &blob).await.expect("put bundle");
        ctx.raw
            .put_blob(
                &repo,
                &Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec()),
            )
            .await
            .expect("put empty");
        let target = ctx
            .raw
            .get_manifest(&repo, &to.digest)
            .await
            .expect("target");
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": BUNDLE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": imgate_tests::image::sha256_digest(b"{}"), "size": 2},
            "layers": [blob.descriptor()],
            "subject": {"mediaType": target.media_type, "digest": to.digest, "size": target.bytes.len()},
        });
        let mb = Blob::new(
            "application/vnd.oci.image.manifest.v1+json",
            serde_json::to_vec(&m).expect("json"),
        );
        ctx.raw
            .put_manifest(&repo, &mb.digest, &mb.media_type, &mb.bytes)
            .await
            .expect("put");
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"mediaType": mb.media_type, "digest": mb.digest, "size": mb.bytes.len()}]});
        ctx.raw
            .put_manifest(
                &repo,
                &tag_form(&to.digest),
                "application/vnd.oci.image.index.v1+json",
                &serde_json::to_vec(&index).expect("json"),
            )
            .await
            .expect("put index");
    }
}

/// Flips one byte of a file, keeping its length.
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read blob file");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20;
    std::fs::write(path, bytes).expect("write blob file");
}
