//! Key references as cosign spells them: a file path, `env://VAR`, a
//! `pkcs11:` URI (RFC 7512) or `hashivault://NAME`. Cloud KMS references are
//! recognised only to refuse them with a clear message.

use crate::error::KeyError;

/// Scheme of a key in Vault or OpenBao transit.
pub const HASHIVAULT_PREFIX: &str = "hashivault://";
/// Scheme of a key on a PKCS#11 token.
pub const PKCS11_PREFIX: &str = "pkcs11:";
/// Vault key names are path segments; this bound and the character set
/// keep a name from reaching another path (`../sys`) or another mount.
const MAX_VAULT_KEY_NAME_LEN: usize = 128;
/// Key references cosign accepts that imgate does not support.
const UNSUPPORTED_SCHEMES: &[&str] = &[
    "awskms://",
    "gcpkms://",
    "azurekms://",
    "k8s://",
    "gitlab://",
];

/// Where a private key lives, judged from its reference alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReference {
    /// A PEM read from a path or `env://VAR`.
    Pem(String),
    /// A key on a PKCS#11 token; the full URI.
    Pkcs11(String),
    /// A key in Vault/OpenBao transit; the key's name.
    HashiVault(String),
}

impl KeyReference {
    /// Classifies `spec`. A cloud KMS reference is
    /// [`KeyError::UnsupportedKms`]; a `hashivault://` name that could leave
    /// its mount is [`KeyError::Malformed`].
    ///
    /// ```no_run
    /// let key = imgate_keys::KeyReference::parse("hashivault://release").unwrap();
    /// ```
    pub fn parse(spec: &str) -> Result<KeyReference, KeyError> {
        if let Some(scheme) = UNSUPPORTED_SCHEMES.iter().find(|s| has_prefix(spec, s)) {
            return Err(KeyError::UnsupportedKms {
                scheme: scheme.trim_end_matches("://").to_string(),
            });
        }
        if has_prefix(spec, PKCS11_PREFIX) {
            return Ok(KeyReference::Pkcs11(spec.to_string()));
        }
        if has_prefix(spec, HASHIVAULT_PREFIX) {
            let name = &spec[HASHIVAULT_PREFIX.len()..];
            validate_vault_key_name(name).map_err(|detail| KeyError::Malformed {
                key: spec.to_string(),
                detail,
            })?;
            return Ok(KeyReference::HashiVault(name.to_string()));
        }
        Ok(KeyReference::Pem(spec.to_string()))
    }
}

fn has_prefix(spec: &str, prefix: &str) -> bool {
    spec.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Vault accepts more in a key name, but a name that needs escaping would
/// also need it in every CI file that spells it; letters, digits, `-`, `_`
/// and `.` (not as the whole name) cover every name in practice.
pub(crate) fn validate_vault_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no key name after hashivault://".to_string());
    }
    if name.len() > MAX_VAULT_KEY_NAME_LEN {
        return Err(format!(
            "key name longer than {MAX_VAULT_KEY_NAME_LEN} characters"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a key name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "character {bad:?} in the key name (use letters, digits, '-', '_' and '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("cosign.key", KeyReference::Pem("cosign.key".into()))]
    #[case("env://KEY", KeyReference::Pem("env://KEY".into()))]
    #[case("pkcs11:token=t;object=o", KeyReference::Pkcs11("pkcs11:token=t;object=o".into()))]
    #[case("hashivault://release-key", KeyReference::HashiVault("release-key".into()))]
    #[case("HashiVault://k.v2", KeyReference::HashiVault("k.v2".into()))]
    fn references_are_classified(#[case] spec: &str, #[case] expected: KeyReference) {
        assert_eq!(KeyReference::parse(spec).unwrap(), expected);
    }

    #[rstest]
    #[case("awskms:///arn:aws:kms:us-east-1:1:key/k", "awskms")]
    #[case("gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k", "gcpkms")]
    #[case("azurekms://vault.vault.azure.net/k", "azurekms")]
    fn cloud_kms_is_refused_by_name(#[case] spec: &str, #[case] scheme: &str) {
        let err = KeyReference::parse(spec).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(scheme) && text.contains("not supported"),
            "{text}"
        );
    }

    #[rstest]
    #[case("hashivault://")]
    #[case("hashivault://../sys/seal")]
    #[case("hashivault://a/b")]
    #[case("hashivault://a?b")]
    #[case("hashivault://..")]
    fn vault_names_cannot_leave_the_mount(#[case] spec: &str) {
        let err = KeyReference::parse(spec).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
    }
}
