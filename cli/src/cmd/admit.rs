//! `imgate admit --policy FILE -f MANIFEST...`: the webhook's admission
//! engine, run offline over Kubernetes manifests (multi-document YAML, `List`
//! kinds, `-` for standard input). Prints per object whether it would be
//! admitted, why not, and the patch the webhook would apply. Exit 1 when any
//! object would be denied.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use imgate_core::policy::{HumanDuration, Policy};
use imgate_core::workload::{is_list_kind, MAX_LIST_DEPTH};
use imgate_webhook::admission::{Admission, Endpoint, ObjectDecision, DEFAULT_DEADLINE};
use serde::Deserialize as _;
use serde_json::Value;

use super::common::{OutputFormat, RegistryArgs};
use super::Outcome;

/// A zero deadline would deny everything without asking a registry.
const MIN_DEADLINE: Duration = Duration::from_millis(100);

/// Which webhook endpoint to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndpointArg {
    /// Resolve, verify and pin (what `/mutate` answers).
    Mutate,
    /// Check the object as it stands (what `/validate` answers).
    Validate,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (the webhook's).
    #[arg(long, value_name = "FILE", env = "IMGATE_POLICY")]
    pub policy: PathBuf,
    /// Manifest files (multi-document YAML or JSON; `-` reads standard input). Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "MANIFEST",
        required = true
    )]
    pub files: Vec<String>,
    /// Which endpoint's logic to run.
    #[arg(long, value_enum, default_value_t = EndpointArg::Mutate)]
    pub endpoint: EndpointArg,
    /// Namespace for objects that do not name one.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Budget for one object's registry work (`8s`, `500ms`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_DEADLINE.into())]
    pub deadline: HumanDuration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// One object read from a manifest.
struct Manifest {
    /// File name and document number, for messages.
    origin: String,
    object: Value,
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    if args.registry.password_stdin && args.files.iter().any(|f| f == "-") {
        anyhow::bail!("-f - and --password-stdin both read standard input; use one");
    }
    let policy = Policy::load(&args.policy)?;
    for warning in policy.warnings() {
        tracing::warn!("{warning}");
    }
    let mut manifests = Vec::new();
    for file in &args.files {
        manifests.extend(read_manifests(file)?);
    }
    // `--username` applies to the registries the policy trusts: those are
    // the only ones the engine will ever contact.
    let hosts: Vec<String> = policy
        .trusted_registries
        .iter()
        .map(|p| p.registry().to_string())
        .collect();
    let engine = args.registry.policy_engine(
        policy,
        hosts.iter().map(String::as_str),
        args.deadline.get().max(MIN_DEADLINE),
    )?;
    let endpoint = match args.endpoint {
        EndpointArg::Mutate => Endpoint::Mutate,
        EndpointArg::Validate => Endpoint::Validate,
    };

    let mut results = Vec::new();
    for manifest in &manifests {
        let admission = Admission::manifest(&manifest.object, &args.namespace, endpoint);
        let decision = engine
            .decide(&admission)
            .await
            .unwrap_or_else(ObjectDecision::invalid);
        results.push((manifest, decision));
    }
    let denied = results.iter().filter(|(_, d)| !d.allowed).count();
    match args.output {
        OutputFormat::Text => print_text(&results)?,
        OutputFormat::Json => print_json(&results, &args.namespace)?,
    }
    if denied > 0 {
        eprintln!(
            "imgate: {denied} of {} object{} would be denied",
            results.len(),
            if results.len() == 1 { "" } else { "s" }
        );
        Ok(Outcome::No)
    } else {
        Ok(Outcome::Ok)
    }
}

fn identity(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
}

fn print_text(results: &[(&Manifest, ObjectDecision)]) -> anyhow::Result<()> {
    for (manifest, decision) in results {
        let verdict = if decision.allowed {
            "ALLOWED"
        } else {
            "DENIED"
        };
        match &decision.skipped {
            Some(why) => outln!(
                "{verdict} {} ({}; {why})",
                identity(&manifest.object),
                manifest.origin
            ),
            None => outln!(
                "{verdict} {} ({})",
                identity(&manifest.object),
                manifest.origin
            ),
        }
        for reason in &decision.reasons {
            outln!("  reason: {reason}");
        }
        for warning in &decision.warnings {
            outln!("  warning: {warning}");
        }
        for op in &decision.patch {
            let value = op
                .value
                .as_str()
                .map_or_else(|| op.value.to_string(), str::to_string);
            outln!("  patch: {} {} {value}", op.op, op.path);
        }
    }
    Ok(())
}

fn print_json(results: &[(&Manifest, ObjectDecision)], namespace: &str) -> anyhow::Result<()> {
    let out: Vec<Value> = results
        .iter()
        .map(|(manifest, decision)| {
            let object = &manifest.object;
            serde_json::json!({
                "source": manifest.origin,
                "kind": object.get("kind"),
                "name": object.pointer("/metadata/name"),
                "namespace": object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(namespace),
                "allowed": decision.allowed,
                "reasons": decision.reasons,
                "warnings": decision.warnings,
                "patch": decision.patch,
                "images": decision.images,
                "skipped": decision.skipped,
            })
        })
        .collect();
    outln!(
        "{}",
        serde_json::to_string_pretty(&out).context("printing the result")?
    );
    Ok(())
}

/// Every object in a file: each YAML document, and each item of a `List`.
fn read_manifests(file: &str) -> anyhow::Result<Vec<Manifest>> {
    let (name, text) = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading manifests from standard input")?;
        ("<stdin>".to_string(), text)
    } else {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        (file.to_string(), text)
    };
    let mut manifests = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let origin = format!("{name} document {}", index + 1);
        let value =
            Value::deserialize(document).with_context(|| format!("{origin} is not valid YAML"))?;
        push_objects(&mut manifests, &origin, value, 0)?;
    }
    Ok(manifests)
}

fn push_objects(
    out: &mut Vec<Manifest>,
    origin: &str,
    value: Value,
    depth: usize,
) -> anyhow::Result<()> {
    match value {
        Value::Null => Ok(()),
        Value::Object(ref map) => {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
            if is_list_kind(kind) {
                if let Some(items) = map.get("items").and_then(Value::as_array) {
                    if depth >= MAX_LIST_DEPTH {
                        anyhow::bail!("{origin} nests Lists more than {MAX_LIST_DEPTH} deep");
                    }
                    for (i, item) in items.iter().enumerate() {
                        let origin = format!("{origin} item {}", i + 1);
                        push_objects(out, &origin, item.clone(), depth + 1)?;
                    }
                    return Ok(());
                }
            }
            if kind.is_empty() {
                anyhow::bail!("{origin} has no kind: not a Kubernetes object");
            }
            out.push(Manifest {
                origin: origin.to_string(),
                object: value,
            });
            Ok(())
        }
        _ => anyhow::bail!("{origin} is not a Kubernetes object (a mapping with a kind)"),
    }
}
