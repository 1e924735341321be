//! Signature checks: a `kyverno.io` rule's `verifyImages` entries and an
//! `ImageValidatingPolicy`'s cosign attestors, read into imgate's signers
//! (keys and keyless identities, any one suffices) or refused by field path.
//!
//! A refused verification is fail closed: the builder denies the images it
//! applied to. Differences imgate resolves the strict way (a key signature
//! must be in the transparency log because Kyverno checked it there by
//! default; an anchored regular expression) are reported.

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::{Imported, Keyless, Match, Signers};
use super::report::FindingKind;
use crate::policy::TlogSetting;

/// The public-good Rekor, the only one imgate knows without a trust root.
const PUBLIC_REKOR: &str = "https://rekor.sigstore.dev";

/// Kyverno's `additionalExtensions` names and imgate's.
const EXTENSIONS: &[(&str, &str)] = &[
    ("githubWorkflowTrigger", "github-workflow-trigger"),
    ("githubWorkflowSha", "github-workflow-sha"),
    ("githubWorkflowName", "github-workflow-name"),
    ("githubWorkflowRepository", "github-workflow-repository"),
];

/// Reads signers; every refusal and note goes to `imported`.
pub(super) struct Signing<'a> {
    pub imported: &'a mut Imported,
    pub source: &'a str,
    /// Whether some part could not be translated.
    pub refused: bool,
    keys: Vec<(String, bool)>,
    keyless: Vec<Keyless>,
    annotations: Vec<BTreeMap<String, String>>,
}

