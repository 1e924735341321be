//! The admission policy file: parsing, validation and matching.
//!
//! One YAML file, shared by the webhook, `imgate admit` and `imgate verify`.
//! Parsing is strict: unknown fields are errors naming their path, and
//! [`Policy::validate`] refuses contradictions (a rule that verifies
//! signatures without keys, `verify: none` with keys, …) with an error naming
//! the field. Keys are read when the policy is loaded, so a policy that loads
//! can verify without touching the file system again.
//!
//! ```yaml
//! mode: enforce            # enforce | audit
//! pinDigests: pods         # pods | all | none
//! onRegistryError: deny    # deny | allow
//! namespaces:
//!   exclude: [kube-system]
//!   excludeSelector: {matchLabels: {imgate.dev/ignore: "true"}}
//! trustedRegistries: [registry.example.com/**, docker.io/library/*]
//! registries:
//!   "localhost:5000": {http: true}
//! rules:
//!   - name: ours
//!     images: ["registry.example.com/**"]
//!     keys: [{file: /etc/imgate/keys/ci.pub}]
//!     annotations: {env: prod}
//!   - name: upstream
//!     images: ["docker.io/library/*"]
//!     verify: none
//! cache: {verifiedTtl: 10m, deniedTtl: 10s, tagTtl: 30s, maxEntries: 10000}
//! ```

mod attestation;
mod duration;
mod keyless;
mod pattern;
mod selector;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::reference::ImageRef;
use crate::registry::ClientConfig;
use crate::signature::KeylessAuthority;
use crate::sigstore::TrustRoot;

pub use attestation::{AttestationLimits, AttestationSpec, ConditionSpec, RuleAttestations};
pub use duration::HumanDuration;
pub use keyless::{ExtensionMatch, KeylessRef, TlogSetting};
pub use pattern::{ImagePattern, PatternError, PatternSpec};
pub use selector::{LabelSelector, SelectorOperator, SelectorRequirement};

/// Why a policy cannot be used. Every variant names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("cannot read policy {path}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid YAML, an unknown field, or a value of the wrong type
    /// (`detail` starts with the field path, as serde_yaml reports it).
    #[error("policy {source_name}: {detail}")]
    Syntax {
        /// File name or other label of the text.
        source_name: String,
        /// The parser's message, with the field path and line.
        detail: String,
    },
    /// A field's value is not allowed, or contradicts another field.
    #[error("policy {source_name}: {field}: {message}")]
    Invalid {
        /// File name or other label of the text.
        source_name: String,
        /// The field, e.g. `rules[1].keys`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A key cannot be read or is not a public key (the key loader's
    /// message, naming the key, follows as the error's source).
    #[error("policy {source_name}: {field}")]
    Key {
        /// File name or other label of the text.
        source_name: String,
        /// The field, e.g. `rules[1].keys[0].file`.
        field: String,
        /// What the key loader said (names the key).
        #[source]
        source: imgate_keys::KeyError,
    },
}

impl PolicyError {
    /// The field the error is about, when it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { field, .. } | PolicyError::Key { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// `enforce` denies; `audit` allows and reports what it would have denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny what the policy does not allow.
    #[default]
    Enforce,
    /// Allow everything, with warnings and audit annotations.
    Audit,
}

/// Where tags are rewritten to digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinScope {
    /// Pods only: controllers' templates are verified but left as written
    /// (GitOps tools see no drift), their Pods get pinned.
    #[default]
    Pods,
    /// Pods and pod templates.
    All,
    /// Never rewrite.
    None,
}

/// What to do when the registry cannot answer (down, slow, refusing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRegistryError {
    /// Fail closed.
    #[default]
    Deny,
    /// Fail open, with a warning.
    Allow,
}

/// Whether a rule requires signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// A valid signature by one of the rule's keys (the default).
    #[default]
    Signature,
    /// Trusted registry is enough.
    None,
}

/// Namespaces the webhook never blocks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespaces {
    /// Namespace names.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Namespaces whose labels match are excluded too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_selector: Option<LabelSelector>,
}

