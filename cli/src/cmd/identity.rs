//! The keyless identity flags `imgate verify`, `verify-attestation` and
//! `verify-bundle` share (cosign's spelling), and the one place that turns
//! them into an [`IdentityPolicy`]; with the keys, trusted root and tlog
//! mode, the signer flags of `verify` and `verify-attestation`
//! ([`SignerArgs`]).

use std::path::PathBuf;
use std::sync::Arc;

use imgate_core::signature::Requirements;
use imgate_core::sigstore::{IdentityPolicy, Matcher, TrustRoot};

use super::verify::TlogArg;

/// Who may have signed: keys, a keyless identity, the trusted root and what
/// the transparency log must show. Each conflicts with `--policy`, which
/// names its own signers.
#[derive(Debug, clap::Args)]
pub struct SignerArgs {
    /// Public key (PEM file or `env://VAR`). Repeatable: any one may satisfy
    /// (as may the keyless identity, when given too).
    #[arg(
        long = "key",
        value_name = "PUB",
        required_unless_present_any = ["policy", "certificate_identity", "certificate_identity_regexp"],
        conflicts_with = "policy"
    )]
    pub keys: Vec<String>,
    /// Keyless: who must have signed (a Fulcio certificate naming this
    /// identity and issuer, with a verified Rekor entry or timestamp).
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// A Sigstore trusted_root.json for keyless signatures and log entries,
    /// instead of the embedded public-good root.
    #[arg(long, value_name = "FILE", conflicts_with = "policy")]
    pub trusted_root: Option<PathBuf>,
    /// What a signature must show of the transparency log: `required`,
    /// `if-present` (verified when the signature carries an entry) or
    /// `ignore`. A keyless signature always needs a verified entry or, for a
    /// bundle and unless `required`, a timestamp from a trusted authority.
    #[arg(long, value_enum, default_value_t = TlogArg::IfPresent, conflicts_with = "policy")]
    pub tlog: TlogArg,
}

impl SignerArgs {
    /// The signers the flags allow (keys read, identity compiled, root
    /// loaded), requiring nothing else of a signature.
    pub fn requirements(&self) -> anyhow::Result<Requirements> {
        let mut keys = Vec::new();
        for spec in &self.keys {
            keys.push(imgate_keys::load_public_key(spec)?);
        }
        let trust_root = match &self.trusted_root {
            Some(path) => Some(Arc::new(TrustRoot::from_file(path)?)),
            None => None,
        };
        Ok(Requirements {
            keys,
            keyless: self
                .identity
                .policy()?
                .into_iter()
                .map(Into::into)
                .collect(),
            trust_root,
            tlog: self.tlog.into(),
            ..Requirements::default()
        })
    }
}

#[derive(Debug, Default, clap::Args)]
pub struct IdentityArgs {
    /// The identity the certificate must name (its SAN: an email or URI).
    #[arg(
        long,
        value_name = "IDENTITY",
        conflicts_with = "certificate_identity_regexp"
    )]
    pub certificate_identity: Option<String>,
    /// Like --certificate-identity, as a regex matched against the whole value.
    #[arg(long, value_name = "REGEX")]
    pub certificate_identity_regexp: Option<String>,
    /// The OIDC issuer the certificate must name.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "certificate_oidc_issuer_regexp"
    )]
    pub certificate_oidc_issuer: Option<String>,
    /// Like --certificate-oidc-issuer, as a regex matched against the whole value.
    #[arg(long, value_name = "REGEX")]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// The certificate's GitHub workflow trigger extension must be this value.
    #[arg(long, value_name = "VALUE")]
    pub certificate_github_workflow_trigger: Option<String>,
    /// The certificate's GitHub workflow SHA extension must be this value.
    #[arg(long, value_name = "VALUE")]
    pub certificate_github_workflow_sha: Option<String>,
    /// The certificate's GitHub workflow name extension must be this value.
    #[arg(long, value_name = "VALUE")]
    pub certificate_github_workflow_name: Option<String>,
    /// The certificate's GitHub workflow repository extension must be this value.
    #[arg(long, value_name = "VALUE")]
    pub certificate_github_workflow_repository: Option<String>,
    /// The certificate's GitHub workflow ref extension must be this value.
    #[arg(long, value_name = "VALUE")]
    pub certificate_github_workflow_ref: Option<String>,
}

impl IdentityArgs {
    /// Whether any identity flag was given.
    pub fn given(&self) -> bool {
        self.certificate_identity.is_some() || self.certificate_identity_regexp.is_some()
    }

    /// The identity policy the flags describe: `Ok(None)` when no identity
    /// flag was given; an error when only half of subject/issuer was, or a
    /// regex does not compile (naming the flag).
    pub fn policy(&self) -> anyhow::Result<Option<IdentityPolicy>> {
        let subject = match (
            &self.certificate_identity,
            &self.certificate_identity_regexp,
        ) {
            (Some(exact), _) => Matcher::exact(exact),
            (None, Some(pattern)) => Matcher::regex("--certificate-identity-regexp", pattern)?,
            (None, None) => return Ok(None),
        };
        let issuer = match (
            &self.certificate_oidc_issuer,
            &self.certificate_oidc_issuer_regexp,
        ) {
            (Some(exact), _) => Matcher::exact(exact),
            (None, Some(pattern)) => Matcher::regex("--certificate-oidc-issuer-regexp", pattern)?,
            (None, None) => anyhow::bail!(
                "--certificate-identity or --certificate-identity-regexp needs \
                 --certificate-oidc-issuer or --certificate-oidc-issuer-regexp"
            ),
        };
        let mut policy = IdentityPolicy {
            subject,
            issuer,
            extensions: Default::default(),
        };
        for (name, value) in [
            (
                "github-workflow-trigger",
                &self.certificate_github_workflow_trigger,
            ),
            ("github-workflow-sha", &self.certificate_github_workflow_sha),
            (
                "github-workflow-name",
                &self.certificate_github_workflow_name,
            ),
            (
                "github-workflow-repository",
                &self.certificate_github_workflow_repository,
            ),
            ("github-workflow-ref", &self.certificate_github_workflow_ref),
        ] {
            if let Some(value) = value {
                policy = policy.with_extension(name, Matcher::exact(value))?;
            }
        }
        Ok(Some(policy))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn flags_build_one_policy() {
        let args = IdentityArgs {
            certificate_identity_regexp: Some(".*@example\\.com".into()),
            certificate_oidc_issuer: Some("https://issuer.example".into()),
            certificate_github_workflow_repository: Some("example/app".into()),
            ..IdentityArgs::default()
        };
        let policy = args.policy().unwrap().unwrap();
        assert!(policy.subject.matches("ci@example.com"));
        assert!(!policy.subject.matches("ci@example.com.evil"));
        assert!(policy.extensions["github-workflow-repository"].matches("example/app"));
        assert!(IdentityArgs::default().policy().unwrap().is_none());
    }

    #[test]
    fn an_identity_without_an_issuer_or_a_bad_regex_is_refused() {
        let half = IdentityArgs {
            certificate_identity: Some("a".into()),
            ..IdentityArgs::default()
        };
        assert!(half
            .policy()
            .unwrap_err()
            .to_string()
            .contains("--certificate-oidc-issuer"));
        let bad = IdentityArgs {
            certificate_identity_regexp: Some("(".into()),
            certificate_oidc_issuer: Some("b".into()),
            ..IdentityArgs::default()
        };
        let err = bad.policy().unwrap_err().to_string();
        assert!(err.contains("--certificate-identity-regexp"), "{err}");
    }
}
