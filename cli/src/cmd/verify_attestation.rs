//! `imgate verify-attestation`: does each image carry an in-toto
//! attestation of `--type`, signed by one of the given keys or keyless
//! identities, whose subject names the image's digest? Reads all three
//! stores (cosign's `.att` tag, Sigstore bundles among the referrers,
//! BuildKit's attestation manifests in the index, which count only when
//! signed). Prints the statements that verified (`--output json`: as JSON
//! documents), else every unmet requirement.
//!
//! With `--policy FILE`: the signers and CEL conditions of the `attestations:`
//! of the rule that matches each image (only those of `--type`, when given).
//!
//! Exit 0 when every image meets every requirement, 1 when any does not,
//! 2 when any could not be checked, as `imgate verify`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use imgate_core::attestation::cel::Now;
use imgate_core::attestation::{
    self, statement, Requirement, Unmet, VerifiedStatement, Wanted, WantedType,
};
use imgate_core::policy::Policy;
use imgate_core::registry::RegistryClient;
use imgate_core::ImageRef;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::common::{parse_images, OutputFormat, RegistryArgs};
use super::identity::SignerArgs;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The predicate type: a URI, or cosign's short names (slsaprovenance,
    /// slsaprovenance02, slsaprovenance1, spdx, spdxjson, cyclonedx, link,
    /// vuln, openvex, custom). Required unless --policy (then it narrows the
    /// rule's attestations to this type).
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "policy")]
    pub predicate_type: Option<String>,
    #[command(flatten)]
    pub signers: SignerArgs,
    /// Check the attestations (signers and CEL conditions) of the policy
    /// rule that matches each image, instead of --key.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Images to check (tags are resolved to digests; the digest is what is checked).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What one image is checked against: the rule's name (under --policy),
/// what to collect and what to evaluate.
struct Terms {
    rule: Option<String>,
    wanted: Wanted,
    requirements: Vec<Requirement>,
}

/// What happened to one image (the JSON output's element).
#[derive(Serialize)]
struct Checked {
    image: String,
    digest: Option<String>,
    rule: Option<String>,
    verified: bool,
    statements: Vec<StatementOut>,
    unmet: Vec<Value>,
    #[serde(skip)]
    messages: Vec<String>,
}

/// A statement that satisfied a requirement, for output. The statement is
/// printed as it was signed, not re-encoded (an SBOM is megabytes).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatementOut {
    attestation: String,
    predicate_type: String,
    source: attestation::Source,
    from: String,
    about: imgate_core::Digest,
    signer: attestation::Signer,
    signed_by: String,
    statement: Box<RawValue>,
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let predicate_type = args
        .predicate_type
        .as_deref()
        .map(statement::predicate_type)
        .transpose()
        .map_err(|err| anyhow::anyhow!("--type: {err}"))?;
    let policy = match &args.policy {
        Some(path) => {
            if args.signers.identity.given() {
                anyhow::bail!(
                    "--policy checks with the policy's signers; drop --certificate-identity"
                );
            }
            Some(Policy::load(path)?)
        }
        None => None,
    };
    let flag_terms = match &policy {
        Some(_) => None,
        None => Some(flag_terms(
            &args,
            predicate_type.clone().unwrap_or_default(),
        )?),
    };
    let images = parse_images(&args.images, "check")?;
    let mut config = args
        .registry
        .config(images.iter().map(|i| i.registry.as_str()))?;
    if let Some(policy) = &policy {
        config = policy.client_config(config);
    }
    let client = RegistryClient::new(config).context("configuring the registry client")?;

    let now = Now::current();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for image in &images {
        let terms = match (&policy, &flag_terms) {
            (Some(policy), _) => match policy_terms(policy, image, predicate_type.as_deref()) {
                Ok(terms) => terms,
                Err(message) => {
                    results.push(Checked {
                        image: image.to_string(),
                        digest: None,
                        rule: None,
                        verified: false,
                        statements: Vec::new(),
                        unmet: vec![json!({"kind": "policy", "message": message})],
                        messages: vec![message],
                    });
                    continue;
                }
            },
            (None, Some(terms)) => Terms {
                rule: None,
                wanted: terms.wanted.clone(),
                requirements: terms.requirements.clone(),
            },
            (None, None) => continue,
        };
        match check(&client, image, &terms, &now).await {
            Ok(checked) => results.push(checked),
            Err(err) => errors.push(err.context(format!("cannot check {image}"))),
        }
    }
    match args.output {
        OutputFormat::Text => print_text(&results)?,
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&results)?),
    }
    let denied = results.iter().any(|r| !r.verified);
    if let Some(last) = errors.pop() {
        for error in errors {
            eprintln!("imgate: {error:#}");
        }
        return Err(last);
    }
    Ok(if denied { Outcome::No } else { Outcome::Ok })
}

