//! `imgate webhook`: run the admission webhook server, and
//! `imgate webhook certs`: generate its CA and serving certificate.
//!
//! Every server flag has an `IMGATE_*` environment twin, so the Deployment
//! can configure it either way; the work is done by
//! `imgate_webhook::server` and `imgate_webhook::certs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
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
    #[arg(
        long,
        value_name = "ADDR",
        env = "IMGATE_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    listen: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(
        long,
        value_name = "ADDR",
        env = "IMGATE_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    metrics_listen: SocketAddr,
    /// Answer every review within this time (keep it under the webhook's
    /// timeoutSeconds); a slow registry then gets the policy's onRegistryError.
    #[arg(long, value_name = "DURATION", env = "IMGATE_DEADLINE", default_value = "8s", value_parser = parse_duration)]
    deadline: Duration,
    /// Docker config file with static registry credentials (e.g. a mounted Secret).
    #[arg(long, value_name = "FILE", env = "IMGATE_DOCKER_CONFIG")]
    docker_config: Option<PathBuf>,
    /// Read pods' and their service accounts' imagePullSecrets through the
    /// Kubernetes API (needs RBAC to get secrets and serviceaccounts).
    #[arg(long, env = "IMGATE_KUBE_PULL_SECRETS")]
    kube_pull_secrets: bool,
    /// How often the policy and certificate files are checked for changes (SIGHUP: now).
    #[arg(long, value_name = "DURATION", env = "IMGATE_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    reload_interval: Duration,
    /// After SIGTERM, how long in-flight reviews may take to finish.
    #[arg(long, value_name = "DURATION", env = "IMGATE_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    shutdown_grace: Duration,
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

/// `8s`, `500ms`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 8s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 24.0 * 3600.0 {
        return Err(format!("{text:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
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
    if args.deadline >= Duration::from_secs(30) {
        anyhow::bail!(
            "--deadline {:?} is not below 30s, the API server's longest webhook timeout",
            args.deadline
        );
    }
    let settings = Settings {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        deadline: args.deadline,
        docker_config: args.docker_config,
        kube_pull_secrets: args.kube_pull_secrets,
        reload_interval: args.reload_interval,
        grace: args.shutdown_grace,
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8s").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
