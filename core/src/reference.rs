//! Image references with Docker's normalisation rules.
//!
//! `nginx` is `docker.io/library/nginx:latest`; a first component with a `.`
//! or `:` (or `localhost`) is a registry; `repo:tag@sha256:…` is pinned by its
//! digest and keeps the tag for people to read. Parsing is strict and its
//! errors point at the bad part; `Display` prints the fully qualified form and
//! parses back to the same value.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The registry Docker Hub references normalise to.
pub const DOCKER_HUB: &str = "docker.io";
/// Longest name (registry and repository) Docker accepts.
const MAX_NAME_LEN: usize = 255;
/// Longest tag Docker accepts.
const MAX_TAG_LEN: usize = 128;

/// A fully qualified image reference.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageRef {
    /// Registry host with optional port, e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/nginx`.
    pub repository: String,
    /// Tag, if any. A reference with neither tag nor digest gets `latest`.
    pub tag: Option<String>,
    /// Digest, if pinned. When present it, not the tag, names the content.
    pub digest: Option<Digest>,
}

/// Why a string is not a valid image reference; each variant names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Nothing to parse.
    #[error("empty image reference")]
    Empty,
    /// White space or control characters anywhere.
    #[error("invalid image reference {reference:?}: contains white space or control characters")]
    Whitespace {
        /// The whole reference.
        reference: String,
    },
    /// The registry part is not a `host[:port]`.
    #[error("invalid image reference {reference:?}: bad registry {registry:?}")]
    Registry {
        /// The whole reference.
        reference: String,
        /// The registry part.
        registry: String,
    },
    /// A repository path component is not `[a-z0-9]+` joined by `.`, `_`, `__` or `-`.
    #[error("invalid image reference {reference:?}: bad repository component {component:?} (lower-case letters, digits and single separators . _ __ - only)")]
    Repository {
        /// The whole reference.
        reference: String,
        /// The offending path component.
        component: String,
    },
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("invalid image reference {reference:?}: bad tag {tag:?}")]
    Tag {
        /// The whole reference.
        reference: String,
        /// The tag.
        tag: String,
    },
    /// The digest part is not a valid digest.
    #[error("invalid image reference {reference:?}: {source}")]
    Digest {
        /// The whole reference.
        reference: String,
        /// What is wrong with the digest.
        #[source]
        source: crate::digest::DigestError,
    },
    /// Registry plus repository longer than 255 characters.
    #[error("invalid image reference {reference:?}: name longer than {MAX_NAME_LEN} characters")]
    TooLong {
        /// The whole reference.
        reference: String,
    },
}

