//! Image name patterns: globs over normalised references (`registry/repo`).
//!
//! The registry part is matched as a whole host, literally (no wildcards), so
//! `registry.example.com/**` can never match `registry.example.com.evil.io/x`.
//! The repository part is matched segment by segment: `*` matches within one
//! path segment (never a `/`), a segment of just `**` matches any number of
//! segments. Patterns are normalised like references, so `nginx` means
//! `docker.io/library/nginx` and `docker.io/*` means `docker.io/library/*`
//! (Docker Hub's official images), while `docker.io/**` is all of Docker Hub.
//! Patterns name repositories only: a tag or digest in a pattern is an error.

use std::fmt;

use crate::reference::{ImageRef, DOCKER_HUB};

/// Why a string is not a valid image pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One segment of the repository part.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// `**`: zero or more whole segments.
    AnyDepth,
    /// A literal segment, possibly with `*` wildcards inside it.
    Glob(String),
}

/// A parsed image pattern; see the module docs for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePattern {
    raw: String,
    registry: String,
    segments: Vec<Segment>,
}

impl ImagePattern {
    /// Parses and normalises a pattern.
    pub fn parse(pattern: &str) -> Result<ImagePattern, PatternError> {
        let error = |reason: &str| PatternError {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        if pattern.is_empty() {
            return Err(error("empty"));
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(error("contains white space"));
        }
        if pattern.contains('@') {
            return Err(error("patterns name repositories; remove the digest"));
        }
        if !pattern.contains('/') && pattern.contains(['.', ':']) {
            // Docker would read `registry.example.com` as a Docker Hub image;
            // whoever wrote it meant the registry.
            return Err(error(
                "looks like a registry host; write host/** for the whole registry",
            ));
        }
        // Docker's rule: the first component is a registry when it has a `.`
        // or `:` or is `localhost`. Wildcards never make a registry.
        let (registry, repository) = match pattern.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_ascii_lowercase(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), pattern.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if registry.contains('*') {
            return Err(error(
                "wildcards are not allowed in the registry host; list each registry",
            ));
        }
        if !valid_host(&registry) {
            return Err(error("bad registry host"));
        }
        if repository.contains(':') {
            return Err(error("patterns name repositories; remove the tag"));
        }
        if repository.is_empty() {
            return Err(error(
                "no repository part; use registry/** for a whole registry",
            ));
        }
        let mut segments = Vec::new();
        for segment in repository.split('/') {
            if segment.is_empty() {
                return Err(error("empty path segment"));
            }
            if segment == "**" {
                // `**/**` is the same as `**`; keep one.
                if segments.last() != Some(&Segment::AnyDepth) {
                    segments.push(Segment::AnyDepth);
                }
                continue;
            }
            if segment.contains("**") {
                return Err(error("`**` must be a whole path segment"));
            }
            if !segment
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-*".contains(c))
            {
                return Err(error(
                    "repository segments use lower-case letters, digits, . _ - and * only",
                ));
            }
            segments.push(Segment::Glob(segment.to_string()));
        }
        // Docker Hub's one-segment names are official images under `library/`.
        if registry == DOCKER_HUB && segments.len() == 1 {
            if let Some(Segment::Glob(_)) = segments.first() {
                segments.insert(0, Segment::Glob("library".to_string()));
            }
        }
        Ok(ImagePattern {
            raw: pattern.to_string(),
            registry,
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The normalised registry host it applies to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Whether `image`'s name (registry and repository) matches.
    pub fn matches(&self, image: &ImageRef) -> bool {
        self.matches_name(&image.registry, &image.repository)
    }

    /// Whether `registry` and `repository` (already normalised) match.
    pub fn matches_name(&self, registry: &str, repository: &str) -> bool {
        if !registry.eq_ignore_ascii_case(&self.registry) {
            return false;
        }
        let path: Vec<&str> = repository.split('/').collect();
        match_segments(&self.segments, &path)
    }

    /// Whether everything `other` matches is also matched by `self`
    /// (conservative: `false` when unsure). Used to warn about rules that no
    /// trusted registry covers.
    pub fn covers(&self, other: &ImagePattern) -> bool {
        self.registry == other.registry && covers_segments(&self.segments, &other.segments)
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// A pattern as read from the policy file: parse errors are kept rather than
/// raised, so that validation can name the exact field (`rules[1].images[0]`)
/// — serde only knows the enclosing list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternSpec(pub Result<ImagePattern, PatternError>);

impl<'de> serde::Deserialize<'de> for PatternSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Ok(PatternSpec(ImagePattern::parse(&raw)))
    }
}

impl serde::Serialize for PatternSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(pattern) => serializer.serialize_str(pattern.as_str()),
            Err(err) => serializer.serialize_str(&err.pattern),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ImagePattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ImagePattern::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ImagePattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn match_segments(pattern: &[Segment], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((Segment::AnyDepth, rest)) => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((Segment::Glob(glob), rest)) => match path.split_first() {
            Some((first, path_rest)) => glob_match(glob, first) && match_segments(rest, path_rest),
            None => false,
        },
    }
}

/// `*` matches any run of characters within one segment.
fn glob_match(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..];
    if !rest.ends_with(last) {
        return false;
    }
    rest = &rest[..rest.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn covers_segments(outer: &[Segment], inner: &[Segment]) -> bool {
    match (outer.split_first(), inner.split_first()) {
        (None, None) => true,
        (Some((Segment::AnyDepth, o_rest)), _) => {
            (0..=inner.len()).any(|skip| covers_segments(o_rest, &inner[skip..]))
        }
        (Some((Segment::Glob(o), o_rest)), Some((Segment::Glob(i), i_rest))) => {
            let segment_covered = o == i || (!i.contains('*') && glob_match(o, i)) || o == "*";
            segment_covered && covers_segments(o_rest, i_rest)
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn image(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[rstest]
    #[case("registry.example.com/**", "registry.example.com/app:v1", true)]
    #[case("registry.example.com/**", "registry.example.com/team/app/x:v1", true)]
    #[case("registry.example.com/**", "registry.example.com.evil.io/x:v1", false)]
    #[case("registry.example.com/**", "evil.io/registry.example.com/x:v1", false)]
    #[case("registry.example.com/**", "registry.example.com:5000/x", false)]
    #[case("trusted.io/**", "trusted.io.evil.com/x", false)]
    #[case("trusted.io/**", "Trusted.IO/x", true)]
    #[case("docker.io/library/*", "nginx", true)]
    #[case("docker.io/library/*", "docker.io/library/nginx:1.27", true)]
    #[case("docker.io/library/*", "bitnami/nginx", false)]
    #[case("docker.io/library/*", "docker.io/library/a/b", false)]
    #[case("nginx", "docker.io/library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000", true)]
    #[case("nginx", "index.docker.io/library/nginx", true)]
    #[case("nginx", "nginx2", false)]
    #[case("docker.io/*", "nginx", true)]
    #[case("docker.io/*", "bitnami/nginx", false)]
    #[case("docker.io/**", "bitnami/nginx", true)]
    #[case("bitnami/*", "bitnami/nginx", true)]
    #[case("ghcr.io/acme/*", "ghcr.io/acme/api", true)]
    #[case("ghcr.io/acme/*", "ghcr.io/acme/team/api", false)]
    #[case("ghcr.io/acme/**", "ghcr.io/acme/team/api", true)]
    #[case("ghcr.io/acme/**", "ghcr.io/acmecorp/api", false)]
    #[case("ghcr.io/acme/app-*", "ghcr.io/acme/app-web", true)]
    #[case("ghcr.io/acme/app-*", "ghcr.io/acme/web", false)]
    #[case("ghcr.io/*/api", "ghcr.io/acme/api", true)]
    #[case("ghcr.io/**/api", "ghcr.io/a/b/c/api", true)]
    #[case("ghcr.io/**/api", "ghcr.io/api", true)]
    #[case("ghcr.io/**/api", "ghcr.io/a/api2", false)]
    #[case("localhost:5000/**", "localhost:5000/x", true)]
    #[case("localhost:5000/**", "localhost:5001/x", false)]
    #[case("localhost/**", "localhost:5000/x", false)]
    fn matches(#[case] pattern: &str, #[case] reference: &str, #[case] expected: bool) {
        let p = ImagePattern::parse(pattern).unwrap();
        assert_eq!(
            p.matches(&image(reference)),
            expected,
            "{pattern} vs {reference}"
        );
    }

    #[rstest]
    #[case("")]
    #[case("*.example.com/**")]
    #[case("registry.example.com")]
    #[case("registry.example.com/")]
    #[case("registry.example.com//x")]
    #[case("registry.example.com/app:v1")]
    #[case("nginx@sha256:abc")]
    #[case("ghcr.io/a**")]
    #[case("ghcr.io/App")]
    #[case("bad_host.io:99999/x")]
    #[case("ghcr.io/a b")]
    fn rejects(#[case] pattern: &str) {
        assert!(ImagePattern::parse(pattern).is_err(), "{pattern}");
    }

    #[rstest]
    #[case("registry.example.com/**", "registry.example.com/team/*", true)]
    #[case("registry.example.com/**", "registry.example.com/**", true)]
    #[case("registry.example.com/team/*", "registry.example.com/**", false)]
    #[case("docker.io/library/*", "nginx", true)]
    #[case("docker.io/library/*", "docker.io/**", false)]
    #[case("ghcr.io/acme/*", "ghcr.io/acme/app-*", true)]
    #[case("ghcr.io/acme/app-*", "ghcr.io/acme/*", false)]
    #[case("a.io/**", "b.io/**", false)]
    fn covers(#[case] outer: &str, #[case] inner: &str, #[case] expected: bool) {
        let o = ImagePattern::parse(outer).unwrap();
        let i = ImagePattern::parse(inner).unwrap();
        assert_eq!(o.covers(&i), expected, "{outer} covers {inner}");
    }

    #[test]
    fn glob_within_a_segment() {
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
