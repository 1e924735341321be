//! Kubernetes object names: namespaces are DNS-1123 labels, secrets and
//! service accounts DNS-1123 subdomains. imgate checks names it takes from
//! objects before it uses them in an API path or a policy.

/// Longest DNS-1123 subdomain (secret and service account names).
pub const MAX_SUBDOMAIN: usize = 253;
/// Longest DNS-1123 label (namespace names).
pub const MAX_LABEL: usize = 63;

/// Whether `name` is a DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting
/// and ending with a letter or digit.
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= MAX_LABEL && label_shape(name)
}

/// Whether `name` is a DNS-1123 subdomain (as Kubernetes checks it): at
/// most 253 characters of dot-separated labels. Such a name can never be
/// `.`, `..` or hold a `/` or `%`, so it cannot change which API path it
/// is put in.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_SUBDOMAIN && name.split('.').all(label_shape)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, of any length.
fn label_shape(label: &str) -> bool {
    let bytes = label.as_bytes();
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(bytes.first())
        && edge(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for (name, label, subdomain) in [
            ("default", true, true),
            ("a", true, true),
            ("kube-system", true, true),
            ("a.b", false, true),
            ("-a", false, false),
            ("a-", false, false),
            ("A", false, false),
            ("", false, false),
            (".", false, false),
            ("..", false, false),
            ("a/b", false, false),
            ("a%2fb", false, false),
            ("a..b", false, false),
        ] {
            assert_eq!(is_dns1123_label(name), label, "{name:?}");
            assert_eq!(is_dns1123_subdomain(name), subdomain, "{name:?}");
        }
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label(&"a".repeat(63)));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }
}
