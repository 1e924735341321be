//! `imgate policy check FILE`: parse and validate a policy the way the
//! webhook does at start-up (keys and CA files read), and say what is wrong
//! by field. Exit 0 when it loads, 2 when it does not. `imgate policy
//! import` lives in `policy_import`.

use std::path::PathBuf;

use anyhow::Context;
use imgate_core::policy::{Mode, Policy};

use super::common::OutputFormat;
use super::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check a policy file: syntax, unknown fields, contradictions, keys.
    Check {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Import Kyverno policies into one imgate policy, with a report of
    /// every pattern whose meaning changes and what was not carried over.
    ///
    /// Reads kyverno.io ClusterPolicy and Policy (validate rules on images,
    /// verifyImages) and policies.kyverno.io ValidatingPolicy and
    /// ImageValidatingPolicy whose CEL has a recognised shape. The written
    /// policy is never more permissive than what was read: what cannot be
    /// carried over is refused by field path and the images it covered are
    /// denied. Exit 0 when everything translated as it was, 1 when something
    /// was flagged or refused (the policy is still written and says so in
    /// comments), 2 when the input cannot be read or imported.
    Import(super::policy_import::Args),
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        Command::Check { file, output } => check(&file, output),
        Command::Import(args) => super::policy_import::run(args),
    }
}

fn check(file: &std::path::Path, output: OutputFormat) -> anyhow::Result<Outcome> {
    let policy = Policy::load(file)?;
    let mode = match policy.mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    };
    match output {
        OutputFormat::Text => {
            for warning in policy.warnings() {
                eprintln!("warning: {warning}");
            }
            let rules = policy.rules.len();
            outln!(
                "policy OK: {rules} rule{}, mode {mode}",
                if rules == 1 { "" } else { "s" }
            );
        }
        OutputFormat::Json => {
            let report = serde_json::json!({
                "ok": true,
                "file": file.display().to_string(),
                "mode": mode,
                "rules": policy.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                "warnings": policy.warnings(),
            });
            outln!(
                "{}",
                serde_json::to_string_pretty(&report).context("printing the report")?
            );
        }
    }
    Ok(Outcome::Ok)
}