/// The terms the flags describe: one attestation of `predicate_type`.
fn flag_terms(args: &Args, predicate_type: String) -> anyhow::Result<Terms> {
    let signers = Arc::new(args.signers.requirements()?);
    let name = args.predicate_type.clone().unwrap_or_default();
    Ok(Terms {
        rule: None,
        wanted: Wanted {
            attestations: vec![WantedType {
                predicate_type: predicate_type.clone(),
                signers,
            }],
            limits: attestation::Limits::default(),
        },
        requirements: vec![Requirement {
            name,
            predicate_type,
            checks: Vec::new(),
            every: false,
            stores: Vec::new(),
        }],
    })
}

/// The terms of the rule matching `image`; an error message when none can apply.
fn policy_terms(policy: &Policy, image: &ImageRef, only: Option<&str>) -> Result<Terms, String> {
    if !policy.is_trusted(image) {
        return Err(format!("{image} is not from a trusted registry"));
    }
    let Some(rule) = policy.rule_for(image) else {
        return Err(format!("no rule of the policy matches {image}"));
    };
    let all = rule.attestations();
    let mut wanted = Wanted {
        attestations: Vec::new(),
        limits: all.wanted().limits,
    };
    let mut requirements = Vec::new();
    for (w, r) in all.wanted().attestations.iter().zip(all.requirements()) {
        if only.is_none_or(|t| t == r.predicate_type) {
            wanted.attestations.push(w.clone());
            requirements.push(r.clone());
        }
    }
    if requirements.is_empty() {
        return Err(format!(
            "rule {:?} requires no attestation{}",
            rule.name,
            only.map(|t| format!(" of type {t}")).unwrap_or_default()
        ));
    }
    Ok(Terms {
        rule: Some(rule.name.clone()),
        wanted,
        requirements,
    })
}

async fn check(
    client: &RegistryClient,
    image: &ImageRef,
    terms: &Terms,
    now: &Now,
) -> anyhow::Result<Checked> {
    let pinned = match image.digest {
        Some(_) => image.clone(),
        None => client.resolve(image).await?.pinned,
    };
    let evidence = attestation::collect(client, &pinned, &terms.wanted).await?;
    let budget = terms.wanted.limits.condition_budget;
    let unmet = attestation::evaluate(&terms.requirements, &evidence, now, budget);
    let statements = if unmet.is_empty() {
        attestation::satisfying(&terms.requirements, &evidence, now, budget)
            .into_iter()
            .map(|(i, s)| statement_out(&terms.requirements[i], s))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    Ok(Checked {
        image: pinned.to_string(),
        digest: Some(evidence.digest.to_string()),
        rule: terms.rule.clone(),
        verified: unmet.is_empty(),
        statements,
        messages: unmet.iter().map(ToString::to_string).collect(),
        unmet: unmet.iter().map(unmet_json).collect(),
    })
}

fn statement_out(requirement: &Requirement, s: &VerifiedStatement) -> anyhow::Result<StatementOut> {
    let text = std::str::from_utf8(&s.payload).context("the statement is not UTF-8")?;
    Ok(StatementOut {
        attestation: requirement.name.clone(),
        predicate_type: s.predicate_type.clone(),
        source: s.source.clone(),
        from: s.source.to_string(),
        about: s.about.clone(),
        signer: s.signer.clone(),
        signed_by: s.signer.describe(),
        statement: RawValue::from_string(text.to_string()).context("the statement is not JSON")?,
    })
}

fn unmet_json(u: &Unmet) -> Value {
    let mut v = serde_json::to_value(u).unwrap_or_default();
    v["message"] = json!(u.to_string());
    v
}

fn print_text(results: &[Checked]) -> anyhow::Result<()> {
    for r in results {
        let rule = r
            .rule
            .as_deref()
            .map(|n| format!(" (rule {n})"))
            .unwrap_or_default();
        if r.verified {
            outln!("verified {}{rule}:", r.image);
            for s in &r.statements {
                outln!(
                    "  {} {} from {}, signed by {}",
                    s.attestation,
                    s.predicate_type,
                    s.from,
                    s.signed_by
                );
                outln!("  {}", s.statement.get());
            }
        } else {
            outln!("denied {}{rule}:", r.image);
            for m in &r.messages {
                outln!("  - {m}");
            }
        }
    }
    Ok(())
}
