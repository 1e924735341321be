//! `imgate sign`: resolve each image to its digest, sign that digest with a
//! cosign key or keylessly (a Fulcio certificate for the CI's identity),
//! push the signature next to it, and print the pinned reference (so CI can
//! capture what was signed).
//!
//! Keyless signatures, and key signatures with `--tlog-upload`, carry a
//! Rekor entry (and a timestamp where one is configured) and are verified by
//! imgate before anything is pushed.
//!
//! Tags are resolved first: a signature always names a digest, and a
//! multi-arch tag resolves to its index digest (what nodes pull).
//! `--recursive` also signs each platform manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use imgate_core::signature::{self, Format, SignOptions};
use imgate_core::{Digest, ImageRef};

use super::common::{open_signer, RegistryArgs};
use super::sigstore_args::SigstoreArgs;
use super::Outcome;

/// Signature format on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// cosign's `.sig` tag (cosign v1/v2 layout): a layout every verifier in the field reads.
    Legacy,
    /// Sigstore bundle v0.3 attached as an OCI referrer (cosign v3's default).
    Bundle,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Legacy => Format::Legacy,
            FormatArg::Bundle => Format::Bundle,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = PUBLIC_NOTE)]
pub struct Args {
    /// Private key: a cosign key file or `env://VAR` (password from
    /// IMGATE_PASSWORD, else COSIGN_PASSWORD, else a terminal prompt); a
    /// `pkcs11:` URI (HSM, YubiKey; PIN from pin-source, IMGATE_PKCS11_PIN or
    /// a prompt); or `hashivault://NAME` (Vault/OpenBao transit, configured by
    /// VAULT_ADDR, VAULT_TOKEN, TRANSIT_SECRET_ENGINE_PATH). Without --key,
    /// imgate signs keylessly.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Signature format. `legacy` (the default) is a layout every verifier in
    /// the field reads (cosign, Kyverno, policy-controller, Connaisseur);
    /// `bundle` is what cosign v3 writes by default. A key signature without
    /// --tlog-upload carries no transparency-log entry: other verifiers need
    /// their "ignore tlog" setting (see docs/keyless.md).
    #[arg(long, value_enum, default_value_t = FormatArg::Legacy)]
    pub format: FormatArg,
    /// Annotation signed along with the digest (`KEY=VALUE`, repeatable);
    /// `imgate verify --annotation` and policies can require it.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub annotations: Vec<(String, String)>,
    /// For a multi-arch image, also sign each platform manifest.
    #[arg(long)]
    pub recursive: bool,
    /// For an index built by BuildKit, also sign each attestation manifest
    /// in it (provenance, SBOM), so policies can count them.
    #[arg(long)]
    pub attestations: bool,
    /// Read image names and the digest from `docker buildx build --metadata-file` output.
    #[arg(long, value_name = "FILE")]
    pub buildx_metadata: Option<PathBuf>,
    /// Images to sign (tags are resolved to digests first).
    #[arg(value_name = "IMAGE", required_unless_present = "buildx_metadata")]
    pub images: Vec<String>,
    #[command(flatten)]
    pub sigstore: SigstoreArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What `imgate sign --help` says about what goes public.
const PUBLIC_NOTE: &str = "Public: keyless signing and --tlog-upload record, on the public-good \
    Rekor log unless --signing-config names another, the signed digest, the signature and the \
    certificate (your CI identity: repository, workflow, ref) for anyone to read, forever.";

/// Parses `KEY=VALUE`.
pub fn parse_annotation(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut images = Vec::new();
    for text in &args.images {
        images.push(ImageRef::parse(text).with_context(|| format!("cannot sign {text:?}"))?);
    }
    if let Some(path) = &args.buildx_metadata {
        images.extend(buildx_images(path)?);
    }
    let mut distinct: Vec<ImageRef> = Vec::new();
    for image in images {
        if !distinct.contains(&image) {
            distinct.push(image);
        }
    }

    // The key (or identity token) before the registry: a wrong key,
    // password or token fails fast.
    let key = args.key.as_deref().map(open_signer).transpose()?;
    let sigstore = if key.is_none() || args.sigstore.tlog_upload {
        Some(
            args.sigstore
                .signer(key.as_deref(), needs_set(&args))
                .await?,
        )
    } else {
        args.sigstore.check_key_only()?;
        None
    };

    let client = args
        .registry
        .client(distinct.iter().map(|i| i.registry.as_str()))?;
    let opts = SignOptions {
        format: args.format.into(),
        annotations: args.annotations.iter().cloned().collect::<BTreeMap<_, _>>(),
    };

    for image in &distinct {
        let resolved = client
            .resolve(image)
            .await
            .with_context(|| format!("cannot sign {image}"))?;
        let mut targets = vec![resolved.pinned.clone()];
        if args.recursive {
            targets.extend(
                resolved
                    .platforms
                    .iter()
                    .map(|(_, digest)| image.at_digest(digest.clone())),
            );
        }
        if args.attestations {
            targets.extend(imgate_core::attestation::buildkit_targets(&resolved));
        }
        for target in targets {
            let signed = match (&sigstore, &key) {
                (Some(signer), _) => {
                    signature::sign_with_sigstore(&client, &target, signer, &opts).await
                }
                (None, Some(key)) => signature::sign(&client, &target, key.as_ref(), &opts).await,
                (None, None) => bail!("no key and no keyless signer"),
            };
            signed?; // every error names the image
            tracing::info!(image = %target, format = %opts.format, "signed");
            outln!("{target}");
        }
    }
    Ok(Outcome::Ok)
}

/// The legacy layout carries the Rekor entry's signed timestamp, which only
/// a Rekor v1 log gives.
fn needs_set(args: &Args) -> bool {
    args.format == FormatArg::Legacy
}

/// The images `docker buildx build --metadata-file` recorded: each name in
/// `image.name` (comma-separated) pinned to `containerimage.digest`.
fn buildx_images(path: &Path) -> anyhow::Result<Vec<ImageRef>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read buildx metadata {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("buildx metadata {} is not JSON", path.display()))?;
    let field = |name: &str| {
        json.get(name)
            .and_then(|v| v.as_str())
            .with_context(|| format!("buildx metadata {} has no {name:?}", path.display()))
    };
    let digest = Digest::parse(field("containerimage.digest")?)
        .with_context(|| format!("buildx metadata {}", path.display()))?;
    let names: Vec<&str> = field("image.name")?
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        bail!("buildx metadata {} names no image", path.display());
    }
    names
        .into_iter()
        .map(|name| {
            ImageRef::parse(name)
                .map(|image| image.pinned(digest.clone()))
                .with_context(|| format!("buildx metadata {}", path.display()))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn annotations_parse() {
        assert_eq!(
            parse_annotation("env=prod").unwrap(),
            ("env".into(), "prod".into())
        );
        assert_eq!(
            parse_annotation("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert_eq!(parse_annotation("k=").unwrap(), ("k".into(), String::new()));
        assert!(parse_annotation("novalue").is_err());
        assert!(parse_annotation("=v").is_err());
    }

    #[test]
    fn buildx_metadata_names_every_image_at_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        let digest = Digest::sha256(b"x");
        std::fs::write(
            &path,
            serde_json::json!({
                "buildx.build.ref": "builder/builder0/abc",
                "containerimage.digest": digest.to_string(),
                "image.name": "localhost:5000/app:latest, localhost:5000/app:v1,ghcr.io/o/app:v1",
            })
            .to_string(),
        )
        .unwrap();
        let images = buildx_images(&path).unwrap();
        let texts: Vec<String> = images.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            vec![
                format!("localhost:5000/app:latest@{digest}"),
                format!("localhost:5000/app:v1@{digest}"),
                format!("ghcr.io/o/app:v1@{digest}"),
            ]
        );
        std::fs::write(&path, r#"{"image.name":"x"}"#).unwrap();
        let err = buildx_images(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains("containerimage.digest"),
            "{err:#}"
        );
    }
}
