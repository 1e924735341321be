//! BuildKit's attestation manifests, built in the test in the shapes of
//! `fixtures/buildkit/` (the OCI-artifact form with `subject` for one
//! platform, the older image-config form for the other): unsigned they do
//! not count; `imgate sign --attestations` makes their provenance count.

use super::*;

const ATTESTATION_ARTIFACT: &str = "application/vnd.docker.attestation.manifest.v1+json";

/// BuildKit's provenance (the mode=min fixture) about `platform_digest`.
fn buildkit_provenance(platform_digest: &str) -> Vec<u8> {
    let path =
        imgate_tests::bin::workspace_root().join("fixtures/buildkit/provenance-v1-mode-min.json");
    let mut statement: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    statement["subject"][0]["digest"]["sha256"] =
        json!(platform_digest.trim_start_matches("sha256:"));
    statement["subject"][0]["name"] = json!(format!("pkg:docker/team/app@v1?platform=linux"));
    serde_json::to_vec(&statement).unwrap()
}

/// Pushes a two-platform index with an attestation manifest per platform,
/// as `docker buildx build --push --provenance=true` lays it out.
async fn push_buildkit_index(ctx: &Ctx, repo: &str) -> (PushedImage, Vec<String>) {
    let built = ImageBuilder::new("buildkit").index();
    for blob in &built.blobs {
        ctx.raw.put_blob(repo, blob).await.unwrap();
    }
    let mut entries = Vec::new();
    let mut attestation_digests = Vec::new();
    for (n, platform) in built.platforms.iter().enumerate() {
        let manifest = &platform.manifest;
        ctx.raw
            .put_manifest(
                repo,
                &manifest.digest,
                &manifest.media_type,
                &manifest.bytes,
            )
            .await
            .unwrap();
        let (os, arch) = platform.platform.split_once('/').unwrap();
        let mut entry = manifest.descriptor();
        entry["platform"] = json!({"architecture": arch, "os": os});
        entries.push(entry);

        let layer = Blob::new(
            "application/vnd.in-toto+json",
            buildkit_provenance(&manifest.digest),
        );
        ctx.raw.put_blob(repo, &layer).await.unwrap();
        let mut layer_descriptor = layer.descriptor();
        layer_descriptor["annotations"] = json!({"in-toto.io/predicate-type": PROVENANCE});
        let attestation = if n == 0 {
            // The OCI-artifact form (BuildKit v0.32 and later).
            let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
            ctx.raw.put_blob(repo, &empty).await.unwrap();
            json!({
                "mediaType": OCI_MANIFEST, "schemaVersion": 2, "artifactType": ATTESTATION_ARTIFACT,
                "config": empty.descriptor(), "layers": [layer_descriptor], "subject": manifest.descriptor(),
            })
        } else {
            // The image-config form (earlier BuildKit, or oci-artifact=false).
            let config = Blob::new(
                "application/vnd.oci.image.config.v1+json",
                serde_json::to_vec(
                    &json!({"architecture": "unknown", "os": "unknown", "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}),
                )
                .unwrap(),
            );
            ctx.raw.put_blob(repo, &config).await.unwrap();
            json!({"mediaType": OCI_MANIFEST, "schemaVersion": 2, "config": config.descriptor(), "layers": [layer_descriptor]})
        };
        let attestation = Blob::new(OCI_MANIFEST, serde_json::to_vec(&attestation).unwrap());
        ctx.raw
            .put_manifest(repo, &attestation.digest, OCI_MANIFEST, &attestation.bytes)
            .await
            .unwrap();
        let mut entry = attestation.descriptor();
        entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        entry["annotations"] = json!({
            "vnd.docker.reference.digest": manifest.digest,
            "vnd.docker.reference.type": "attestation-manifest",
        });
        entries.push(entry);
        attestation_digests.push(attestation.digest.clone());
    }
    let index = Blob::new(
        OCI_INDEX,
        serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        )
        .unwrap(),
    );
    ctx.raw
        .put_manifest(repo, "v1", OCI_INDEX, &index.bytes)
        .await
        .unwrap();
    let pushed = PushedImage {
        reference: format!("{}/{repo}:v1", ctx.registry.host()),
        digest: index.digest.clone(),
        platform_digests: built
            .platforms
            .iter()
            .map(|p| p.manifest.digest.clone())
            .collect(),
        media_type: OCI_INDEX.to_string(),
    };
    (pushed, attestation_digests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_provenance_counts_once_its_manifest_is_signed() {
    let ctx = Ctx::new(Variant::Http).await;
    let (key, public, _) = ctx.keys("ci");
    let (image, attestations) = push_buildkit_index(&ctx, "team/app").await;
    let check = [
        "--type",
        "slsaprovenance1",
        "--key",
        public.as_str(),
        image.reference.as_str(),
    ];

    // Unsigned: the statements are there, and do not count.
    let denied = ctx.assert_denied(&check, "carries no signature an allowed signer made");
    assert!(
        denied["unmet"].to_string().contains(&attestations[0]),
        "{denied:#}"
    );
    // Signing the index alone signs what nodes pull, not the provenance.
    let run = ctx.run("sign", &["--key", &key, &image.reference]);
    assert_eq!(run.code, 0, "{run:?}");
    ctx.assert_denied(&check, "carries no signature an allowed signer made");

    let run = ctx.run("sign", &["--key", &key, "--attestations", &image.reference]);
    assert_eq!(run.code, 0, "{run:?}");
    let signed: Vec<&str> = run.stdout.lines().collect();
    let repository = image.repository();
    assert_eq!(
        signed,
        [
            image.pinned(),
            format!("{repository}@{}", attestations[0]),
            format!("{repository}@{}", attestations[1]),
        ],
        "{run:?}"
    );
    let ok = ctx.assert_verified(&check);
    let statements = ok["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{ok:#}");
    for (attestation, platform) in attestations.iter().zip(&image.platform_digests) {
        let s = statements
            .iter()
            .find(|s| s["source"]["manifest"] == attestation.as_str())
            .unwrap_or_else(|| panic!("{attestation} counts: {ok:#}"));
        assert_eq!(s["source"]["store"], "buildkit");
        assert_eq!(s["about"], platform.as_str());
        assert_eq!(
            s["statement"]["predicate"]["buildDefinition"]["externalParameters"]["request"]
                ["frontend"],
            "dockerfile.v0"
        );
    }
    // Another key's signature on them does not count for this one.
    let (_, other, _) = ctx.keys("other");
    ctx.assert_denied(
        &[
            "--type",
            "slsaprovenance1",
            "--key",
            &other,
            &image.reference,
        ],
        "carries no signature an allowed signer made",
    );
}
