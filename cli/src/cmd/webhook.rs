//! `imgate webhook`: run the admission webhook server, and
//! `imgate webhook certs`: generate its CA and serving certificate.
//!
//! Every server flag has an `IMGATE_*` environment twin, so the Deployment
//! can configure it either way; the work is done by
//! `imgate_webhook::server` and `imgate_webhook::certs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use imgate_core::policy::HumanDuration;
use imgate_webhook::admission::DEFAULT_DEADLINE;
use imgate_webhook::certs::{self, CertOptions};
use imgate_webhook::server::{self, Settings};

use super::Outcome;

/// Run the admission webhook (HTTPS), or generate its certificates.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,

    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Generate a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Policy file (watched: a valid new version replaces the old one).
    #[arg(long, value_name = "FILE", env = "IMGATE_POLICY", required = true)]
    policy: Option<PathBuf>,
    /// Serving certificate chain, PEM (watched: reloaded on rotation).
    #[arg(long, value_name = "FILE", env = "IMGATE_TLS_CERT", required = true)]
    tls_cert: Option<PathBuf>,
    /// Serving private key, PEM (watched with the certificate).
    #[arg(long, value_name = "FILE", env = "IMGATE_TLS_KEY", required = true)]
    tls_key: Option<PathBuf>,
    /// HTTPS address for POST /mutate and /validate.
    #[arg(long, value_name = "ADDR", env = "IMGATE_LISTEN", default_value_t = server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, value_name = "ADDR", env = "IMGATE_METRICS_LISTEN", default_value_t = server::DEFAULT_METRICS_LISTEN)]
    metrics_listen: SocketAddr,
    /// Answer every review within this time (keep it under the webhook's
    /// timeoutSeconds); a slow registry then gets the policy's onRegistryError.
    #[arg(long, value_name = "DURATION", env = "IMGATE_DEADLINE", default_value_t = DEFAULT_DEADLINE.into())]
    deadline: HumanDuration,
    /// Docker config file with static registry credentials (e.g. a mounted Secret).
    #[arg(long, value_name = "FILE", env = "IMGATE_DOCKER_CONFIG")]
    docker_config: Option<PathBuf>,
    /// Read pods' and their service accounts' imagePullSecrets through the
    /// Kubernetes API (needs RBAC to get secrets and serviceaccounts).
    #[arg(long, env = "IMGATE_KUBE_PULL_SECRETS")]
    kube_pull_secrets: bool,
    /// How often the policy and certificate files are checked for changes (SIGHUP: now).
    #[arg(long, value_name = "DURATION", env = "IMGATE_RELOAD_INTERVAL", default_value_t = server::DEFAULT_RELOAD_INTERVAL.into())]
    reload_interval: HumanDuration,
    /// After SIGTERM, how long in-flight reviews may take to finish.
    #[arg(long, value_name = "DURATION", env = "IMGATE_SHUTDOWN_GRACE", default_value_t = server::DEFAULT_SHUTDOWN_GRACE.into())]
    shutdown_grace: HumanDuration,
}

/// Output layout of `imgate webhook certs`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CertFormat {
    /// ca.crt, tls.crt, tls.key.
    Files,
    /// A kustomize Component: TLS Secret and the caBundle patch.
    Kustomize,
}

#[derive(Debug, clap::Args)]
struct CertsArgs {
    /// The webhook Service name.
    #[arg(long, default_value = "imgate")]
    service: String,
    /// The webhook's namespace.
    #[arg(long, default_value = "imgate-system")]
    namespace: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out_dir: PathBuf,
    /// Files, or kustomize manifests.
    #[arg(long, value_enum, default_value_t = CertFormat::Files)]
    format: CertFormat,
    /// Overwrite existing files (certificate rotation).
    #[arg(long)]
    force: bool,
}

pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        Some(Sub::Certs(certs)) => run_certs(certs),
        None => serve(args.serve).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<Outcome> {
    let (Some(policy), Some(tls_cert), Some(tls_key)) = (args.policy, args.tls_cert, args.tls_key)
    else {
        anyhow::bail!("--policy, --tls-cert and --tls-key are required");
    };
    let deadline = args.deadline.get();
    if deadline.is_zero() || deadline >= server::MAX_DEADLINE {
        anyhow::bail!(
            "--deadline {} is not between 0 and {}, the API server's longest webhook timeout",
            args.deadline,
            HumanDuration(server::MAX_DEADLINE)
        );
    }
    let settings = Settings {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        deadline,
        docker_config: args.docker_config,
        kube_pull_secrets: args.kube_pull_secrets,
        reload_interval: args.reload_interval.get(),
        grace: args.shutdown_grace.get(),
        ..Settings::new(policy, tls_cert, tls_key)
    };
    server::run(settings, server::shutdown_signal()).await?;
    Ok(Outcome::Ok)
}

fn run_certs(args: CertsArgs) -> anyhow::Result<Outcome> {
    let opts = CertOptions {
        service: args.service,
        namespace: args.namespace,
        days: args.days,
    };
    let generated = certs::generate(&opts)?;
    let written = match args.format {
        CertFormat::Files => certs::write_files(&generated, &args.out_dir, args.force),
        CertFormat::Kustomize => {
            certs::write_kustomize(&generated, &opts, &args.out_dir, args.force)
        }
    }
    .with_context(|| format!("writing certificates into {}", args.out_dir.display()))?;
    for path in &written {
        println!("{}", path.display());
    }
    eprintln!(
        "imgate: CA and serving certificate for {} valid {} days",
        generated.dns_names.join(", "),
        opts.days
    );
    Ok(Outcome::Ok)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let files = [
            "--policy",
            "p.yaml",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ];
        Cli::try_parse_from(["webhook"].iter().chain(&files).chain(args)).map(|cli| cli.serve)
    }

    #[test]
    fn defaults_come_from_the_library() {
        let args = parse(&[]).unwrap();
        let settings = Settings::new("p".into(), "c".into(), "k".into());
        assert_eq!(args.listen, settings.listen);
        assert_eq!(args.metrics_listen, settings.metrics_listen);
        assert_eq!(args.deadline.get(), settings.deadline);
        assert_eq!(args.reload_interval.get(), settings.reload_interval);
        assert_eq!(args.shutdown_grace.get(), settings.grace);
    }

    #[test]
    fn time_flags_share_the_policy_grammar() {
        let args = parse(&[
            "--deadline",
            "1500ms",
            "--reload-interval",
            "1h",
            "--shutdown-grace",
            "45",
        ])
        .unwrap();
        assert_eq!(args.deadline.get(), Duration::from_millis(1500));
        assert_eq!(args.reload_interval.get(), Duration::from_secs(3600));
        assert_eq!(args.shutdown_grace.get(), Duration::from_secs(45));
        for bad in ["x", "1.5s", "10d", "8 s"] {
            let err = parse(&["--deadline", bad]).unwrap_err().to_string();
            assert!(err.contains("--deadline"), "{bad}: {err}");
        }
    }
}
