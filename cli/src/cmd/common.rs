//! Options shared by every command that talks to a registry.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use imgate_core::policy::HumanDuration;
use imgate_core::registry::{ClientConfig, Credentials, RegistryClient, RegistrySettings};

/// How a command prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For machines.
    Json,
}

/// Registry connection options.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Extra CA bundle (PEM) to trust for registries, on top of the system roots. Repeatable.
    #[arg(long = "registry-ca", value_name = "FILE", env = "IMGATE_REGISTRY_CA")]
    pub registry_ca: Vec<PathBuf>,
    /// Talk plain HTTP to this registry (HOST[:PORT]). Repeatable. Only for registries you trust on the path.
    #[arg(long = "allow-http-registry", value_name = "HOST[:PORT]")]
    pub allow_http_registry: Vec<String>,
    /// User name for every registry named on the command line (password from --password-stdin).
    #[arg(long, requires = "password_stdin", env = "IMGATE_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Read the registry password or token from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Docker config file for credentials (default: $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Timeout for one registry request (`30s`, `2m`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value_t = ClientConfig::default().request_timeout.into())]
    pub registry_timeout: HumanDuration,
}

impl RegistryArgs {
    /// Builds a client; `registries` are the hosts that `--username` applies to.
    pub fn client(&self, registries: &[String]) -> anyhow::Result<RegistryClient> {
        Ok(RegistryClient::new(self.config(registries)?)?)
    }

    /// The client configuration these options describe (for callers that
    /// merge in more settings, e.g. a policy's registries, before building).
    pub fn config(&self, registries: &[String]) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig {
            extra_ca_files: self.registry_ca.clone(),
            docker_config: self.docker_config.clone(),
            // Zero would fail every request; a millisecond floor keeps the
            // flag's meaning without that trap.
            request_timeout: self
                .registry_timeout
                .get()
                .max(std::time::Duration::from_millis(1)),
            ..ClientConfig::default()
        };
        for host in &self.allow_http_registry {
            config.registries.insert(
                host.clone(),
                RegistrySettings {
                    http: true,
                    ca_file: None,
                },
            );
        }
        if let Some(username) = &self.username {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            for host in registries {
                config.credentials.insert(
                    host.clone(),
                    Credentials {
                        username: username.clone(),
                        password: password.clone(),
                    },
                );
            }
        }
        Ok(config)
    }
}