/// Connection settings for one registry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    /// Plain HTTP (only for registries you trust on the path).
    #[serde(default)]
    pub http: bool,
    /// Extra CA bundle for this registry (relative paths: from the policy's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// One allowed key: a PEM file or the PEM inline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    /// Path to a PKIX public key PEM, or `env://VAR` (relative paths: from the policy's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The PEM itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// One rule: images it applies to and what they need. First match wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Shown in denials, logs and metrics.
    pub name: String,
    /// Image patterns as written (parsed into `images` by validation).
    #[serde(rename = "images")]
    image_specs: Vec<PatternSpec>,
    /// Image patterns this rule applies to.
    #[serde(skip)]
    pub images: Vec<ImagePattern>,
    /// Allowed signing keys (any one suffices, as does any keyless authority).
    #[serde(default)]
    pub keys: Vec<KeyRef>,
    /// Allowed keyless signers (Fulcio certificate identities).
    #[serde(default)]
    pub keyless: Vec<KeylessRef>,
    /// What key signatures must show of the transparency log.
    #[serde(default)]
    pub tlog: TlogSetting,
    /// Annotations the signature must carry.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `signature` (default) or `none`.
    #[serde(default)]
    pub verify: VerifyMode,
    /// Also require the signed payload to name the image's own repository
    /// (a bundle names none, so only legacy signatures can qualify).
    #[serde(default)]
    pub match_repository: bool,
    /// Attestations the image must carry (see `attestation.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationSpec>,
    /// The keys, loaded by [`Policy::validate`].
    #[serde(skip)]
    loaded_keys: Vec<imgate_keys::PublicKey>,
    /// The keyless authorities, loaded by [`Policy::validate`].
    #[serde(skip)]
    loaded_keyless: Vec<KeylessAuthority>,
    /// The policy's trust root (`None`: the embedded one), set by [`Policy::validate`].
    #[serde(skip)]
    trust_root: Option<Arc<TrustRoot>>,
    /// The attestations, loaded by [`Policy::validate`].
    #[serde(skip)]
    loaded_attestations: RuleAttestations,
    /// Hash of everything that affects a verdict (set by [`Policy::validate`]).
    #[serde(skip)]
    fingerprint: String,
}

impl Rule {
    /// The loaded public keys (empty before validation or with `verify: none`).
    pub fn public_keys(&self) -> &[imgate_keys::PublicKey] {
        &self.loaded_keys
    }

    /// Whether the rule needs a signature.
    pub fn requires_signature(&self) -> bool {
        self.verify == VerifyMode::Signature
    }

    /// A hash of everything that affects this rule's verdicts (name, images,
    /// key material, annotations, options): caches key verdicts by it, so a
    /// reloaded policy never reuses a verdict reached under different terms.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What a signature must satisfy under this rule.
    pub fn requirements(&self) -> crate::signature::Requirements {
        crate::signature::Requirements {
            keys: self.loaded_keys.clone(),
            annotations: self.annotations.clone(),
            match_repository: self.match_repository,
            keyless: self.loaded_keyless.clone(),
            trust_root: self.trust_root.clone(),
            tlog: self.tlog.into(),
        }
    }

    /// Whether any of the rule's patterns matches `image`.
    pub fn matches(&self, image: &ImageRef) -> bool {
        self.images.iter().any(|p| p.matches(image))
    }