impl<'a> Signing<'a> {
    pub fn new(imported: &'a mut Imported, source: &'a str) -> Signing<'a> {
        Signing {
            imported,
            source,
            refused: false,
            keys: Vec::new(),
            keyless: Vec::new(),
            annotations: Vec::new(),
        }
    }

    pub fn refuse(&mut self, path: &str, reason: &str) {
        self.refused = true;
        let source = self.source.to_string();
        self.imported.refuse(&source, path, reason, true);
    }

    pub fn finding(&mut self, kind: FindingKind, path: &str, message: &str) {
        let source = self.source.to_string();
        self.imported.finding(kind, &source, path, message);
    }

    /// A `verifyImages` entry's `attestors`: one set whose entries any one
    /// of suffices.
    pub fn attestors(&mut self, attestors: &Value, path: &str) {
        let sets = attestors.as_array().map(Vec::as_slice).unwrap_or_default();
        let set = match sets {
            [] => return self.refuse(path, "no attestors: nothing says who must have signed"),
            [set] => set,
            _ => {
                return self.refuse(
                    path,
                    "several attestor sets that must all verify: imgate accepts any one signer",
                )
            }
        };
        let entries = set
            .get("entries")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let count = set.get("count").and_then(Value::as_u64);
        let needed = count.unwrap_or(entries.len() as u64);
        if entries.is_empty() || needed == 0 {
            return self.refuse(&format!("{path}[0]"), "an attestor set with no entries");
        }
        if needed > 1 {
            return self.refuse(
                &format!("{path}[0].count"),
                &format!(
                    "{needed} of {} signers must have signed: imgate accepts any one",
                    entries.len()
                ),
            );
        }
        for (i, entry) in entries.iter().enumerate() {
            self.entry(entry, &format!("{path}[0].entries[{i}]"));
        }
    }

    /// One attestor entry (`keys`, `keyless`, ...) of a set.
    pub fn entry(&mut self, entry: &Value, path: &str) {
        let Some(map) = entry.as_object() else {
            return self.refuse(path, "not a mapping");
        };
        for (key, value) in map {
            let at = format!("{path}.{key}");
            match key.as_str() {
                "keys" => self.key(value, &at),
                "keyless" => self.keyless(value, &at),
                "annotations" => {
                    match serde_json::from_value::<BTreeMap<String, String>>(value.clone()) {
                        Ok(a) => self.annotations.push(a),
                        Err(_) => self.refuse(&at, "annotations that are not strings"),
                    }
                }
                "certificates" => self.refuse(
                    &at,
                    "certificate-based signatures have no imgate equivalent",
                ),
                "attestor" => self.refuse(&at, "nested attestors have no imgate equivalent"),
                "repository" => self.refuse(
                    &at,
                    "signatures in another repository have no imgate equivalent",
                ),
                _ => self.refuse(&at, &format!("`{key}` is not understood by the importer")),
            }
        }
    }

    /// A `keys` attestor: one PEM public key, inline.
    pub fn key(&mut self, keys: &Value, path: &str) {
        for (field, why) in [
            ("kms", "a KMS key imgate cannot read"),
            ("secret", "a key in a Kubernetes Secret imgate cannot read"),
        ] {
            if keys.get(field).is_some() {
                return self.refuse(&format!("{path}.{field}"), why);
            }
        }
        if let Some(alg) = keys.get("signatureAlgorithm").and_then(Value::as_str) {
            if alg != "sha256" {
                return self.refuse(
                    &format!("{path}.signatureAlgorithm"),
                    "imgate verifies sha256 signatures",
                );
            }
        }
        let pem = keys
            .get("publicKeys")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let before = self.keys.len();
        self.pem_key(pem, &format!("{path}.publicKeys"));
        let ignore_tlog = self.rekor(keys.get("rekor"), &format!("{path}.rekor"), false);
        if self.keys.len() > before {
            if let Some(last) = self.keys.last_mut() {
                last.1 = ignore_tlog;
            }
        }
    }

    /// One inline PEM key; anything else is refused.
    pub fn pem_key(&mut self, pem: &str, path: &str) {
        if pem.contains("{{") {
            return self.refuse(path, "a templated key ({{ }})");
        }
        if pem.trim_start().starts_with("k8s://") {
            return self.refuse(
                path,
                "a key in a Kubernetes Secret (k8s://) imgate cannot read",
            );
        }
        match pem.matches("-----BEGIN PUBLIC KEY-----").count() {
            0 => return self.refuse(path, "not an inline PEM public key"),
            1 => {}
            _ => {
                return self.refuse(
                    path,
                    "several keys in one entry: list each as its own entry",
                )
            }
        }
        match imgate_keys::PublicKey::from_pem(pem.trim().as_bytes(), path) {
            Ok(_) => self.keys.push((pem.trim().to_string(), false)),
            Err(err) => self.refuse(path, &format!("imgate verifies ECDSA P-256 keys: {err}")),
        }
    }

    /// A `rekor` block: whether it says to ignore the log; a private log is
    /// refused.
    fn rekor(&mut self, rekor: Option<&Value>, path: &str, keyless: bool) -> bool {
        let Some(rekor) = rekor else { return false };
        if let Some(url) = rekor.get("url").and_then(Value::as_str) {
            if url.trim_end_matches('/') != PUBLIC_REKOR {
                self.refuse(
                    &format!("{path}.url"),
                    "a private Rekor: imgate needs its trusted root (trustRoot); set it by hand",
                );
            }
        }
        if rekor.get("pubkey").is_some() {
            self.refuse(&format!("{path}.pubkey"), "a Rekor key: imgate takes log keys from a trusted root (trustRoot); set it by hand");
        }
        let ignore = rekor
            .get("ignoreTlog")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if ignore && keyless {
            self.finding(
                FindingKind::Stricter,
                &format!("{path}.ignoreTlog"),
                "imgate always requires a transparency-log entry or timestamp for keyless signatures",
            );
        }
        ignore
    }

    /// A `keyless` attestor.
    pub fn keyless(&mut self, keyless: &Value, path: &str) {
        if keyless.get("roots").is_some() {
            return self.refuse(&format!("{path}.roots"), "custom Fulcio roots: imgate needs them in a trusted root (trustRoot); set it by hand");
        }
        let subject = self.identity(keyless, path, "subject", "subjectRegExp");
        let issuer = self.identity(keyless, path, "issuer", "issuerRegExp");
        let mut extensions = BTreeMap::new();
        if let Some(map) = keyless
            .get("additionalExtensions")
            .and_then(Value::as_object)
        {
            for (name, value) in map {
                let at = format!("{path}.additionalExtensions.{name}");
                match (EXTENSIONS.iter().find(|(k, _)| k == name), value.as_str()) {
                    (Some((_, ours)), Some(v)) => {
                        extensions.insert(ours.to_string(), v.to_string());
                    }
                    _ => self.refuse(&at, "an extension imgate does not match"),
                }
            }
        }
        self.rekor(keyless.get("rekor"), &format!("{path}.rekor"), true);
        if keyless.pointer("/ctlog/ignoreSCT").and_then(Value::as_bool) == Some(true) {
            self.finding(
                FindingKind::Stricter,
                &format!("{path}.ctlog.ignoreSCT"),
                "imgate always checks the certificate's SCT",
            );
        }
        if let (Some(subject), Some(issuer)) = (subject, issuer) {
            self.keyless.push(Keyless {
                subject,
                issuer,
                extensions,
            });
        }
    }

    /// An ImageValidatingPolicy's `cosign` attestor: an inline key or
    /// keyless identities, with its `ctlog` settings.
    pub fn cosign(&mut self, cosign: &Value, path: &str) {
        let keys_before = self.keys.len();
        let keyless_before = self.keyless.len();
        let mut ignore_tlog = false;
        for (key, value) in cosign.as_object().into_iter().flatten() {
            let at = format!("{path}.{key}");
            match key.as_str() {
                "key" => {
                    for (field, why) in [
                        ("kms", "a KMS key imgate cannot read"),
                        (
                            "secretRef",
                            "a key in a Kubernetes Secret imgate cannot read",
                        ),
                        ("expression", "a key computed by CEL"),
                    ] {
                        if value.get(field).is_some() {
                            self.refuse(&format!("{at}.{field}"), why);
                        }
                    }
                    if value
                        .get("hashAlgorithm")
                        .and_then(Value::as_str)
                        .is_some_and(|h| h != "sha256")
                    {
                        self.refuse(
                            &format!("{at}.hashAlgorithm"),
                            "imgate verifies sha256 signatures",
                        );
                    }
                    if let Some(pem) = value.get("data").and_then(Value::as_str) {
                        self.pem_key(pem, &format!("{at}.data"));
                    }
                }
                "keyless" => {
                    if value.get("roots").is_some() || value.get("root").is_some() {
                        self.refuse(&at, "custom Fulcio roots: imgate needs them in a trusted root (trustRoot); set it by hand");
                    }
                    for (i, identity) in value
                        .get("identities")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        self.keyless(identity, &format!("{at}.identities[{i}]"));
                    }
                }
                "ctlog" => {
                    if let Some(url) = value.get("url").and_then(Value::as_str) {
                        if url.trim_end_matches('/') != PUBLIC_REKOR {
                            self.refuse(&format!("{at}.url"), "a private Rekor: imgate needs its trusted root (trustRoot); set it by hand");
                        }
                    }
                    for field in ["rekorPubKey", "ctLogPubKey", "tsaCertChain"] {
                        if value.get(field).is_some() {
                            self.refuse(&format!("{at}.{field}"), "log and timestamp keys: imgate takes them from a trusted root (trustRoot); set it by hand");
                        }
                    }
                    ignore_tlog =
                        value.get("insecureIgnoreTlog").and_then(Value::as_bool) == Some(true);
                    if value.get("insecureIgnoreSCT").and_then(Value::as_bool) == Some(true) {
                        self.finding(
                            FindingKind::Stricter,
                            &format!("{at}.insecureIgnoreSCT"),
                            "imgate always checks the certificate's SCT",
                        );
                    }
                }
                "source" | "tuf" | "certificate" => {
                    self.refuse(&at, &format!("`{key}` has no imgate equivalent"))
                }
                _ => self.refuse(&at, &format!("`{key}` is not understood by the importer")),
            }
        }
        for entry in &mut self.keys[keys_before..] {
            entry.1 = ignore_tlog;
        }
        if ignore_tlog && self.keyless.len() > keyless_before {
            self.finding(FindingKind::Stricter, &format!("{path}.ctlog.insecureIgnoreTlog"), "imgate always requires a transparency-log entry or timestamp for keyless signatures");
        }
    }

    /// `subject` (a Kyverno wildcard) or `subjectRegExp`, as imgate matches.
    fn identity(&mut self, v: &Value, path: &str, exact: &str, regexp: &str) -> Option<Match> {
        let exact_value = v
            .get(exact)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let re_value = v
            .get(regexp)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let m = match (exact_value, re_value) {
            (Some(text), None) if text.contains(['*', '?']) => Match::RegExp(wildcard_regex(text)),
            (Some(text), None) => Match::Exact(text.to_string()),
            (None, Some(re)) => {
                let bare = re.strip_prefix('^').unwrap_or(re);
                let bare = bare.strip_suffix('$').unwrap_or(bare);
                if regex::Regex::new(bare).is_err() {
                    self.refuse(
                        &format!("{path}.{regexp}"),
                        "a regular expression imgate cannot compile",
                    );
                    return None;
                }
                if bare.len() == re.len() {
                    self.finding(
                        FindingKind::Stricter,
                        &format!("{path}.{regexp}"),
                        &format!("imgate anchors regular expressions: `{re}` must match the whole value (cosign matched it anywhere in it)"),
                    );
                }
                Match::RegExp(bare.to_string())
            }
            (Some(_), Some(_)) => {
                self.refuse(path, &format!("both {exact} and {regexp}"));
                return None;
            }
            (None, None) => {
                self.refuse(
                    path,
                    &format!("no {exact}: imgate needs the signer's {exact}"),
                );
                return None;
            }
        };
        Some(m)
    }

    /// The signers read so far (`None` when something was refused).
    pub fn finish(mut self, path: &str) -> Option<Signers> {
        if self.refused {
            return None;
        }
        if self.keys.is_empty() && self.keyless.is_empty() {
            self.refuse(path, "no signer imgate can check");
            return None;
        }
        let any_required = self.keys.iter().any(|(_, ignore)| !ignore);
        let all_required = self.keys.iter().all(|(_, ignore)| !ignore);
        let tlog = match (self.keys.is_empty(), any_required) {
            (true, _) => TlogSetting::IfPresent,
            (false, true) => TlogSetting::Required,
            (false, false) => TlogSetting::Ignore,
        };
        if !self.keys.is_empty() && any_required {
            self.finding(
                FindingKind::Note,
                path,
                if all_required {
                    "Kyverno checked key signatures against the Rekor log (its default): the rule says tlog: required; key-only signatures (imgate sign, cosign --tlog-upload=false) need tlog: ignore"
                } else {
                    "some keys ignored the Rekor log and some did not: the rule says tlog: required for all"
                },
            );
        }
        let mut annotations = BTreeMap::new();
        let differing = self.annotations.windows(2).any(|w| w[0] != w[1]);
        for a in std::mem::take(&mut self.annotations) {
            annotations.extend(a);
        }
        if differing {
            self.finding(
                FindingKind::Stricter,
                path,
                "signers required different annotations: imgate requires all of them of every signature",
            );
        }
        Some(Signers {
            keys: self.keys.into_iter().map(|(pem, _)| pem).collect(),
            keyless: self.keyless,
            tlog,
            annotations,
            signature: true,
            attestations: Vec::new(),
        })
    }
}

