//! `imgate webhook`: run the admission webhook server, and
//! `imgate webhook certs`: generate its CA and serving certificate.
//!
//! Every server flag has an `IMGATE_*` environment twin, so the Deployment
//! can configure it either way; the work is done by
//! `imgate_webhook::server` and `imgate_webhook::server::certs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use imgate_core::policy::HumanDuration;
use imgate_webhook::admission::DEFAULT_DEADLINE;
use imgate_webhook::server::certs::{self, CertOptions};
use imgate_webhook::server::limits::{self, PortLimits};
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
    /// Require every client of the admission port to present a certificate
    /// signed by this CA (PEM; watched: reloaded on rotation). Give the API
    /// server that certificate in its AdmissionConfiguration.
    #[arg(long, value_name = "FILE", env = "IMGATE_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Read pods' and their service accounts' imagePullSecrets through the
    /// Kubernetes API (needs RBAC to get secrets and serviceaccounts, and
    /// --client-ca).
    #[arg(long, env = "IMGATE_KUBE_PULL_SECRETS")]
    kube_pull_secrets: bool,
    /// With --kube-pull-secrets and no --client-ca: read pull secrets anyway,
    /// so any client that reaches the admission port can make imgate use any
    /// namespace's pull secrets (for API servers that cannot present a
    /// client certificate).
    #[arg(long, env = "IMGATE_ALLOW_UNAUTHENTICATED_PULL_SECRETS")]
    allow_unauthenticated_pull_secrets: bool,
    /// How often the policy and certificate files are checked for changes (SIGHUP: now).
    #[arg(long, value_name = "DURATION", env = "IMGATE_RELOAD_INTERVAL", default_value_t = server::DEFAULT_RELOAD_INTERVAL.into())]
    reload_interval: HumanDuration,
    /// After SIGTERM, how long in-flight reviews may take to finish.
    #[arg(long, value_name = "DURATION", env = "IMGATE_SHUTDOWN_GRACE", default_value_t = server::DEFAULT_SHUTDOWN_GRACE.into())]
    shutdown_grace: HumanDuration,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Bounds on what clients of the admission port can hold (see
/// docs/security-model.md).
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Largest admission request body, in bytes (413 above).
    #[arg(long, value_name = "BYTES", env = "IMGATE_MAX_BODY_BYTES", default_value_t = server::DEFAULT_BODY_LIMIT)]
    max_body_bytes: usize,
    /// Request-body bytes buffered at once over all requests; past the two
    /// quarters reserved for each body's first 64 KiB, large bodies get 503.
    #[arg(long, value_name = "BYTES", env = "IMGATE_MAX_BUFFERED_BODY_BYTES", default_value_t = limits::DEFAULT_MAX_BUFFERED_BYTES)]
    max_buffered_body_bytes: usize,
    /// Request-body bytes buffered at once for one client address.
    #[arg(long, value_name = "BYTES", env = "IMGATE_MAX_BUFFERED_BODY_BYTES_PER_SOURCE", default_value_t = limits::DEFAULT_MAX_BUFFERED_BYTES_PER_SOURCE)]
    max_buffered_body_bytes_per_source: usize,
    /// Open admission connections (lowered to fit the open-files limit); at
    /// the bound a new one displaces only a connection that never completed
    /// a request, else waits.
    #[arg(long, value_name = "N", env = "IMGATE_MAX_CONNECTIONS", default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Open admission connections from one client address.
    #[arg(long, value_name = "N", env = "IMGATE_MAX_CONNECTIONS_PER_SOURCE", default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_SOURCE)]
    max_connections_per_source: usize,
    /// TLS handshakes in progress from one client address.
    #[arg(long, value_name = "N", env = "IMGATE_MAX_HANDSHAKES_PER_SOURCE", default_value_t = limits::DEFAULT_MAX_HANDSHAKES_PER_SOURCE)]
    max_handshakes_per_source: usize,
    /// Time for a TLS handshake.
    #[arg(long, value_name = "DURATION", env = "IMGATE_TLS_HANDSHAKE_TIMEOUT", default_value_t = limits::DEFAULT_TLS_HANDSHAKE_TIMEOUT.into())]
    tls_handshake_timeout: HumanDuration,
    /// Time for a request's headers to arrive (HTTP/1).
    #[arg(long, value_name = "DURATION", env = "IMGATE_HEADER_READ_TIMEOUT", default_value_t = limits::DEFAULT_HEADER_READ_TIMEOUT.into())]
    header_read_timeout: HumanDuration,
    /// Time for a whole request body to arrive (408 after).
    #[arg(long, value_name = "DURATION", env = "IMGATE_BODY_TIMEOUT", default_value_t = limits::DEFAULT_BODY_TIMEOUT.into())]
    body_timeout: HumanDuration,
    /// Bytes per second a request body must keep arriving at, measured over
    /// each second (408 when a second brings less).
    #[arg(long, value_name = "BYTES", env = "IMGATE_MIN_BODY_RATE", default_value_t = limits::DEFAULT_MIN_BODY_RATE)]
    min_body_rate: usize,
    /// Time a connection may stay open with no request in flight.
    #[arg(long, value_name = "DURATION", env = "IMGATE_IDLE_TIMEOUT", default_value_t = limits::DEFAULT_IDLE_TIMEOUT.into())]
    idle_timeout: HumanDuration,
    /// HTTP/2 keep-alive ping interval (a peer silent 10s after a ping is dropped).
    #[arg(long, value_name = "DURATION", env = "IMGATE_HTTP2_KEEPALIVE", default_value_t = limits::DEFAULT_HTTP2_KEEPALIVE.into())]
    http2_keepalive: HumanDuration,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, value_name = "N", env = "IMGATE_HTTP2_MAX_STREAMS", default_value_t = limits::DEFAULT_HTTP2_MAX_STREAMS)]
    http2_max_streams: u32,
}

