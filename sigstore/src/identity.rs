//! Who may have signed: the certificate identity (SAN), the OIDC issuer and
//! Fulcio's extensions, each matched exactly or by an anchored regex.
//!
//! Matching happens here rather than in `sigstore-verify` because that crate
//! matches exact strings only, and because a denial must name the identity
//! found beside the one wanted.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use regex_syntax::hir::{Hir, Look};
use sigstore_verify::crypto::{CertificateInfo, FulcioCiClaims};

use super::SigstoreError;

/// One value constraint: an exact string, or a regex that must match the
/// whole value (anchored at both ends, like cosign's `-regexp` flags behave
/// for sensible patterns, so `.*@example\.com` cannot match
/// `evil@example.com.attacker.net`).
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The value equals this string.
    Exact(String),
    /// The value matches this anchored regex (the original pattern kept for
    /// messages).
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The anchored, compiled pattern.
        regex: Regex,
    },
}

/// Bound on a compiled identity pattern, so a policy file cannot make the
/// webhook build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Matcher {
    /// An exact matcher.
    pub fn exact(value: impl Into<String>) -> Matcher {
        Matcher::Exact(value.into())
    }

    /// An anchored regex matcher; `field` names the flag or policy field in
    /// the error.
    ///
    /// The pattern is parsed on its own and anchored in its syntax tree,
    /// never by pasting text around it: `x)|(.*` is refused as unbalanced,
    /// where `^(?:x)|(.*)$` would have closed the group early and accepted
    /// any identity.
    pub fn regex(field: &'static str, pattern: &str) -> Result<Matcher, SigstoreError> {
        let invalid = |reason: String| SigstoreError::Pattern {
            field,
            pattern: pattern.to_string(),
            reason,
        };
        let hir = regex_syntax::ParserBuilder::new()
            .build()
            .parse(pattern)
            .map_err(|err| invalid(err.to_string()))?;
        let anchored = Hir::concat(vec![Hir::look(Look::Start), hir, Hir::look(Look::End)]);
        // The printed tree is a complete expression (every alternation and
        // concatenation in its own group), equivalent to the tree.
        let regex = regex::RegexBuilder::new(&anchored.to_string())
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|err| invalid(err.to_string()))?;
        Ok(Matcher::Regex {
            pattern: pattern.to_string(),
            regex,
        })
    }

    /// Whether `value` satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(expected) => expected == value,
            Matcher::Regex { regex, .. } => regex.is_match(value),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(value) => write!(f, "{value:?}"),
            Matcher::Regex { pattern, .. } => write!(f, "regex {pattern:?}"),
        }
    }
}

/// The Fulcio certificate extensions a policy can match, by cosign's flag
/// names (`--certificate-github-workflow-repository` is
/// `github-workflow-repository`) and by the newer claim names.
pub const EXTENSION_NAMES: &[&str] = &[
    "github-workflow-trigger",
    "github-workflow-sha",
    "github-workflow-name",
    "github-workflow-repository",
    "github-workflow-ref",
    "build-signer-uri",
    "build-signer-digest",
    "runner-environment",
    "source-repository-uri",
    "source-repository-digest",
    "source-repository-ref",
    "source-repository-owner-uri",
    "build-config-uri",
    "build-trigger",
    "run-invocation-uri",
];

fn extension_value(claims: &FulcioCiClaims, name: &str) -> Option<String> {
    let gh = &claims.deprecated_github;
    match name {
        "github-workflow-trigger" => gh.workflow_trigger.clone(),
        "github-workflow-sha" => gh.workflow_sha.clone(),
        "github-workflow-name" => gh.workflow_name.clone(),
        "github-workflow-repository" => gh.workflow_repository.clone(),
        "github-workflow-ref" => gh.workflow_ref.clone(),
        "build-signer-uri" => claims.build_signer_uri.clone(),
        "build-signer-digest" => claims.build_signer_digest.clone(),
        "runner-environment" => claims.runner_environment.clone(),
        "source-repository-uri" => claims.source_repository_uri.clone(),
        "source-repository-digest" => claims.source_repository_digest.clone(),
        "source-repository-ref" => claims.source_repository_ref.clone(),
        "source-repository-owner-uri" => claims.source_repository_owner_uri.clone(),
        "build-config-uri" => claims.build_config_uri.clone(),
        "build-trigger" => claims.build_trigger.clone(),
        "run-invocation-uri" => claims.run_invocation_uri.clone(),
        _ => None,
    }
}