/// A Kyverno wildcard (`*`, `?`) as an anchored regular expression.
fn wildcard_regex(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    pub(crate) const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8nXRh950IZbRj8Ra/N9sbqOPZrfM\n5/KAQN0/KjHcorm/J5yctVd7iEcnessRQjU917hmKO6JWVGHpDguIyakZA==\n-----END PUBLIC KEY-----";

    fn signers(yaml: &str) -> (Option<Signers>, Imported) {
        let mut imported = Imported::default();
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let mut s = Signing::new(&mut imported, "ClusterPolicy/t");
        s.attestors(&value, "spec.rules[0].verifyImages[0].attestors");
        let out = s.finish("spec.rules[0].verifyImages[0]");
        (out, imported)
    }

    #[test]
    fn a_key_and_a_keyless_identity() {
        let yaml = format!(
            "- count: 1\n  entries:\n  - keys:\n      publicKeys: |\n{}\n      rekor: {{ignoreTlog: true}}\n  - keyless:\n      subject: 'https://github.com/org/*'\n      issuer: https://token.actions.githubusercontent.com\n      additionalExtensions: {{githubWorkflowRepository: org/app}}\n",
            KEY.lines().map(|l| format!("        {l}")).collect::<Vec<_>>().join("\n")
        );
        let (s, imported) = signers(&yaml);
        let s = s.unwrap_or_else(|| panic!("{:?}", imported.findings));
        assert_eq!(s.keys.len(), 1);
        assert_eq!(s.tlog, TlogSetting::Ignore);
        assert_eq!(
            s.keyless[0].subject,
            Match::RegExp("https://github\\.com/org/.*".into())
        );
        assert_eq!(
            s.keyless[0].extensions["github-workflow-repository"],
            "org/app"
        );
    }

    #[test]
    fn what_imgate_cannot_check_is_refused() {
        for yaml in [
            "- entries: [{keys: {kms: 'gcpkms://x'}}]",
            "- entries: [{keys: {publicKeys: 'k8s://ns/secret'}}]",
            "- entries: [{keys: {secret: {name: s, namespace: n}}}]",
            "- entries: [{certificates: {cert: x}}]",
            "- count: 2\n  entries: [{keyless: {subject: a, issuer: b}}, {keyless: {subject: c, issuer: d}}]",
            "- entries: [{keyless: {subject: a, issuer: b}}]\n- entries: [{keyless: {subject: c, issuer: d}}]",
            "- entries: [{keyless: {subject: a, issuer: b, roots: x}}]",
            "- entries: [{keyless: {subject: a, issuer: b, rekor: {url: 'https://rekor.example'}}}]",
            "- entries: [{keys: {publicKeys: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----'}}]",
        ] {
            let (s, imported) = signers(yaml);
            assert!(s.is_none(), "{yaml}");
            assert!(imported.findings.iter().any(|f| f.kind == FindingKind::Refused), "{yaml}");
        }
    }

    #[test]
    fn kyverno_checks_the_log_for_keys_by_default() {
        let yaml = format!(
            "- entries:\n  - keys:\n      publicKeys: \"{}\"\n",
            KEY.replace('\n', "\\n")
        );
        let (s, imported) = signers(&yaml);
        assert_eq!(s.unwrap().tlog, TlogSetting::Required);
        assert!(imported
            .findings
            .iter()
            .any(|f| f.message.contains("Rekor")));
    }
}
