//! Why a Sigstore verification failed or could not run.

use thiserror::Error;

/// Errors of `imgate-sigstore`. Variants up to `Rejected` mean the evidence
/// was examined and said no (exit 1, a policy denial); the others mean the
/// input or configuration was unusable (exit 2, or `onRegistryError`-style
/// handling by the caller). See [`SigstoreError::is_rejection`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SigstoreError {
    /// The certificate's identity (SAN) is not the one the policy wants.
    #[error("certificate identity {found:?} does not match {wanted}")]
    IdentityMismatch {
        /// The identity in the certificate (empty when it has none).
        found: String,
        /// What the policy asked for.
        wanted: String,
    },
    /// The certificate's OIDC issuer is not the one the policy wants.
    #[error("certificate OIDC issuer {found:?} does not match {wanted}")]
    IssuerMismatch {
        /// The issuer in the certificate (empty when it has none).
        found: String,
        /// What the policy asked for.
        wanted: String,
    },
    /// A Fulcio extension of the certificate does not match the policy.
    #[error("certificate extension {name} is {found:?}, wanted {wanted}")]
    ExtensionMismatch {
        /// Extension name (cosign's flag spelling, e.g. `github-workflow-repository`).
        name: String,
        /// The value in the certificate (empty when absent).
        found: String,
        /// What the policy asked for.
        wanted: String,
    },
    /// The signed content names another artifact or image digest.
    #[error("the signature is for {found}, not for {wanted}")]
    DigestMismatch {
        /// The digest the signature covers.
        found: String,
        /// The digest being verified.
        wanted: String,
    },
    /// A cryptographic or transparency check failed (signature, chain, SCT,
    /// log entry, timestamp).
    #[error("{reason}")]
    Rejected {
        /// What failed, in the verifier's words.
        reason: String,
    },
    /// The bundle (or legacy annotation) could not be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which input (`bundle`, `certificate`, `rekor bundle annotation`, ...).
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// The trusted root could not be read or used.
    #[error("trusted root {name}: {reason}")]
    TrustRoot {
        /// Where the trusted root came from (a path, or `embedded`).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Refreshing the trusted root through TUF failed.
    #[error("trusted root update from {url}: {reason}")]
    Update {
        /// The TUF repository.
        url: String,
        /// What failed (transport, signature, expiry, rollback, content).
        reason: String,
    },
    /// A public key given to verify with is unusable.
    #[error("public key {name}: {reason}")]
    Key {
        /// Where the key came from.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An identity pattern does not compile.
    #[error("invalid regular expression {pattern:?} for {field}: {reason}")]
    Pattern {
        /// The policy field or flag holding the pattern.
        field: &'static str,
        /// The pattern as written.
        pattern: String,
        /// The regex engine's complaint.
        reason: String,
    },
}

impl SigstoreError {
    /// True when the evidence was examined and found wanting (a "no"), false
    /// when verification could not run on this input or configuration.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            SigstoreError::IdentityMismatch { .. }
                | SigstoreError::IssuerMismatch { .. }
                | SigstoreError::ExtensionMismatch { .. }
                | SigstoreError::DigestMismatch { .. }
                | SigstoreError::Rejected { .. }
                | SigstoreError::Malformed { .. }
        )
    }

    pub(crate) fn rejected(reason: impl std::fmt::Display) -> Self {
        SigstoreError::Rejected {
            reason: reason.to_string(),
        }
    }
}
