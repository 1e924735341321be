//! imgate's side of a translation: a repository pattern as a registry and
//! path segments, the imgate pattern text for it, and the strings that
//! spell the images it matches, either as written in a pod spec (raw: what
//! Kyverno's `validate` rules compare) or normalised the way Kyverno's
//! `verifyImages` compares them (`docker.io/library/nginx:1.25`).
//!
//! Also the two ways a Kyverno wildcard becomes an imgate pattern: the
//! boundary-safe reading of an allow-list entry ([`allow_candidate`]: `*`
//! stays inside one path segment, so `nginx*` is `docker.io/library/nginx*`
//! and never `nginx.evil.example/x`), and a pattern covering everything a
//! verification rule applied to ([`cover_candidate`]). Both are only
//! candidates: the importer proves each before using it.

use super::automaton::{CharSet, Re};
use crate::policy::ImagePattern;
use crate::reference::DOCKER_HUB;

/// One path segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// Literal characters and `*` (within the segment).
    Glob(String),
    /// `**`: any number of segments.
    AnyDepth,
}

/// A repository pattern: a registry host and path segments (Docker Hub's
/// official images with their `library/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NamePattern {
    pub registry: String,
    pub segments: Vec<Seg>,
}

/// Which strings a Kyverno wildcard is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum World {
    /// The image field as written (`validate`, `ValidatingPolicy` CEL).
    Raw,
    /// Registry, path with `library/`, then `:tag` or `@digest`
    /// (`verifyImages`).
    Normalised,
}

impl NamePattern {
    /// The pattern as imgate's policy writes it.
    pub fn text(&self) -> String {
        let path: Vec<&str> = self
            .segments
            .iter()
            .map(|s| match s {
                Seg::Glob(g) => g.as_str(),
                Seg::AnyDepth => "**",
            })
            .collect();
        format!("{}/{}", self.registry, path.join("/"))
    }

    /// imgate's own parse of [`NamePattern::text`]; an error means imgate
    /// cannot express it.
    pub fn image_pattern(&self) -> Result<ImagePattern, String> {
        let pattern = ImagePattern::parse(&self.text()).map_err(|e| e.reason)?;
        if pattern.registry() != self.registry {
            return Err(format!("reads as registry {}", pattern.registry()));
        }
        Ok(pattern)
    }

    /// The repository paths it matches (a superset only in which
    /// separators a segment may contain).
    pub fn path_re(&self) -> Re {
        path_re(&self.segments)
    }

    /// The ways a pod spec may write the names it matches, without tag or
    /// digest: `registry/path`, and for Docker Hub also without the
    /// registry and, for official images, without `library/`.
    pub fn raw_forms(&self) -> Vec<Re> {
        let full =
            |prefix: &str, segments: &[Seg]| Re::Seq(vec![Re::lit(prefix), path_re(segments)]);
        let mut forms = Vec::new();
        if self.registry == DOCKER_HUB {
            if let [Seg::Glob(library), Seg::Glob(_)] = self.segments.as_slice() {
                if library == "library" {
                    forms.push(full("", &self.segments[1..]));
                    forms.push(full("docker.io/", &self.segments[1..]));
                }
            }
            forms.push(full("", &self.segments));
        }
        forms.push(full(&format!("{}/", self.registry), &self.segments));
        if self.registry == DOCKER_HUB {
            forms.push(full("index.docker.io/", &self.segments));
        }
        forms
    }

    /// Every string of `world` that names one of its images.
    pub fn spelling(&self, world: World) -> Re {
        match world {
            World::Normalised => Re::Seq(vec![
                Re::lit(&format!("{}/", self.registry)),
                self.path_re(),
                Re::Alt(vec![tag_suffix(), digest_suffix()]),
            ]),
            World::Raw => Re::Seq(vec![
                Re::Alt(self.raw_forms()),
                Re::opt(tag_suffix()),
                Re::opt(digest_suffix()),
            ]),
        }
    }

