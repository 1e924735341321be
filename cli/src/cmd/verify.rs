//! `imgate verify`: does each image carry a signature, by one of the given
//! keys, that satisfies every requirement? For each image the output names
//! the digest verified and, when it is not, every unmet requirement.
//!
//! With `--policy FILE` instead of `--key`: would the cluster admit each
//! image? That runs the webhook's own admission engine (trusted registries,
//! the matching rule with its keys and annotations, `onRegistryError`, the
//! mode) on a Pod running the image, and explains the decision.
//!
//! With `--certificate-identity`/`--certificate-oidc-issuer` (or their
//! `-regexp` forms): keyless signatures by that signer count too, verified
//! against the embedded Sigstore root or `--trusted-root`.
//!
//! Exit 0 when every image verified (or would be admitted), 1 when any was
//! denied, 2 when any could not be checked (bad key, registry unreachable,
//! image missing; under `--policy` the policy's `onRegistryError` decides
//! instead). Offline and key-based: only the images' registries are
//! contacted.

use std::collections::BTreeMap;

use std::path::PathBuf;

use imgate_core::policy::{Mode, Policy};
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Requirements, Verdict};
use imgate_core::sigstore::TlogMode;
use imgate_core::ImageRef;
use imgate_webhook::admission::{Admission, Endpoint, ObjectDecision, DEFAULT_DEADLINE};
use serde_json::json;

