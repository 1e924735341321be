//! skopeo, the independent tool the tests compare imgate against: push an OCI
//! layout, read raw manifests, report digests.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::image::sha256_digest;
use crate::registry::Registry;

/// How long one skopeo command may take.
const SKOPEO_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `skopeo --insecure-policy ARGS` and returns its stdout; an error
/// carries skopeo's stderr. (`--insecure-policy`: no signature policy file is
/// needed for test registries.)
pub async fn skopeo(args: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut command = tokio::process::Command::new("skopeo");
    command
        .arg("--insecure-policy")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .context("running skopeo (apt-get install -y skopeo)")?;
    let output = tokio::time::timeout(SKOPEO_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("skopeo {} took over {SKOPEO_TIMEOUT:?}", args.join(" ")))??;
    if !output.status.success() {
        bail!(
            "skopeo {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output.stdout)
}

/// The raw manifest bytes of `reference` (`host/repo:tag` or `@digest`) as skopeo fetches them.
pub async fn skopeo_inspect_raw(registry: &Registry, reference: &str) -> anyhow::Result<Vec<u8>> {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(registry.skopeo_args());
    args.push(format!("docker://{reference}"));
    skopeo(&args).await
}

/// The digest of what `reference` names, as skopeo sees it: the SHA-256 of
/// `skopeo inspect --raw`. For a multi-arch tag this is the *index* digest;
/// plain `skopeo inspect` (without `--raw`) would pick one platform's
/// manifest instead, which is why it is not used here.
pub async fn skopeo_inspect_digest(registry: &Registry, reference: &str) -> anyhow::Result<String> {
    Ok(sha256_digest(
        &skopeo_inspect_raw(registry, reference).await?,
    ))
}

/// The platform manifests of the index `reference` names, as skopeo sees
/// them: `(os/arch, digest)` for each entry of `skopeo inspect --raw`, each
/// fetched again with `skopeo inspect --raw REPO@DIGEST` and checked to hash
/// to its digest. (`skopeo inspect --format {{.Digest}}` cannot serve here:
/// even with `--override-arch` it reports the digest of the index itself.)
pub async fn skopeo_platform_digests(
    registry: &Registry,
    reference: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let raw = skopeo_inspect_raw(registry, reference).await?;
    let index: serde_json::Value = serde_json::from_slice(&raw)?;
    let entries = index["manifests"]
        .as_array()
        .with_context(|| format!("{reference} is not an index"))?;
    let repository = match reference.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => match reference.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name.to_string(),
            _ => reference.to_string(),
        },
    };
    let mut out = Vec::new();
    for entry in entries {
        let digest = entry["digest"]
            .as_str()
            .context("index entry without digest")?;
        let platform = format!(
            "{}/{}",
            entry["platform"]["os"].as_str().unwrap_or_default(),
            entry["platform"]["architecture"]
                .as_str()
                .unwrap_or_default()
        );
        let bytes = skopeo_inspect_raw(registry, &format!("{repository}@{digest}")).await?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            bail!("{repository}@{digest} hashes to {actual}");
        }
        out.push((platform, digest.to_string()));
    }
    Ok(out)
}

/// The digest `skopeo inspect --format {{.Digest}}` reports (the top-level
/// manifest, an index for multi-arch tags).
pub async fn skopeo_reported_digest(
    registry: &Registry,
    reference: &str,
) -> anyhow::Result<String> {
    let mut args = vec![
        "inspect".to_string(),
        "--format".to_string(),
        "{{.Digest}}".to_string(),
    ];
    args.extend(registry.skopeo_args());
    args.push(format!("docker://{reference}"));
    let out = skopeo(&args).await?;
    Ok(String::from_utf8(out)?.trim().to_string())
}

/// Copies the OCI layout at `dir` (tag `layout_tag`) to `host/repo:tag` on
/// `registry`, every platform, digests preserved.
pub async fn skopeo_copy_layout(
    registry: &Registry,
    dir: &Path,
    layout_tag: &str,
    repo: &str,
    tag: &str,
) -> anyhow::Result<()> {
    let mut args = vec![
        "copy".to_string(),
        "--all".to_string(),
        // Fail rather than silently re-compress or convert: the test knows
        // the digests it built.
        "--preserve-digests".to_string(),
        "--quiet".to_string(),
    ];
    args.extend(registry.skopeo_dest_args());
    args.push(format!("oci:{}:{layout_tag}", dir.display()));
    args.push(format!("docker://{}/{repo}:{tag}", registry.host()));
    skopeo(&args).await.map(|_| ())
}