/// What a keyless signer must be: subject and issuer, plus optional
/// extension matchers. There is no "any identity": an authority always names
/// both.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    /// The certificate's SAN (email, URI).
    pub subject: Matcher,
    /// The OIDC issuer (Fulcio extension 1.3.6.1.4.1.57264.1.8, or .1.1).
    pub issuer: Matcher,
    /// Extension name (see [`EXTENSION_NAMES`]) to matcher.
    pub extensions: BTreeMap<String, Matcher>,
}

impl IdentityPolicy {
    /// Exact subject and issuer.
    pub fn exact(subject: impl Into<String>, issuer: impl Into<String>) -> IdentityPolicy {
        IdentityPolicy {
            subject: Matcher::exact(subject),
            issuer: Matcher::exact(issuer),
            extensions: BTreeMap::new(),
        }
    }

    /// Add an extension matcher; the name must be one of [`EXTENSION_NAMES`].
    pub fn with_extension(
        mut self,
        name: &str,
        matcher: Matcher,
    ) -> Result<IdentityPolicy, SigstoreError> {
        if !EXTENSION_NAMES.contains(&name) {
            return Err(SigstoreError::Pattern {
                field: "extension",
                pattern: name.to_string(),
                reason: format!("unknown extension; known: {}", EXTENSION_NAMES.join(", ")),
            });
        }
        self.extensions.insert(name.to_string(), matcher);
        Ok(self)
    }

    /// Check a (chain-verified) certificate's claims against this policy.
    pub fn check(&self, cert: &CertificateInfo) -> Result<(), SigstoreError> {
        let subject = cert
            .identity
            .as_ref()
            .map(|san| san.as_str().to_string())
            .unwrap_or_default();
        if !self.subject.matches(&subject) {
            return Err(SigstoreError::IdentityMismatch {
                found: subject,
                wanted: self.subject.to_string(),
            });
        }
        let issuer = cert.issuer.clone().unwrap_or_default();
        if !self.issuer.matches(&issuer) {
            return Err(SigstoreError::IssuerMismatch {
                found: issuer,
                wanted: self.issuer.to_string(),
            });
        }
        for (name, matcher) in &self.extensions {
            let found = extension_value(&cert.ci_claims, name).unwrap_or_default();
            if !matcher.matches(&found) {
                return Err(SigstoreError::ExtensionMismatch {
                    name: name.clone(),
                    found,
                    wanted: matcher.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_at_both_ends() {
        let m = Matcher::regex("subjectRegExp", r".*@example\.com").unwrap();
        assert!(m.matches("ci@example.com"));
        assert!(!m.matches("ci@example.com.attacker.net"));
        assert!(!m.matches("x ci@example.com\n"));
        let alt = Matcher::regex("subjectRegExp", "a|b").unwrap();
        // Without the group, `^a|b$` would accept "abc".
        assert!(!alt.matches("abc"));
        assert!(alt.matches("b"));
    }

    #[rstest::rstest]
    #[case::unbalanced_close(r"https://nobody\.example/x)|(.*")]
    #[case::unbalanced_close_only(r"a)|.*")]
    #[case::unbalanced_open(r"(.*")]
    fn a_pattern_that_would_escape_its_anchors_is_refused(#[case] pattern: &str) {
        let err = Matcher::regex("subjectRegExp", pattern).unwrap_err();
        assert!(err.to_string().contains("subjectRegExp"), "{err}");
    }

    #[rstest::rstest]
    #[case::alternation("a|b", "abc")]
    #[case::verbose_comment("(?x)a#", "ab")]
    #[case::verbose_comment_newline("(?x)a#)|(\n", "ab")]
    #[case::multi_line_flag("(?m)a", "a\nb")]
    #[case::groups("(?:a)|(?:b)", "ab")]
    fn anchors_hold_whatever_the_pattern_says(#[case] pattern: &str, #[case] rejected: &str) {
        let m = Matcher::regex("subjectRegExp", pattern).unwrap();
        assert!(!m.matches(rejected), "{pattern:?} matched {rejected:?}");
    }

    #[test]
    fn bad_pattern_names_the_field() {
        let err = Matcher::regex("issuerRegExp", "(").unwrap_err();
        assert!(err.to_string().contains("issuerRegExp"), "{err}");
    }

    #[test]
    fn unknown_extension_is_refused() {
        let err = IdentityPolicy::exact("a", "b")
            .with_extension("github-workflow-colour", Matcher::exact("x"))
            .unwrap_err();
        assert!(err.to_string().contains("github-workflow-colour"), "{err}");
    }
}
