//! The `imgate` binary: parse, init telemetry, run one command, map the
//! outcome to an exit code (0 ok, 1 verification or policy said no, 2 usage
//! or runtime error). Commands live in `cmd/`.

// Output goes through `out!`/`outln!` (out.rs), which turn a closed pipe into
// an error rather than a panic.
#![deny(clippy::print_stdout)]

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

// First: its macros are in scope for the commands below.
#[macro_use]
mod out;

mod cmd;
mod jsonlog;
mod telemetry;

// Every command, the webhook above all, allocates in small, short-lived
// pieces; mimalloc serves those with less CPU than the C library's malloc
// (about 15% of the webhook's CPU per cached review). See cli/Cargo.toml
// for the one target without it.
#[cfg(not(all(target_arch = "aarch64", target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sign, pin and admit container images. cosign-compatible.
///
/// Exit codes: 0 ok, 1 an image or object was not admitted (or --check found
/// unpinned images), 2 usage or runtime error.
#[derive(Debug, Parser)]
#[command(
    name = "imgate",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log format for diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = telemetry::LogFormat::Text, env = "IMGATE_LOG_FORMAT")]
    log_format: telemetry::LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Resolve image references to digest-pinned references.
    Resolve(cmd::resolve::Args),
    /// Rewrite image references in Kubernetes YAML and Dockerfiles to digests.
    Pin(cmd::pin::Args),
    /// Generate and inspect cosign-compatible key pairs.
    Keys(cmd::keys::Args),
    /// Sign images by digest (cosign-compatible signatures).
    Sign(cmd::sign::Args),
    /// Verify images' signatures (--key), or whether the cluster would admit them (--policy).
    Verify(cmd::verify::Args),
    /// Attach a signed in-toto attestation to images (cosign-compatible).
    Attest(cmd::attest::Args),
    /// Verify images' in-toto attestations (--key, keyless, or a --policy rule's conditions).
    VerifyAttestation(cmd::verify_attestation::Args),
    /// Verify a Sigstore bundle for a file or digest (keyless or key).
    VerifyBundle(cmd::verify_bundle::Args),
    /// Refresh the Sigstore trusted root through TUF.
    TrustRoot(cmd::trust_root::Args),
    /// Check a policy file, or import Kyverno policies into one.
    Policy(cmd::policy::Args),
    /// Run the admission policy offline over Kubernetes manifests.
    Admit(cmd::admit::Args),
    /// Run the admission webhook server, or generate its certificates.
    Webhook(cmd::webhook::Args),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it writes out queued log lines.
    let _logs = telemetry::init(cli.log_format, matches!(cli.command, Command::Webhook(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("imgate: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Resolve(args) => cmd::resolve::run(args).await,
            Command::Pin(args) => cmd::pin::run(args).await,
            Command::Keys(args) => cmd::keys::run(args).await,
            Command::Sign(args) => cmd::sign::run(args).await,
            Command::Verify(args) => cmd::verify::run(args).await,
            Command::Attest(args) => cmd::attest::run(args).await,
            Command::VerifyAttestation(args) => cmd::verify_attestation::run(args).await,
            Command::VerifyBundle(args) => cmd::verify_bundle::run(args).await,
            Command::TrustRoot(args) => cmd::trust_root::run(args).await,
            Command::Policy(args) => cmd::policy::run(args).await,
            Command::Admit(args) => cmd::admit::run(args).await,
            Command::Webhook(args) => cmd::webhook::run(args).await,
            Command::Completions { shell } => {
                // Into memory first: clap_complete panics on a failed write.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "imgate", &mut script);
                out::bytes(&script)?;
                Ok(cmd::Outcome::Ok)
            }
        }
    });
    match outcome {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("imgate: {err:#}");
            ExitCode::from(2)
        }
    }
}