use super::common::{parse_images, OutputFormat, RegistryArgs};
use super::identity::SignerArgs;
use super::sign::parse_annotation;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub signers: SignerArgs,
    /// Annotation the signature must carry (`KEY=VALUE`, repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE", value_parser = parse_annotation, conflicts_with = "policy")]
    pub annotations: Vec<(String, String)>,
    /// Also require the signature to name the image's repository (off by
    /// default, as in cosign, so mirrored images keep verifying). Only a
    /// legacy signature can: a bundle names no repository, so it is unmet.
    #[arg(long, conflicts_with = "policy")]
    pub match_repository: bool,
    /// Decide as the webhook would under this policy file, instead of
    /// checking against --key: trusted registries, the matching rule's keys
    /// and annotations, onRegistryError and the mode all apply.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// With --policy: the namespace the Pod would be created in (the
    /// policy's namespace exclusions apply).
    #[arg(long, short = 'n', default_value = "default", requires = "policy")]
    pub namespace: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Images to verify (tags are resolved to digests; the digest is what is verified).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `--tlog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlogArg {
    /// A verified log entry is required (a timestamp alone does not do).
    Required,
    /// Verified when present.
    IfPresent,
    /// Not checked.
    Ignore,
}

impl From<TlogArg> for TlogMode {
    fn from(value: TlogArg) -> Self {
        match value {
            TlogArg::Required => TlogMode::Required,
            TlogArg::IfPresent => TlogMode::IfPresent,
            TlogArg::Ignore => TlogMode::Ignore,
        }
    }
}

/// What happened to one image.
enum Checked {
    Done { image: ImageRef, verdict: Verdict },
    Failed { image: String, error: anyhow::Error },
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    if let Some(policy) = &args.policy {
        if args.signers.identity.given() {
            anyhow::bail!("--policy decides with the policy's keyless authorities; drop --certificate-identity");
        }
        return run_policy(&args, policy).await;
    }
    let req = Requirements {
        annotations: args.annotations.iter().cloned().collect::<BTreeMap<_, _>>(),
        match_repository: args.match_repository,
        ..args.signers.requirements()?
    };
    let images = parse_images(&args.images, "verify")?;
    let client = args
        .registry
        .client(images.iter().map(|i| i.registry.as_str()))?;

    let mut results = Vec::new();
    for image in &images {
        let checked = async {
            // A digest reference is verified as given, as the webhook does:
            // the signatures name the digest, so fetching its manifest first
            // would only cost a round trip.
            let pinned = match image.digest {
                Some(_) => image.clone(),
                None => client.resolve(image).await?.pinned,
            };
            let verdict = signature::verify(&client, &pinned, &req).await?;
            if image.digest.is_some() && found_nothing(&verdict) {
                ensure_manifest_exists(&client, &pinned).await?;
            }
            anyhow::Ok(Checked::Done {
                image: pinned,
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
        OutputFormat::Text => print_text(&results)?,
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&to_json(&results))?),
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

/// Whether nothing at all was found that claims to sign the digest.
fn found_nothing(verdict: &Verdict) -> bool {
    match verdict {
        Verdict::Denied { unmet, .. } => {
            !unmet.is_empty()
                && unmet
                    .iter()
                    .all(|u| matches!(u, signature::Unmet::NoSignatures { .. }))
        }
        Verdict::Verified(_) => false,
    }
}

/// For a digest reference with no signatures: "no such image" is the more
/// useful answer when it is the true one (a mistyped digest, the wrong
/// repository), so only then is the manifest asked for. A signed digest
/// never pays this request.
async fn ensure_manifest_exists(client: &RegistryClient, image: &ImageRef) -> anyhow::Result<()> {
    let Some(digest) = &image.digest else {
        return Ok(());
    };
    client.get_manifest(image, &digest.to_string()).await?;
    Ok(())
}

fn print_text(results: &[Checked]) -> anyhow::Result<()> {
    for r in results {
        match r {
            Checked::Done {
                image,
                verdict: Verdict::Verified(v),
            } => outln!("verified {image}: {} signature by {}", v.format, v.key),
            Checked::Done {
                image,
                verdict: Verdict::Denied { unmet, .. },
            } => {
                outln!("denied {image}:");
                for u in unmet {
                    outln!("  - {u}");
                }
            }
            // Reported on stderr by `run`.
            Checked::Failed { .. } => {}
        }
    }
    Ok(())
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

/// The name of the Pod the images are admitted in, and of its container.
const POD: &str = "imgate-verify";

/// `verify --policy`: each image through the webhook's engine, as the only
/// container of a Pod created in `--namespace`.
async fn run_policy(args: &Args, path: &std::path::Path) -> anyhow::Result<Outcome> {
    let policy = Policy::load(path)?;
    for warning in policy.warnings() {
        tracing::warn!("{warning}");
    }
    let mode = policy.mode;
    // --username applies to the registries named on the command line; the
    // engine contacts only those the policy trusts.
    let hosts: Vec<String> = args
        .images
        .iter()
        .filter_map(|text| ImageRef::parse(text).ok())
        .map(|i| i.registry)
        .collect();
    let engine =
        args.registry
            .policy_engine(policy, hosts.iter().map(String::as_str), DEFAULT_DEADLINE)?;
    let mut results = Vec::new();
    for image in &args.images {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": POD, "namespace": args.namespace},
            "spec": {"containers": [{"name": POD, "image": image}]},
        });
        let decision = engine
            .decide(&Admission::manifest(
                &pod,
                &args.namespace,
                Endpoint::Mutate,
            ))
            .await
            .unwrap_or_else(ObjectDecision::invalid);
        results.push((image.as_str(), decision));
    }
    match args.output {
        OutputFormat::Text => print_policy_text(&results, mode, &args.namespace)?,
        OutputFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&policy_json(&results, mode, &args.namespace))?
        ),
    }
    Ok(if results.iter().all(|(_, d)| d.allowed) {
        Outcome::Ok
    } else {
        Outcome::No
    })
}

/// The engine's reasons name the container; here there is only the image.
fn without_container(reason: &str) -> &str {
    reason
        .strip_prefix(&format!("container {POD:?}: "))
        .unwrap_or(reason)
}

fn print_policy_text(
    results: &[(&str, ObjectDecision)],
    mode: Mode,
    namespace: &str,
) -> anyhow::Result<()> {
    for (image, decision) in results {
        let verdict = if decision.allowed {
            "ADMITTED"
        } else {
            "DENIED"
        };
        if let Some(why) = &decision.skipped {
            outln!("{verdict} {image}: not checked ({why})");
            continue;
        }
        outln!("{verdict} {image} (a Pod in namespace {namespace})");
        for site in &decision.images {
            if let Some(rule) = &site.rule {
                outln!("  rule: {rule}");
            }
            if let Some(digest) = &site.digest {
                outln!("  digest: {digest}");
            }
            if site.verified {
                outln!("  signature: verified by a key of the rule");
            } else if site.allowed && !site.registry_error {
                outln!("  signature: not required by the rule");
            }
            if let Some(reason) = &site.reason {
                let label = if site.allowed {
                    "note"
                } else if mode == Mode::Audit {
                    "would deny (audit mode admits)"
                } else {
                    "reason"
                };
                outln!("  {label}: {}", without_container(reason));
            }
            if site.registry_error {
                outln!("  registry: unreachable or failing; onRegistryError decided");
            }
            if let Some(pinned) = &site.pinned {
                outln!("  pinned: {pinned}");
            }
        }
        for warning in &decision.warnings {
            outln!("  warning: {}", without_container(warning));
        }
    }
    Ok(())
}

fn policy_json(
    results: &[(&str, ObjectDecision)],
    mode: Mode,
    namespace: &str,
) -> serde_json::Value {
    let items: Vec<serde_json::Value> = results
        .iter()
        .map(|(image, decision)| {
            let site = decision.images.first();
            json!({
                "image": image,
                "namespace": namespace,
                "mode": mode,
                "admitted": decision.allowed,
                "allowed_by_policy": site.map(|s| s.allowed),
                "rule": site.and_then(|s| s.rule.clone()),
                "digest": site.and_then(|s| s.digest.as_ref().map(ToString::to_string)),
                "verified": site.map(|s| s.verified),
                "registry_error": site.map(|s| s.registry_error),
                "reason": site.and_then(|s| s.reason.as_deref().map(without_container)),
                "pinned": site.and_then(|s| s.pinned.clone()),
                "warnings": decision.warnings.iter().map(|w| without_container(w)).collect::<Vec<_>>(),
                "skipped": decision.skipped,
            })
        })
        .collect();
    serde_json::Value::Array(items)
}
