//! Why making a Sigstore signature failed: no identity token, a service that
//! refused, stalled or answered nonsense, a configuration imgate cannot use,
//! or a result that failed imgate's own verification.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use super::SigstoreError;

/// A Sigstore service imgate talks to when signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The certificate authority (`caUrls`).
    Fulcio,
    /// The transparency log (`rekorTlogUrls`).
    Rekor,
    /// An RFC 3161 timestamp authority (`tsaUrls`).
    Tsa,
    /// GitHub Actions' identity token endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL`).
    GitHubActions,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Fulcio => "Fulcio",
            Service::Rekor => "Rekor",
            Service::Tsa => "the timestamp authority",
            Service::GitHubActions => "GitHub Actions' token endpoint",
        })
    }
}

/// Errors of keyless signing and of logging a key signature. Each names the
/// service or input at fault; none carries a token or key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SigningError {
    /// No identity token in any of the places imgate looks.
    #[error(
        "no identity token for keyless signing: none was given (--identity-token VALUE or @FILE), \
         SIGSTORE_ID_TOKEN is not set, and there are no GitHub Actions credentials \
         (ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN; the job needs \
         `permissions: id-token: write`). imgate has no browser login: in CI the token comes \
         from the CI system. To sign with a key instead, pass --key"
    )]
    NoToken,
    /// The identity token is unusable (malformed, expired, wrong audience).
    #[error("identity token from {origin}: {reason}")]
    Token {
        /// Where the token came from (`--identity-token`, `SIGSTORE_ID_TOKEN`, ...).
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A service answered with an error, or with something imgate cannot use.
    #[error("{service} at {url}: {answer}")]
    Service {
        /// Which service.
        service: Service,
        /// The URL called.
        url: String,
        /// Its answer (status and the start of the body), or what was wrong with it.
        answer: String,
    },
    /// A service did not answer within the time budget.
    #[error(
        "{service} at {url} did not answer within {budget:?} ({attempts} attempt(s)); last: {last}"
    )]
    Timeout {
        /// Which service.
        service: Service,
        /// The URL called.
        url: String,
        /// The budget for the whole call, retries included.
        budget: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last failure seen.
        last: String,
    },
    /// A service URL is plain HTTP and its host was not allowed.
    #[error(
        "{service} URL {url} is not https: imgate talks plain HTTP only to hosts named with \
         --allow-http (a test instance on a network you trust)"
    )]
    Insecure {
        /// Which service.
        service: Service,
        /// The URL.
        url: String,
    },
    /// A `--sigstore-ca` file cannot be used.
    #[error("Sigstore services' CA file {path} (--sigstore-ca): {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signing configuration (or an option) cannot be used.
    #[error("signing configuration {name}: {reason}")]
    Config {
        /// Where the configuration came from (a path or `embedded`).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The signing key failed (a token, a KMS or Vault refused).
    #[error("signing with {key}")]
    Key {
        /// The key's name.
        key: String,
        /// What its holder said.
        #[source]
        source: imgate_keys::KeyError,
    },
    /// What the services returned does not verify: nothing is pushed.
    #[error("self-check of the new signature failed ({what}), nothing was pushed")]
    SelfCheck {
        /// Which part was being checked.
        what: &'static str,
        /// Why imgate's verifier refused it.
        #[source]
        source: SigstoreError,
    },
}
