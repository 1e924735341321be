//! `imgate verify`: does each image carry a signature, by one of the given
//! keys, that satisfies every requirement? For each image the output names
//! the digest verified and, when it is not, every unmet requirement.
//!
//! Exit 0 when every image verified, 1 when any was denied, 2 when any could
//! not be checked (bad key, registry unreachable, image missing). Offline
//! and key-based: only the images' registries are contacted.

use std::collections::BTreeMap;

use anyhow::Context;
use imgate_core::signature::{self, Requirements, Verdict};
use imgate_core::ImageRef;

use super::common::{OutputFormat, RegistryArgs};
use super::sign::parse_annotation;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Public key (PEM file or `env://VAR`). Repeatable: any one may satisfy.
    #[arg(long = "key", value_name = "PUB", required = true)]
    pub keys: Vec<String>,
    /// Annotation the signature must carry (`KEY=VALUE`, repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE", value_parser = parse_annotation)]
    pub annotations: Vec<(String, String)>,
    /// Also require the signature to name the image's repository (off by
    /// default, as in cosign, so mirrored images keep verifying; applies to
    /// legacy signatures: bundles name no repository).
    #[arg(long)]
    pub match_repository: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Images to verify (tags are resolved to digests; the digest is what is verified).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What happened to one image.
enum Checked {
    Done { image: ImageRef, verdict: Verdict },
    Failed { image: String, error: anyhow::Error },
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut keys = Vec::new();
    for spec in &args.keys {
        keys.push(imgate_keys::load_public_key(spec)?);
    }
    let req = Requirements {
        keys,
        annotations: args.annotations.iter().cloned().collect::<BTreeMap<_, _>>(),
        match_repository: args.match_repository,
    };
    let images = args
        .images
        .iter()
        .map(|text| ImageRef::parse(text).with_context(|| format!("cannot verify {text:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut hosts: Vec<String> = images.iter().map(|i| i.registry.clone()).collect();
    hosts.sort();
    hosts.dedup();
    let client = args.registry.client(&hosts)?;

    let mut results = Vec::new();
    for image in &images {
        let checked = async {
            let resolved = client.resolve(image).await?;
            let verdict = signature::verify(&client, &resolved.pinned, &req).await?;
            anyhow::Ok(Checked::Done {
                image: resolved.pinned,
                verdict,
            })
        }
        .await
        .unwrap_or_else(|error| Checked::Failed {
            image: image.to_string(),
            error: error.context(format!("cannot verify {image}")),
        });
        results.push(checked);
    }

    match args.output {
        OutputFormat::Text => print_text(&results),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&to_json(&results))?),
    }
    let denied = results
        .iter()
        .any(|r| matches!(r, Checked::Done { verdict, .. } if !verdict.is_verified()));
    // Every image that could not be checked is reported once on stderr: all
    // but the last here, the last through main's error path (exit 2).
    let mut errors: Vec<anyhow::Error> = results
        .into_iter()
        .filter_map(|r| match r {
            Checked::Failed { error, .. } => Some(error),
            Checked::Done { .. } => None,
        })
        .collect();
    if let Some(last) = errors.pop() {
        for error in errors {
            eprintln!("imgate: {error:#}");
        }
        return Err(last);
    }
    Ok(if denied { Outcome::No } else { Outcome::Ok })
}

fn print_text(results: &[Checked]) {
    for r in results {
        match r {
            Checked::Done {
                image,
                verdict: Verdict::Verified(v),
            } => println!("verified {image}: {} signature by {}", v.format, v.key),
            Checked::Done {
                image,
                verdict: Verdict::Denied { unmet, .. },
            } => {
                println!("denied {image}:");
                for u in unmet {
                    println!("  - {u}");
                }
            }
            // Reported on stderr by `run`.
            Checked::Failed { .. } => {}
        }
    }
}

fn to_json(results: &[Checked]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = results
        .iter()
        .map(|r| match r {
            Checked::Done { image, verdict } => {
                let mut v = serde_json::json!({
                    "image": image.to_string(),
                    "digest": verdict.digest(),
                    "verified": verdict.is_verified(),
                });
                match verdict {
                    Verdict::Verified(ok) => {
                        v["format"] = serde_json::json!(ok.format);
                        v["key"] = serde_json::json!(ok.key);
                        v["annotations"] = serde_json::json!(ok.annotations);
                    }
                    Verdict::Denied { unmet, .. } => {
                        v["unmet"] = unmet
                            .iter()
                            .map(|u| {
                                let mut j = serde_json::to_value(u).unwrap_or_default();
                                j["message"] = serde_json::json!(u.to_string());
                                j
                            })
                            .collect();
                    }
                }
                v
            }
            Checked::Failed { image, error } => serde_json::json!({
                "image": image,
                "error": format!("{error:#}"),
            }),
        })
        .collect();
    serde_json::Value::Array(items)
}
