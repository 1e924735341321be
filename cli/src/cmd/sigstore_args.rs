//! The options of signing with Sigstore evidence (keyless, or a key with
//! `--tlog-upload`), and building the signer they describe. Shared by the
//! commands that sign (`imgate sign`; `imgate attest` when it signs
//! keylessly).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use imgate_core::policy::HumanDuration;
use imgate_core::sigstore::{
    ServiceOptions, SigningConfig, SigningServices, SigstoreSigner, TrustRoot,
    DEFAULT_SERVICE_BUDGET,
};
use imgate_keys::Signer;

use super::identity::IdentityArgs;

#[derive(Debug, clap::Args)]
pub struct SigstoreArgs {
    /// Keyless: the OIDC identity token, as the JWT or `@FILE` holding it.
    /// Without it imgate reads SIGSTORE_ID_TOKEN, then GitHub Actions'
    /// credentials (the job needs `permissions: id-token: write`).
    #[arg(long, value_name = "JWT|@FILE", conflicts_with = "key")]
    pub identity_token: Option<String>,
    /// With --key: also record the signature in the transparency log (and
    /// timestamp it where a timestamp authority is configured), so cosign and
    /// the Sigstore libraries accept it at their default settings. Off by
    /// default: the log is public.
    #[arg(long, requires = "key")]
    pub tlog_upload: bool,
    /// Sigstore's signing_config.json naming Fulcio, Rekor and the timestamp
    /// authority (default: the public-good instance's; `imgate trust-root
    /// update --signing-config-out` fetches the current one).
    #[arg(long, value_name = "FILE", env = "IMGATE_SIGNING_CONFIG")]
    pub signing_config: Option<PathBuf>,
    /// The trusted root imgate verifies each new signature against before
    /// pushing it (default: the embedded public-good root). It must trust the
    /// signing configuration's services.
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// Talk plain HTTP to this Sigstore service host (HOST or HOST:PORT,
    /// repeatable). Only for a test instance on a network you trust.
    #[arg(long = "allow-http", value_name = "HOST")]
    pub allow_http: Vec<String>,
    /// Extra CA bundle (PEM) to trust for the Sigstore services, on top of
    /// the system roots (a private instance behind an internal CA). Repeatable.
    #[arg(long = "sigstore-ca", value_name = "FILE", env = "IMGATE_SIGSTORE_CA")]
    pub sigstore_ca: Vec<PathBuf>,
    /// Time for one call to a Sigstore service, retries included (`30s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value_t = DEFAULT_SERVICE_BUDGET.into())]
    pub sigstore_timeout: HumanDuration,
    /// Keyless: the certificate must name this identity and issuer (the
    /// self-check; default: what Fulcio derives from the token).
    #[command(flatten)]
    pub identity: IdentityArgs,
}

impl SigstoreArgs {
    /// For a key signature made without Sigstore: refuse options that would
    /// otherwise be silently ignored.
    pub fn check_key_only(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.identity.given(),
            "--certificate-identity applies to keyless signing; drop it or --key"
        );
        Ok(())
    }

    /// The signer these options describe: keyless when `key` is `None`,
    /// else `key` with its signatures logged. `needs_set` asks for a Rekor
    /// v1 log (the legacy layout carries its signed entry timestamp).
    pub async fn signer<'k>(
        &self,
        key: Option<&'k dyn Signer>,
        needs_set: bool,
    ) -> anyhow::Result<SigstoreSigner<'k>> {
        if key.is_some() {
            self.check_key_only()?;
        }
        let config = match &self.signing_config {
            Some(path) => SigningConfig::from_file(path)?,
            None => SigningConfig::public_good()?,
        };
        let root = match &self.trusted_root {
            Some(path) => TrustRoot::from_file(path)?,
            None => TrustRoot::embedded()?,
        };
        let opts = ServiceOptions {
            budget: self
                .sigstore_timeout
                .get()
                .max(std::time::Duration::from_millis(1)),
            allow_http: self.allow_http.clone(),
            ca_files: self.sigstore_ca.clone(),
        };
        let services =
            SigningServices::new(&config, key.is_none(), needs_set, Arc::new(root), opts)?;
        for (what, url) in services.describe() {
            tracing::info!(service = %what, %url, config = config.name(), "signing with");
        }
        match key {
            Some(key) => Ok(SigstoreSigner::with_key(services, key)),
            None => {
                let expected = self.identity.policy()?;
                let token = services
                    .identity_token(self.identity_token.as_deref(), &|name| {
                        std::env::var(name).ok()
                    })
                    .await
                    .context("cannot sign keylessly")?;
                tracing::info!(
                    origin = token.origin(),
                    issuer = token.issuer(),
                    "identity token"
                );
                Ok(SigstoreSigner::keyless(services, token, expected))
            }
        }
    }
}