    fn compute_fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        field(self.name.as_bytes());
        for pattern in &self.images {
            field(pattern.as_str().as_bytes());
        }
        field(b"keys");
        for key in &self.loaded_keys {
            field(key.to_spki_der());
        }
        // The trust roots are part of the terms: a verdict reached under one
        // root must not be reused under another.
        let root_print = |root: &Option<Arc<TrustRoot>>| match root {
            Some(root) => root.fingerprint().to_string(),
            None => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(crate::sigstore::EMBEDDED_TRUSTED_ROOT))
            ),
        };
        field(b"trustRoot");
        field(root_print(&self.trust_root).as_bytes());
        field(b"keyless");
        for authority in &self.loaded_keyless {
            let id = &authority.identity;
            field(id.subject.to_string().as_bytes());
            field(id.issuer.to_string().as_bytes());
            for (name, matcher) in &id.extensions {
                field(name.as_bytes());
                field(matcher.to_string().as_bytes());
            }
            field(root_print(&authority.trust_root).as_bytes());
        }
        field(format!("tlog/{:?}", self.tlog).as_bytes());
        field(b"annotations");
        for (k, v) in &self.annotations {
            field(k.as_bytes());
            field(v.as_bytes());
        }
        field(format!("{:?}/{}", self.verify, self.match_repository).as_bytes());
        field(self.loaded_attestations.fingerprint().as_bytes());
        hex::encode(hash.finalize())
    }
}

/// Cache lifetimes and size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheSettings {
    /// How long a verified (digest, rule) stays verified.
    #[serde(default = "default_verified_ttl")]
    pub verified_ttl: HumanDuration,
    /// How long a denial verdict is remembered (short: a newly signed image should pass soon).
    #[serde(default = "default_denied_ttl")]
    pub denied_ttl: HumanDuration,
    /// How long a tag → digest resolution is trusted.
    #[serde(default = "default_tag_ttl")]
    pub tag_ttl: HumanDuration,
    /// Most entries per cache.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

fn default_verified_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_denied_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_tag_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_entries() -> usize {
    10_000
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            verified_ttl: default_verified_ttl(),
            denied_ttl: default_denied_ttl(),
            tag_ttl: default_tag_ttl(),
            max_entries: default_max_entries(),
        }
    }
}

/// Bounds on what one admitted object may cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Most distinct images one object may name; an object with more is
    /// denied before any registry call (each image costs registry requests,
    /// memory and sockets, and no real Pod has this many).
    #[serde(default = "default_max_images_per_object")]
    pub max_images_per_object: usize,
    /// Caps on reading attestations.
    #[serde(default)]
    pub attestations: AttestationLimits,
}

/// Default for [`Limits::max_images_per_object`].
pub const DEFAULT_MAX_IMAGES_PER_OBJECT: usize = 64;

fn default_max_images_per_object() -> usize {
    DEFAULT_MAX_IMAGES_PER_OBJECT
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_images_per_object: DEFAULT_MAX_IMAGES_PER_OBJECT,
            attestations: AttestationLimits::default(),
        }
    }
}

/// The whole policy. Build it with [`Policy::load`] or [`Policy::from_yaml`],
/// which validate and load keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// `enforce` (default) or `audit`.
    #[serde(default)]
    pub mode: Mode,
    /// `pods` (default), `all` or `none`.
    #[serde(default)]
    pub pin_digests: PinScope,
    /// `deny` (default) or `allow`.
    #[serde(default)]
    pub on_registry_error: OnRegistryError,
    /// Namespace exclusions.
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Trusted registry patterns as written (parsed into `trusted_registries` by validation).
    #[serde(default, rename = "trustedRegistries")]
    trusted_specs: Vec<PatternSpec>,
    /// Registries images may come from; anything else is denied before any network call.
    #[serde(skip)]
    pub trusted_registries: Vec<ImagePattern>,
    /// Per-registry connection settings, keyed by `host[:port]`.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Cache settings.
    #[serde(default)]
    pub cache: CacheSettings,
    /// Per-object cost bounds.
    #[serde(default)]
    pub limits: Limits,
    /// Sigstore trusted root file for keyless signatures and log entries
    /// (relative paths: from the policy's directory); default: the embedded
    /// Sigstore public-good root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_root: Option<String>,
    /// The loaded `trust_root`.
    #[serde(skip)]
    loaded_trust_root: Option<Arc<TrustRoot>>,
    /// Where the policy came from (file name), for messages.
    #[serde(skip)]
    source_name: String,
    /// Warnings found by validation (e.g. a rule no trusted registry covers).
    #[serde(skip)]
    warnings: Vec<String>,
}