    /// A few names it matches, for examples: each `*` filled with nothing
    /// (or `x` where nothing is not a valid segment), `**` with one and
    /// with two segments.
    pub fn sample_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for depth in [1, 2] {
            let mut parts = Vec::new();
            for seg in &self.segments {
                match seg {
                    Seg::Glob(g) => {
                        let empty = g.replace('*', "");
                        let valid = !empty.is_empty()
                            && empty.starts_with(|c: char| c.is_ascii_alphanumeric())
                            && empty.ends_with(|c: char| c.is_ascii_alphanumeric());
                        parts.push(if valid { empty } else { g.replace('*', "x") });
                    }
                    Seg::AnyDepth => {
                        parts.push(if depth == 1 { "app" } else { "team/app" }.to_string())
                    }
                }
            }
            let name = format!("{}/{}", self.registry, parts.join("/"));
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

fn path_re(segments: &[Seg]) -> Re {
    let seg_chars = || Re::plus(Re::Set(CharSet::segment()));
    // `**` absorbs the separator before it, so that zero segments leave no
    // `//`; alone it must still name at least one segment.
    if let [Seg::AnyDepth] = segments {
        return Re::Seq(vec![
            seg_chars(),
            Re::Star(Box::new(Re::Seq(vec![Re::lit("/"), seg_chars()]))),
        ]);
    }
    let mut parts = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            Seg::AnyDepth => {
                let more = Re::Star(Box::new(Re::Seq(vec![Re::lit("/"), seg_chars()])));
                if i == 0 {
                    // `**/x`: zero or more segments, each followed by `/`.
                    parts.push(Re::Star(Box::new(Re::Seq(vec![seg_chars(), Re::lit("/")]))));
                } else {
                    parts.push(more);
                }
            }
            Seg::Glob(glob) => {
                // A leading `**` already ends with its `/`.
                if i > 1 || (i == 1 && segments[0] != Seg::AnyDepth) {
                    parts.push(Re::lit("/"));
                }
                for (j, piece) in glob.split('*').enumerate() {
                    if j > 0 {
                        parts.push(Re::Star(Box::new(Re::Set(CharSet::segment()))));
                    }
                    if !piece.is_empty() {
                        parts.push(Re::lit(piece));
                    }
                }
            }
        }
    }
    Re::Seq(parts)
}

/// `@` and a sha256 or sha512 digest.
pub(super) fn digest_suffix() -> Re {
    Re::Seq(vec![
        Re::lit("@sha"),
        Re::Alt(vec![Re::lit("256"), Re::lit("512")]),
        Re::lit(":"),
        Re::plus(Re::Set(CharSet::hex())),
    ])
}

/// `:` and a tag.
pub(super) fn tag_suffix() -> Re {
    Re::Seq(vec![Re::lit(":"), Re::plus(Re::Set(CharSet::tag()))])
}

/// Valid references of `world`, whatever their registry (for questions
/// that must not count strings no pod could carry).
pub(super) fn any_reference(world: World) -> Re {
    let host = Re::Seq(vec![
        Re::plus(Re::Set(CharSet::host())),
        Re::opt(Re::Seq(vec![
            Re::lit(":"),
            Re::plus(Re::Set(CharSet::digit())),
        ])),
    ]);
    let path = path_re(&[Seg::AnyDepth]);
    match world {
        World::Normalised => Re::Seq(vec![
            host,
            Re::lit("/"),
            path,
            Re::Alt(vec![tag_suffix(), digest_suffix()]),
        ]),
        World::Raw => Re::Seq(vec![
            Re::opt(Re::Seq(vec![host, Re::lit("/")])),
            path,
            Re::opt(tag_suffix()),
            Re::opt(digest_suffix()),
        ]),
    }
}