impl LimitArgs {
    fn limits(&self) -> anyhow::Result<PortLimits> {
        let positive = [
            ("--tls-handshake-timeout", self.tls_handshake_timeout),
            ("--header-read-timeout", self.header_read_timeout),
            ("--body-timeout", self.body_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--http2-keepalive", self.http2_keepalive),
        ];
        for (flag, value) in positive {
            if value.get().is_zero() {
                anyhow::bail!("{flag} must be above 0");
            }
        }
        let counts = [
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-buffered-body-bytes", self.max_buffered_body_bytes),
            (
                "--max-buffered-body-bytes-per-source",
                self.max_buffered_body_bytes_per_source,
            ),
            ("--min-body-rate", self.min_body_rate),
            ("--max-connections", self.max_connections),
            (
                "--max-connections-per-source",
                self.max_connections_per_source,
            ),
            (
                "--max-handshakes-per-source",
                self.max_handshakes_per_source,
            ),
            ("--http2-max-streams", self.http2_max_streams as usize),
        ];
        for (flag, value) in counts {
            if value == 0 {
                anyhow::bail!("{flag} must be above 0");
            }
        }
        // Half the budget is for bytes beyond each body's first 64 KiB.
        if self.max_buffered_body_bytes / 2 < self.max_body_bytes {
            anyhow::bail!(
                "--max-buffered-body-bytes {} is below twice --max-body-bytes {}: no body of the largest size could be read",
                self.max_buffered_body_bytes,
                self.max_body_bytes
            );
        }
        if self.max_buffered_body_bytes_per_source < self.max_body_bytes {
            anyhow::bail!(
                "--max-buffered-body-bytes-per-source {} is below --max-body-bytes {}: no body of the largest size could be read",
                self.max_buffered_body_bytes_per_source,
                self.max_body_bytes
            );
        }
        Ok(PortLimits {
            tls_handshake_timeout: self.tls_handshake_timeout.get(),
            header_read_timeout: self.header_read_timeout.get(),
            body_timeout: self.body_timeout.get(),
            min_body_rate: self.min_body_rate,
            idle_timeout: self.idle_timeout.get(),
            http2_keepalive: self.http2_keepalive.get(),
            http2_max_streams: self.http2_max_streams,
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            max_handshakes_per_source: self.max_handshakes_per_source,
            max_buffered_bytes: self.max_buffered_body_bytes,
            max_buffered_bytes_per_source: self.max_buffered_body_bytes_per_source,
        })
    }
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
        client_ca: args.client_ca,
        allow_unauthenticated_pull_secrets: args.allow_unauthenticated_pull_secrets,
        reload_interval: args.reload_interval.get(),
        grace: args.shutdown_grace.get(),
        body_limit: args.limits.max_body_bytes,
        limits: args.limits.limits()?,
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
        outln!("{}", path.display());
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
        assert_eq!(args.limits.max_body_bytes, settings.body_limit);
        assert_eq!(args.limits.limits().unwrap(), settings.limits);
        assert_eq!(args.client_ca, settings.client_ca);
        assert!(!args.allow_unauthenticated_pull_secrets);
    }

    #[test]
    fn every_server_flag_has_an_env_twin() {
        use clap::CommandFactory;
        let command = Cli::command();
        let mut seen = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            let expected = format!("IMGATE_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(env, expected, "--{long}");
            seen += 1;
        }
        assert!(seen >= 24, "{seen} flags");
    }

    #[test]
    fn limits_refuse_nonsense() {
        for (flag, value) in [
            ("--max-connections", "0"),
            ("--body-timeout", "0s"),
            ("--max-buffered-body-bytes", "1024"),
            ("--max-buffered-body-bytes-per-source", "1024"),
            ("--min-body-rate", "0"),
            ("--max-handshakes-per-source", "0"),
        ] {
            let err = parse(&[flag, value]).unwrap().limits.limits().unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
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