impl Policy {
    /// Reads, parses and validates a policy file; relative key and CA paths
    /// are taken from the file's directory.
    ///
    /// ```no_run
    /// let policy = imgate_core::policy::Policy::load("policy.yaml".as_ref()).unwrap();
    /// println!("{} rules", policy.rules.len());
    /// ```
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// Parses and validates policy text; `source` names it in errors.
    /// Relative paths in it are taken from the current directory.
    pub fn from_yaml(text: &str, source: &str) -> Result<Policy, PolicyError> {
        Self::parse(text, source, None)
    }

    fn parse(text: &str, source: &str, base: Option<&Path>) -> Result<Policy, PolicyError> {
        let mut policy: Policy = serde_yaml::from_str(text).map_err(|e| PolicyError::Syntax {
            source_name: source.to_string(),
            detail: e.to_string(),
        })?;
        policy.source_name = source.to_string();
        if let Some(base) = base {
            policy.resolve_paths(base);
        }
        policy.validate()?;
        Ok(policy)
    }

    /// Makes relative key files and CA files relative to `base`.
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(root) = &mut self.trust_root {
            keyless::resolve(root, base);
        }
        for rule in &mut self.rules {
            for authority in &mut rule.keyless {
                if let Some(root) = &mut authority.trust_root {
                    keyless::resolve(root, base);
                }
            }
            for key in &mut rule.keys {
                if let Some(file) = &mut key.file {
                    if !file.starts_with(imgate_keys::ENV_PREFIX) && Path::new(file).is_relative() {
                        *file = base.join(&*file).display().to_string();
                    }
                }
            }
        }
        for settings in self.registries.values_mut() {
            if let Some(ca) = &mut settings.ca_file {
                if ca.is_relative() {
                    *ca = base.join(&*ca);
                }
            }
        }
    }

    /// The files the policy reads besides itself: key files and trusted
    /// roots (paths as resolved at load). A watcher that reloads the policy
    /// when one of them changes keeps a rotated key or a refreshed trusted
    /// root from waiting for a restart.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.trust_root.iter().map(PathBuf::from).collect();
        for rule in &self.rules {
            files.extend(
                rule.keyless
                    .iter()
                    .filter_map(|a| a.trust_root.as_ref().map(PathBuf::from)),
            );
            files.extend(
                rule.keys
                    .iter()
                    .filter_map(|k| k.file.as_deref())
                    .filter(|f| !f.starts_with(imgate_keys::ENV_PREFIX))
                    .map(PathBuf::from),
            );
        }
        files.sort();
        files.dedup();
        files
    }

    /// Where the policy came from.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Non-fatal findings of validation, for `imgate policy check` and the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The client configuration with this policy's per-registry settings
    /// merged in (plain HTTP from either side; the policy's CA file unless
    /// `base` already names one).
    pub fn client_config(&self, mut base: ClientConfig) -> ClientConfig {
        for (host, settings) in &self.registries {
            let entry = base.registries.entry(host.clone()).or_default();
            entry.http |= settings.http;
            if entry.ca_file.is_none() {
                entry.ca_file = settings.ca_file.clone();
            }
        }
        base
    }

    /// Whether `image` comes from a trusted registry.
    pub fn is_trusted(&self, image: &ImageRef) -> bool {
        self.trusted_registries.iter().any(|p| p.matches(image))
    }

    /// The first rule matching `image`.
    pub fn rule_for(&self, image: &ImageRef) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(image))
    }

    /// Whether a namespace is excluded by name or by its labels.
    pub fn namespace_excluded(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.exclude.iter().any(|n| n == name)
            || self
                .namespaces
                .exclude_selector
                .as_ref()
                .is_some_and(|s| s.matches(labels))
    }

    /// Whether exclusion depends on namespace labels (so they must be looked up).
    pub fn uses_namespace_labels(&self) -> bool {
        self.namespaces.exclude_selector.is_some()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