/// The name part of a wildcard: before `@`, else before the last `:`
/// after the last `/` (a `:` before a `/` is a registry port).
pub(super) fn split_version(glob: &str) -> (&str, &str) {
    if let Some(at) = glob.find('@') {
        return (&glob[..at], &glob[at..]);
    }
    let after_slash = glob.rfind('/').map_or(0, |i| i + 1);
    match glob[after_slash..].rfind(':') {
        Some(i) => glob.split_at(after_slash + i),
        None => (glob, ""),
    }
}

fn looks_like_host(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

fn with_library(registry: String, mut segments: Vec<Seg>) -> NamePattern {
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    if registry == DOCKER_HUB && matches!(segments.as_slice(), [Seg::Glob(_)]) {
        segments.insert(0, Seg::Glob("library".to_string()));
    }
    NamePattern { registry, segments }
}

/// The boundary-safe imgate reading of an allow-list wildcard compared with
/// raw image strings, or why there is none. A whole last segment `*` (which
/// Kyverno let run over `/` too) becomes `**`; any other `*` stays within
/// its segment; a host prefix (`10.0.20.10*`) becomes that host alone.
pub(super) fn allow_candidate(glob: &str) -> Result<NamePattern, String> {
    let (name, _) = split_version(glob);
    if name.contains('?') {
        return Err("imgate patterns have no one-character wildcard (`?`)".into());
    }
    let components: Vec<&str> = name.split('/').collect();
    if let [only] = components.as_slice() {
        let only = *only;
        let Some(star) = only.find('*') else {
            if looks_like_host(only) {
                return Err("a registry host without a repository".into());
            }
            return Ok(with_library(
                DOCKER_HUB.into(),
                vec![Seg::Glob(only.into())],
            ));
        };
        let prefix = &only[..star];
        if prefix.is_empty() {
            return Err("admits images from any registry; imgate lists registries".into());
        }
        if looks_like_host(prefix) {
            if &only[star..] != "*" {
                return Err("a wildcard inside a registry host; imgate lists hosts".into());
            }
            let host = prefix.trim_end_matches(['.', ':']).to_ascii_lowercase();
            return Ok(NamePattern {
                registry: host,
                segments: vec![Seg::AnyDepth],
            });
        }
        return Ok(with_library(
            DOCKER_HUB.into(),
            vec![Seg::Glob(only.into())],
        ));
    }
    let first = components[0];
    if first.contains('*') {
        return Err("a wildcard in the registry host; imgate lists hosts".into());
    }
    let (registry, path) = match first.to_ascii_lowercase() {
        host if host == "index.docker.io" => (DOCKER_HUB.to_string(), &components[1..]),
        host if looks_like_host(first) => (host, &components[1..]),
        _ => (DOCKER_HUB.to_string(), &components[..]),
    };
    let mut segments = Vec::new();
    for (i, component) in path.iter().enumerate() {
        if component.is_empty() {
            return Err("an empty path segment".into());
        }
        let all_stars = component.chars().all(|c| c == '*');
        if all_stars && i + 1 == path.len() {
            // A last `*` that Kyverno let run over `/`: one or more
            // segments. After a path (`ghcr.io/acme/*`) that is `*/**`,
            // since `**` alone would also admit `ghcr.io/acme` itself; on
            // Docker Hub a one-segment prefix cannot be an image alone.
            let hub_user = registry == DOCKER_HUB && segments.len() == 1;
            if !segments.is_empty() && !hub_user {
                segments.push(Seg::Glob("*".into()));
            }
            segments.push(Seg::AnyDepth);
        } else if all_stars {
            segments.push(Seg::Glob("*".into()));
        } else {
            segments.push(Seg::Glob(collapse_stars(component)));
        }
    }
    Ok(with_library(registry, segments))
}

/// `a**b` is `a*b` to Kyverno (and `**` means something else to imgate).
fn collapse_stars(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    out
}

/// A pattern covering every image whose `world` string the wildcard
/// matches, when its registry is literal: the literal path up to the first
/// wildcard, then `**`. `None` when the registry itself is a wildcard.
pub(super) fn cover_candidate(glob: &str, world: World) -> Option<NamePattern> {
    let (first, rest) = glob.split_once('/')?;
    if first.contains(['*', '?']) || !(world == World::Normalised || looks_like_host(first)) {
        return None;
    }
    let registry = first.to_ascii_lowercase();
    if world == World::Raw && (registry == DOCKER_HUB || registry == "index.docker.io") {
        // Raw Docker Hub paths may or may not carry `library/`.
        return Some(NamePattern {
            registry: DOCKER_HUB.into(),
            segments: vec![Seg::AnyDepth],
        });
    }
    let wildcard = rest.find(['*', '?']);
    let literal = &rest[..wildcard.unwrap_or(rest.len())];
    if wildcard.is_none() || literal.contains([':', '@']) {
        // The name is literal; only the tag or digest varies.
        let (name, _) = split_version(rest);
        let segments: Vec<Seg> = name.split('/').map(|s| Seg::Glob(s.into())).collect();
        return Some(with_library(registry, segments));
    }
    let (fixed, partial) = match literal.rfind('/') {
        Some(i) => (&literal[..i], &literal[i + 1..]),
        None => ("", literal),
    };
    let mut segments: Vec<Seg> = fixed
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| Seg::Glob(s.into()))
        .collect();
    if !partial.is_empty() {
        segments.push(Seg::Glob(format!("{partial}*")));
    }
    segments.push(Seg::AnyDepth);
    Some(NamePattern {
        registry: if registry == "index.docker.io" {
            DOCKER_HUB.into()
        } else {
            registry
        },
        segments,
    })
}