impl ImageRef {
    /// Parses and normalises a reference as Docker does.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let reference = || input.to_string();
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ReferenceError::Whitespace {
                reference: reference(),
            });
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).map_err(|source| ReferenceError::Digest {
                    reference: reference(),
                    source,
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // The tag separator is the last ':' after the last '/', so that a
        // registry port (`host:5000/x`) is not mistaken for a tag.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (
                    &name_and_tag[..at],
                    Some(name_and_tag[at + 1..].to_string()),
                )
            }
            None => (name_and_tag, None),
        };
        let (registry, repository) = split_registry(name);
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_registry(&registry) {
            return Err(ReferenceError::Registry {
                reference: reference(),
                registry,
            });
        }
        if repository.is_empty() {
            return Err(ReferenceError::Repository {
                reference: reference(),
                component: String::new(),
            });
        }
        for component in repository.split('/') {
            if !valid_path_component(component) {
                return Err(ReferenceError::Repository {
                    reference: reference(),
                    component: component.to_string(),
                });
            }
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                reference: reference(),
            });
        }
        if let Some(tag) = &tag {
            if !valid_tag(tag) {
                return Err(ReferenceError::Tag {
                    reference: reference(),
                    tag: tag.clone(),
                });
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`: the name without tag or digest (cosign's `docker-reference`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same name and tag pinned to `digest`: `registry/repo:tag@digest`.
    pub fn pinned(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository at another tag (no digest): e.g. `sha256-<hex>.sig`.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository at `digest` only (no tag).
    pub fn at_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The host to talk to for the registry API (Docker Hub's API host differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// Splits `name` into registry and repository by Docker's rule: the first
/// component is a registry when it has a `.` or `:`, is `localhost`, or has
/// upper-case letters (which a repository may not).
fn split_registry(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        // IPv6 literal: [::1]:5000
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("ok", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    host == "ok" && registry.starts_with('[')
        || (!host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

/// `[a-z0-9]+` runs separated by exactly one of `.`, `_`, `__`, or any number of `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[rstest]
    #[case("nginx", "docker.io/library/nginx:latest")]
    #[case("nginx:1.27", "docker.io/library/nginx:1.27")]
    #[case("library/nginx", "docker.io/library/nginx:latest")]
    #[case("bitnami/redis:7", "docker.io/bitnami/redis:7")]
    #[case("docker.io/nginx", "docker.io/library/nginx:latest")]
    #[case("index.docker.io/nginx", "docker.io/library/nginx:latest")]
    #[case("localhost/app", "localhost/app:latest")]
    #[case("localhost:5000/app:v1", "localhost:5000/app:v1")]
    #[case("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest")]
    #[case("[::1]:5000/app", "[::1]:5000/app:latest")]
    #[case("ghcr.io/org/app:v1.2.3", "ghcr.io/org/app:v1.2.3")]
    #[case("Registry/app", "Registry/app:latest")]
    #[case("a/b/c/d", "docker.io/a/b/c/d:latest")]
    #[case("my_app__x-y.z", "docker.io/library/my_app__x-y.z:latest")]
    fn normalises(#[case] input: &str, #[case] expected: &str) {
        let r = ImageRef::parse(input).unwrap();
        assert_eq!(r.to_string(), expected);
        assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r, "round trip");
    }

    #[test]
    fn tag_and_digest() {
        let r = ImageRef::parse(&format!("ghcr.io/o/app:v1@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_ref().unwrap().as_str(), D);
        assert_eq!(
            r.reference(),
            D,
            "the digest, not the tag, names the content"
        );
        let r = ImageRef::parse(&format!("nginx@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("docker.io/library/nginx@{D}"));
        let r = ImageRef::parse(&format!("localhost:5000/app@{D}")).unwrap();
        assert_eq!(r.registry, "localhost:5000");
    }

    #[rstest]
    #[case("", "empty")]
    #[case("nginx:", "bad tag")]
    #[case("Nginx", "bad repository component \"Nginx\"")]
    #[case("docker.io/Library/nginx", "bad repository component \"Library\"")]
    #[case("ghcr.io/o//app", "bad repository component \"\"")]
    #[case("ghcr.io/o/app:-x", "bad tag \"-x\"")]
    #[case("ghcr.io/o/app@sha256:12", "invalid digest")]
    #[case("ghcr.io/o/app@", "invalid digest")]
    #[case("bad_host.io/app", "bad registry")]
    #[case("host:port/app", "bad registry")]
    #[case("ghcr.io/o/app:v1 ", "white space")]
    #[case("ghcr.io/o/a..b", "bad repository component")]
    #[case("ghcr.io/o/a___b", "bad repository component")]
    #[case("ghcr.io/o/-a", "bad repository component")]
    fn rejects(#[case] input: &str, #[case] message: &str) {
        let err = ImageRef::parse(input).unwrap_err().to_string();
        assert!(err.contains(message), "{input:?}: {err}");
    }

    #[test]
    fn rejects_long_names_and_tags() {
        let long = format!("ghcr.io/{}", "a".repeat(260));
        assert!(matches!(
            ImageRef::parse(&long),
            Err(ReferenceError::TooLong { .. })
        ));
        let tag = format!("ghcr.io/a:{}", "t".repeat(129));
        assert!(matches!(
            ImageRef::parse(&tag),
            Err(ReferenceError::Tag { .. })
        ));
    }

    #[test]
    fn helpers() {
        let r = ImageRef::parse("nginx:1").unwrap();
        assert_eq!(r.name(), "docker.io/library/nginx");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let d = Digest::parse(D).unwrap();
        assert_eq!(
            r.pinned(d.clone()).to_string(),
            format!("docker.io/library/nginx:1@{D}")
        );
        assert_eq!(r.at_digest(d.clone()).reference(), D);
        assert_eq!(
            r.with_tag(&d.tag_form()).to_string(),
            format!("docker.io/library/nginx:{}", d.tag_form())
        );
    }
}
