//! `imgate policy import [-o FILE] [--report text|json] FILE...`: Kyverno
//! policies into one imgate policy and a report of what changes (the work
//! is `imgate_core::kyverno`). Exit 0 when everything translated as it was,
//! 1 when something was flagged or refused (the policy is still written,
//! and says so in comments), 2 when the input cannot be read or imported.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context;
use imgate_core::kyverno::{self, Source, MAX_INPUT_BYTES};

use super::common::OutputFormat;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kyverno policy files: YAML with one or many documents, or a `List`
    /// such as `kubectl get clusterpolicies -o yaml` prints; `-` reads
    /// standard input.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<String>,
    /// Write the imgate policy to FILE (and the report to standard output);
    /// without it the policy goes to standard output and the report to
    /// standard error.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub report: OutputFormat,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if args.files.iter().filter(|f| *f == "-").count() > 1 {
        anyhow::bail!("standard input (-) can be read once");
    }
    let mut sources = Vec::new();
    for file in &args.files {
        sources.push(read(file)?);
    }
    let import = kyverno::import(&sources)?;
    let report = match args.report {
        OutputFormat::Text => import.report.to_text(),
        OutputFormat::Json => {
            let json = serde_json::json!({
                "output": args.output.as_ref().map(|p| p.display().to_string()),
                "clean": import.report.is_clean(),
                "summary": import.report.summary,
                "findings": import.report.findings,
            });
            serde_json::to_string_pretty(&json).context("printing the report")? + "\n"
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, &import.policy_yaml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            out!("{report}");
        }
        None => {
            out!("{}", import.policy_yaml);
            eprint!("{report}");
        }
    }
    Ok(if import.report.is_clean() {
        Outcome::Ok
    } else {
        Outcome::No
    })
}

/// One input, at most [`MAX_INPUT_BYTES`] of it read.
fn read(file: &str) -> anyhow::Result<Source> {
    let (name, reader): (String, Box<dyn std::io::Read>) = if file == "-" {
        ("<stdin>".into(), Box::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("cannot read {file}"))?;
        (file.to_string(), Box::new(f))
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() > MAX_INPUT_BYTES {
        anyhow::bail!("{name}: more than the {MAX_INPUT_BYTES} bytes an import reads");
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{name}: not UTF-8 text"))?;
    Ok(Source { name, text })
}