/// How a pod spec may write the image named `registry/repository`: in
/// full, and for Docker Hub without the registry and, for official images,
/// without `library/`.
pub(super) fn raw_spellings(registry: &str, repository: &str) -> Vec<String> {
    let mut out = Vec::new();
    if registry == DOCKER_HUB {
        if let Some(official) = repository.strip_prefix("library/") {
            if !official.contains('/') {
                out.push(official.to_string());
                out.push(format!("docker.io/{official}"));
            }
        }
        out.push(repository.to_string());
    }
    out.push(format!("{registry}/{repository}"));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::automaton::Nfa;
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("nginx*", Ok("docker.io/library/nginx*"))]
    #[case("nginx", Ok("docker.io/library/nginx"))]
    #[case("nginx:1.*", Ok("docker.io/library/nginx"))]
    #[case("docker.io/*", Ok("docker.io/**"))]
    #[case("ghcr.io/*", Ok("ghcr.io/**"))]
    #[case("actualbudget/*", Ok("docker.io/actualbudget/**"))]
    #[case("library/*", Ok("docker.io/library/**"))]
    #[case("10.0.20.10*", Ok("10.0.20.10/**"))]
    #[case("10.0.20.10:5000/*", Ok("10.0.20.10:5000/**"))]
    #[case("ghcr.io/*/app", Ok("ghcr.io/*/app"))]
    #[case("ghcr.io/acme/*", Ok("ghcr.io/acme/*/**"))]
    #[case("ghcr.io/org/app-*", Ok("ghcr.io/org/app-*"))]
    #[case("index.docker.io/bitnami/*", Ok("docker.io/bitnami/**"))]
    #[case("*", Err(()))]
    #[case("*.example.com/*", Err(()))]
    #[case("ghcr.io/a?c", Err(()))]
    #[case("10.0.20.1*0/x", Err(()))]
    fn allow_candidates(#[case] glob: &str, #[case] expected: Result<&str, ()>) {
        let got = allow_candidate(glob).map(|p| p.text()).map_err(|_| ());
        assert_eq!(got.as_deref().map_err(|_| ()), expected, "{glob}");
    }

    #[rstest]
    #[case("ghcr.io/org/*", World::Normalised, Some("ghcr.io/org/**"))]
    #[case("ghcr.io/org/app*", World::Normalised, Some("ghcr.io/org/app*/**"))]
    #[case("ghcr.io/org/app:v*", World::Normalised, Some("ghcr.io/org/app"))]
    #[case(
        "docker.io/library/nginx*",
        World::Normalised,
        Some("docker.io/library/nginx*/**")
    )]
    #[case("*", World::Normalised, None)]
    #[case("nginx*", World::Raw, None)]
    #[case("docker.io/x/*", World::Raw, Some("docker.io/**"))]
    fn cover_candidates(#[case] glob: &str, #[case] world: World, #[case] expected: Option<&str>) {
        assert_eq!(
            cover_candidate(glob, world).map(|p| p.text()).as_deref(),
            expected
        );
    }

    #[test]
    fn spellings_are_the_ways_a_pod_spec_writes_the_name() {
        let nginx = allow_candidate("nginx*").unwrap();
        let raw = Nfa::from_re(&nginx.spelling(World::Raw));
        for s in [
            "nginx",
            "nginx-unprivileged:1.25",
            "library/nginx@sha256:ab",
            "docker.io/nginx:1@sha512:00",
            "docker.io/library/nginx",
            "index.docker.io/library/nginx:1",
        ] {
            assert!(raw.accepts(s), "{s}");
        }
        for s in ["nginx/x", "nginx.evil.example/x", "ghcr.io/nginx", "nginx:"] {
            assert!(!raw.accepts(s), "{s}");
        }
        let norm = Nfa::from_re(&nginx.spelling(World::Normalised));
        assert!(norm.accepts("docker.io/library/nginx:1.25"));
        assert!(!norm.accepts("docker.io/library/nginx"));
        assert!(!norm.accepts("nginx:1.25"));
        let deep = Nfa::from_re(&allow_candidate("ghcr.io/*").unwrap().spelling(World::Raw));
        assert!(deep.accepts("ghcr.io/a/b/c:1"));
        assert!(!deep.accepts("ghcr.io/:1"));
        assert!(!deep.accepts("ghcr.io"));
        let middle = NamePattern {
            registry: "ghcr.io".into(),
            segments: vec![Seg::Glob("a".into()), Seg::AnyDepth, Seg::Glob("b".into())],
        };
        let middle = Nfa::from_re(&middle.spelling(World::Normalised));
        for s in ["ghcr.io/a/b:1", "ghcr.io/a/x/y/b:1"] {
            assert!(middle.accepts(s), "{s}");
        }
        assert!(!middle.accepts("ghcr.io/ab:1"));
        let leading = NamePattern {
            registry: "ghcr.io".into(),
            segments: vec![Seg::AnyDepth, Seg::Glob("b".into())],
        };
        let leading = Nfa::from_re(&leading.spelling(World::Normalised));
        assert!(leading.accepts("ghcr.io/b:1"));
        assert!(leading.accepts("ghcr.io/x/b:1"));
    }

    #[test]
    fn versions_split_after_the_last_slash() {
        assert_eq!(
            split_version("10.0.20.10:5000/x:1"),
            ("10.0.20.10:5000/x", ":1")
        );
        assert_eq!(split_version("nginx@sha256:ab"), ("nginx", "@sha256:ab"));
        assert_eq!(split_version("nginx*"), ("nginx*", ""));
    }

    #[test]
    fn raw_spellings_of_official_images() {
        assert_eq!(
            raw_spellings("docker.io", "library/nginx"),
            vec![
                "nginx",
                "docker.io/nginx",
                "library/nginx",
                "docker.io/library/nginx"
            ]
        );
        assert_eq!(raw_spellings("ghcr.io", "a/b"), vec!["ghcr.io/a/b"]);
    }
}
