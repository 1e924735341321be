//! Options shared by every command that talks to a registry, and opening
//! a private key wherever it lives (file, `env://`, PKCS#11, Vault).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use imgate_core::policy::HumanDuration;
use imgate_core::registry::{ClientConfig, Credentials, RegistryClient, RegistrySettings};
use imgate_core::ImageRef;
use imgate_keys::pkcs11::Pkcs11Signer;
use imgate_keys::vault::{VaultConfig, VaultSigner};
use imgate_keys::{KeyReference, PublicKey, Signer, SigningKey};

use super::password::{pkcs11_module_from_env, read_password, read_pkcs11_pin};

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
    /// Builds a client; `registries` are the hosts that `--username` applies
    /// to (repeats are harmless).
    pub fn client<'a>(
        &self,
        registries: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<RegistryClient> {
        Ok(RegistryClient::new(self.config(registries)?)?)
    }

    /// The admission engine for `policy`, reaching registries with these
    /// options merged with the policy's `registries:`; `registries` are the
    /// hosts that `--username` applies to.
    pub fn policy_engine<'a>(
        &self,
        policy: imgate_core::policy::Policy,
        registries: impl IntoIterator<Item = &'a str>,
        deadline: std::time::Duration,
    ) -> anyhow::Result<imgate_webhook::admission::Engine> {
        let config = policy.client_config(self.config(registries)?);
        let client = RegistryClient::new(config).context("configuring the registry client")?;
        Ok(imgate_webhook::admission::Engine::builder(policy, client)
            .deadline(deadline)
            .build())
    }

    /// The client configuration these options describe (for callers that
    /// merge in more settings, e.g. a policy's registries, before building).
    pub fn config<'a>(
        &self,
        registries: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<ClientConfig> {
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
                    host.to_string(),
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

/// Parses the images named on the command line; an error names the one
/// that is not a reference and what could not be done with it (`verb`).
pub fn parse_images(texts: &[String], verb: &str) -> anyhow::Result<Vec<ImageRef>> {
    texts
        .iter()
        .map(|text| ImageRef::parse(text).with_context(|| format!("cannot {verb} {text:?}")))
        .collect()
}

/// Opens the private key `spec` names (a path, `env://VAR`, `pkcs11:…` or
/// `hashivault://NAME`), asking for a password or PIN only when one is
/// needed. The key is checked before any registry is contacted, so a wrong
/// PIN or an unreachable Vault fails fast.
pub fn open_signer(spec: &str) -> anyhow::Result<Box<dyn Signer>> {
    match KeyReference::parse(spec)? {
        KeyReference::Pem(spec) => Ok(Box::new(load_pem_signing_key(&spec)?)),
        KeyReference::Pkcs11(uri) => {
            warn_if_pin_in_uri(&uri);
            let module = pkcs11_module_from_env();
            let mut pin = |token: &str| read_pkcs11_pin(&redacted_name(&uri), token);
            Ok(Box::new(Pkcs11Signer::open(
                &uri,
                module.as_deref(),
                &mut pin,
            )?))
        }
        KeyReference::HashiVault(name) => {
            let config = VaultConfig::from_env(spec)?;
            Ok(Box::new(VaultSigner::open(config, &name)?))
        }
    }
}

/// The public key of the key `spec` names: from a public or private PEM, a
/// token's public key object (no PIN when the token shows it without a
/// login) or Vault's newest key version.
pub fn open_public_key(spec: &str) -> anyhow::Result<PublicKey> {
    match KeyReference::parse(spec)? {
        KeyReference::Pem(spec) => {
            let bytes = imgate_keys::read_key_source_zeroizing(&spec)?;
            if imgate_keys::is_private_key_pem(&bytes) {
                Ok(load_pem_signing_key(&spec)?.public_key())
            } else {
                Ok(PublicKey::from_pem(&bytes, &spec)?)
            }
        }
        KeyReference::Pkcs11(uri) => {
            warn_if_pin_in_uri(&uri);
            let module = pkcs11_module_from_env();
            let mut pin = |token: &str| read_pkcs11_pin(&redacted_name(&uri), token);
            Ok(imgate_keys::pkcs11::public_key(
                &uri,
                module.as_deref(),
                &mut pin,
            )?)
        }
        KeyReference::HashiVault(name) => {
            let config = VaultConfig::from_env(spec)?;
            Ok(VaultSigner::open(config, &name)?.public_key())
        }
    }
}

/// Reads a key file or `env://VAR`, asking for a password only for an
/// encrypted key, and never for a public key (which is refused with one
/// clear line).
fn load_pem_signing_key(spec: &str) -> anyhow::Result<SigningKey> {
    let pem = imgate_keys::read_key_source_zeroizing(spec)?;
    let password = if imgate_keys::is_encrypted_private_key_pem(&pem) {
        Some(read_password(false, spec)?)
    } else {
        None
    };
    let password: &[u8] = password.as_ref().map_or(&[], |p| p.as_slice());
    Ok(SigningKey::from_cosign_pem(&pem, password, spec)?)
}

/// The URI as messages show it (PIN replaced).
fn redacted_name(uri: &str) -> String {
    imgate_keys::pkcs11::Pkcs11Uri::parse(uri)
        .map(|u| u.display_name().to_string())
        .unwrap_or_else(|_| "the pkcs11: key".to_string())
}

/// cosign accepts `pin-value=`, so imgate does too, but the PIN is then in
/// the process arguments and the shell history.
fn warn_if_pin_in_uri(uri: &str) {
    let has_pin = imgate_keys::pkcs11::Pkcs11Uri::parse(uri).is_ok_and(|u| u.pin_value.is_some());
    if has_pin {
        tracing::warn!(
            "the PKCS#11 PIN is in the key URI (pin-value), visible in process listings and \
             shell history; prefer pin-source=FILE or IMGATE_PKCS11_PIN"
        );
    }
}
