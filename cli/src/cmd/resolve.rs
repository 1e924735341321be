//! `imgate resolve`: tags to digest-pinned references, one per line (or JSON).
//!
//! A multi-arch tag resolves to its index digest (what a node pulls); the
//! platform digests are listed in the JSON output only.

use futures::future::join_all;
use imgate_core::registry::Resolved;
use imgate_core::ImageRef;

use super::common::{parse_images, OutputFormat, RegistryArgs};
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image references (`nginx`, `registry.example.com/team/app:v1`, `host:5000/x@sha256:…`).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Output format: `text` prints one pinned reference per line; `json`
    /// adds the media type and, for an index, each platform's digest.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let images = parse_images(&args.images, "resolve")?;
    let client = args
        .registry
        .client(images.iter().map(|i| i.registry.as_str()))?;

    // Each distinct image once, all at the same time.
    let mut distinct: Vec<&ImageRef> = Vec::new();
    for image in &images {
        if !distinct.contains(&image) {
            distinct.push(image);
        }
    }
    let results = join_all(distinct.iter().map(|image| client.resolve(image))).await;
    let mut resolved = Vec::with_capacity(images.len());
    for image in &images {
        let i = distinct
            .iter()
            .position(|d| *d == image)
            .unwrap_or_default();
        match &results[i] {
            Ok(r) => resolved.push(r),
            Err(err) => anyhow::bail!("cannot resolve {image}: {err}"),
        }
    }

    match args.output {
        OutputFormat::Text => {
            for r in &resolved {
                outln!("{}", r.pinned);
            }
        }
        OutputFormat::Json => {
            let out: Vec<serde_json::Value> = resolved.iter().map(|r| to_json(r)).collect();
            outln!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(Outcome::Ok)
}

fn to_json(r: &Resolved) -> serde_json::Value {
    let platforms: Vec<serde_json::Value> = r
        .platforms
        .iter()
        .map(|(platform, digest)| {
            serde_json::json!({
                "platform": platform.as_ref().map(ToString::to_string),
                "digest": digest,
            })
        })
        .collect();
    serde_json::json!({
        "reference": r.pinned.to_string(),
        "digest": r.manifest.digest,
        "mediaType": r.manifest.media_type,
        "platforms": platforms,
    })
}
