//! The keyless side of a policy: a rule's `keyless:` authorities (who may
//! have signed with a Fulcio certificate), the trust root their certificates
//! chain to, and the rule's `tlog:` mode for key signatures.
//!
//! ```yaml
//! trustRoot: /etc/imgate/trusted_root.json   # optional; default: Sigstore public good
//! rules:
//!   - name: k8s
//!     images: ["registry.k8s.io/**"]
//!     keyless:
//!       - subject: krel-trust@k8s-releng-prod.iam.gserviceaccount.com
//!         issuer: https://accounts.google.com
//!   - name: ours
//!     images: ["ghcr.io/example/**"]
//!     tlog: required                 # required | ifPresent (default) | ignore
//!     keyless:
//!       - subjectRegExp: https://github\.com/example/.+/\.github/workflows/release\.yml@refs/tags/v.*
//!         issuer: https://token.actions.githubusercontent.com
//!         extensions: {github-workflow-repository: example/app}
//! ```
//!
//! Everything is checked when the policy loads: regexes compile (anchored,
//! size-bounded), extension names are known, trust roots parse; the error
//! names the field.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::signature::KeylessAuthority;
use crate::sigstore::{IdentityPolicy, Matcher, SigstoreError, TlogMode, TrustRoot};

/// One keyless authority as written in the policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeylessRef {
    /// The certificate's OIDC issuer, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The OIDC issuer, as a regex matching the whole value.
    #[serde(
        default,
        rename = "issuerRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub issuer_regexp: Option<String>,
    /// The certificate's identity (SAN: email or URI), exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The identity, as a regex matching the whole value.
    #[serde(
        default,
        rename = "subjectRegExp",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject_regexp: Option<String>,
    /// Fulcio extension matchers by name (see
    /// [`crate::sigstore::EXTENSION_NAMES`]): a string matches exactly,
    /// `{regExp: ...}` by anchored regex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, ExtensionMatch>,
    /// This authority's own trusted root file (relative paths: from the
    /// policy's directory); default: the policy's `trustRoot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root: Option<String>,
}

/// How an extension's value must look.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtensionMatch {
    /// Exactly this value.
    Exact(String),
    /// A regex matching the whole value.
    Pattern {
        /// The pattern.
        #[serde(rename = "regExp")]
        regexp: String,
    },
}

/// `tlog:` of a rule, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TlogSetting {
    /// A verified log entry is required (a timestamp alone does not do).
    Required,
    /// Verified when present (the default).
    #[default]
    IfPresent,
    /// Log entries of key signatures are not checked.
    Ignore,
}

impl From<TlogSetting> for TlogMode {
    fn from(value: TlogSetting) -> Self {
        match value {
            TlogSetting::Required => TlogMode::Required,
            TlogSetting::IfPresent => TlogMode::IfPresent,
            TlogSetting::Ignore => TlogMode::Ignore,
        }
    }
}

/// Makes a relative trust root path relative to `base`.
pub(super) fn resolve(path: &mut String, base: &Path) {
    if Path::new(path.as_str()).is_relative() {
        *path = base.join(&*path).display().to_string();
    }
}

/// Reads a trusted root file; the error is the message for its field.
pub(super) fn load_root(path: &str) -> Result<Arc<TrustRoot>, String> {
    TrustRoot::from_file(Path::new(path))
        .map(Arc::new)
        .map_err(|err| err.to_string())
}

/// One of exact / regex, exactly; `field` is the exact field's name.
fn matcher(
    exact: &Option<String>,
    regexp: &Option<String>,
    field: &'static str,
    regexp_field: &'static str,
) -> Result<Matcher, (String, String)> {
    match (exact, regexp) {
        (Some(value), None) if !value.is_empty() => Ok(Matcher::exact(value.clone())),
        (None, Some(pattern)) => Matcher::regex(regexp_field, pattern)
            .map_err(|err| (regexp_field.into(), err.to_string())),
        (Some(_), Some(_)) => Err((
            field.into(),
            format!("give one of {field} or {regexp_field}, not both"),
        )),
        _ => Err((
            field.into(),
            format!("required: give {field} or {regexp_field} (an authority must name who signs)"),
        )),
    }
}

impl KeylessRef {
    /// The authority this describes; on error, the field (relative to the
    /// authority) and the message.
    pub(super) fn load(&self) -> Result<KeylessAuthority, (String, String)> {
        let subject = matcher(
            &self.subject,
            &self.subject_regexp,
            "subject",
            "subjectRegExp",
        )?;
        let issuer = matcher(&self.issuer, &self.issuer_regexp, "issuer", "issuerRegExp")?;
        let mut identity = IdentityPolicy {
            subject,
            issuer,
            extensions: BTreeMap::new(),
        };
        for (name, want) in &self.extensions {
            let field = format!("extensions.{name}");
            let m = match want {
                ExtensionMatch::Exact(value) => Matcher::exact(value.clone()),
                ExtensionMatch::Pattern { regexp } => Matcher::regex("extensions", regexp)
                    .map_err(|err| (format!("{field}.regExp"), err.to_string()))?,
            };
            identity = identity
                .with_extension(name, m)
                .map_err(|err: SigstoreError| (field.clone(), err.to_string()))?;
        }
        let trust_root = match &self.trust_root {
            Some(path) => Some(load_root(path).map_err(|msg| ("trustRoot".to_string(), msg))?),
            None => None,
        };
        Ok(KeylessAuthority {
            identity,
            trust_root,
        })
    }
}
