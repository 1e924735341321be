//! Digest pinning of Kubernetes manifests and Dockerfiles.
//!
//! This module finds every image value in a text ([`find_yaml_images`],
//! [`find_dockerfile_images`]) together with its exact byte span, and rewrites
//! those spans and nothing else ([`rewrite`]). Comments, key order, quoting,
//! indentation, blank lines, anchors and line endings stay byte-for-byte.
//!
//! There is no network here: resolving a tag to a digest is the caller's job
//! (the CLI resolves each distinct reference once, in parallel, and passes
//! the results in). That keeps this code pure, fast to test and fuzzable.
//!
//! Decisions:
//! - The pinned form written is the fully qualified reference as
//!   `imgate resolve` prints it, `registry/repo:tag@sha256:…` (see
//!   [`pinned_text`]): the tag stays for people to read, the digest names the
//!   content, and the registry is explicit so nothing depends on defaults.
//! - An image reached through an alias (`image: *img`) is the anchored
//!   scalar: it is reported once per use (with [`ImageSpan::alias_line`]) and
//!   rewritten once, at the anchor, so every alias follows.
//! - Values with `$` or `{{` (build arguments, envsubst, templates) are
//!   reported as [`ImageSpan::templated`] and never rewritten.
//! - Scalars imgate cannot rewrite exactly (block scalars, quoted scalars
//!   spanning lines) are an error, never a silent skip.

use std::collections::HashMap;
use std::ops::Range;

use crate::digest::Digest;
use crate::reference::{ImageRef, ReferenceError};

mod dockerfile;
mod yaml;

pub use dockerfile::find_dockerfile_images;
pub use yaml::find_yaml_images;

/// Why a manifest or Dockerfile cannot be pinned. Lines and columns are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The YAML does not parse.
    #[error("line {line} column {column}: invalid YAML: {message}")]
    Yaml {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// An image value is not a valid reference.
    // The reference error already quotes the image, so it is part of this
    // message rather than a separate source (printed once either way).
    #[error("line {line}: {error}")]
    Reference {
        /// Line of the image value.
        line: usize,
        /// The image value as written.
        image: String,
        /// What is wrong with it (names the image and the bad part).
        error: ReferenceError,
    },
    /// An image value is written in a way imgate cannot rewrite exactly.
    #[error("line {line} column {column}: image {image:?} is a {style}; imgate pin rewrites only single-line plain or quoted scalars")]
    UnsupportedScalar {
        /// Line of the scalar.
        line: usize,
        /// Column of the scalar.
        column: usize,
        /// The image value.
        image: String,
        /// How it is written, e.g. `block scalar`.
        style: &'static str,
    },
    /// The parser's position for a scalar does not match the text (a parser
    /// quirk); refusing is safer than rewriting the wrong bytes.
    #[error("line {line} column {column}: cannot locate the image value {image:?} in the text")]
    Locate {
        /// Line reported by the parser.
        line: usize,
        /// Column reported by the parser.
        column: usize,
        /// The image value.
        image: String,
    },
    /// A Dockerfile instruction imgate cannot read.
    #[error("line {line}: invalid Dockerfile: {message}")]
    Dockerfile {
        /// Line of the instruction.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// How an image value is written in the source; rewrites keep the style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// Unquoted YAML plain scalar (quoted on rewrite if the new value needs it).
    Plain,
    /// A Dockerfile word: written as is, never quoted.
    Word,
    /// `'single quoted'` (a quote is written `''`).
    SingleQuoted,
    /// `"double quoted"` (backslash escapes).
    DoubleQuoted,
}

/// One place in a text (YAML or a Dockerfile) where an image is named, with
/// its exact byte span: what `imgate pin` rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpan {
    /// The image value (the decoded scalar), e.g. `nginx:1.27`.
    pub image: String,
    /// Byte range of the value in the original text, quotes included: exactly what a rewrite replaces.
    pub span: Range<usize>,
    /// Line of the value (1-based).
    pub line: usize,
    /// Column of the value (1-based, in characters).
    pub column: usize,
    /// How the value is written.
    pub style: ScalarStyle,
    /// Kind of the object (`Deployment`, `Pod`, …) or `Dockerfile`.
    pub kind: String,
    /// `metadata.name` of the object, or the Dockerfile stage name.
    pub name: Option<String>,
    /// Where in the object, e.g. `spec.template.spec.initContainers[0].image` or `FROM`.
    pub path: String,
    /// When the value comes through an alias (`image: *img`): the line of the alias.
    pub alias_line: Option<usize>,
    /// The value uses a variable (`$`, `{{`): it is reported but never rewritten.
    pub templated: bool,
}

impl ImageSpan {
    /// Parses the value as an image reference; the error names the line and the text.
    pub fn reference(&self) -> Result<ImageRef, PinError> {
        ImageRef::parse(&self.image).map_err(|error| PinError::Reference {
            line: self.line,
            image: self.image.clone(),
            error,
        })
    }

    /// The line where this use of the image is written (the alias line for aliases).
    pub fn use_line(&self) -> usize {
        self.alias_line.unwrap_or(self.line)
    }
}

/// What must be resolved to pin `reference`, or `None` when it stays as is.
///
/// A reference without a digest is resolved by its tag. An already pinned one
/// is left alone unless `refresh`, in which case its tag is resolved again
/// (a digest-only reference has no tag to refresh and stays).
pub fn resolution_query(reference: &ImageRef, refresh: bool) -> Option<ImageRef> {
    match (&reference.digest, &reference.tag) {
        (None, _) => Some(reference.clone()),
        (Some(_), Some(tag)) if refresh => Some(reference.with_tag(tag)),
        (Some(_), _) => None,
    }
}

/// The text written for `query` resolved to `digest`: `registry/repo:tag@digest`.
pub fn pinned_text(query: &ImageRef, digest: &Digest) -> String {
    query.pinned(digest.clone()).to_string()
}

/// Rewrites the value of each site for which `replacement` returns a new
/// image, keeping the site's quoting style; every other byte is unchanged.
///
/// Templated sites are never rewritten; a replacement equal to the current
/// value leaves the original bytes (escapes included) alone. Sites sharing
/// one span (aliases) are written once.
pub fn rewrite<F>(text: &str, sites: &[ImageSpan], mut replacement: F) -> String
where
    F: FnMut(&ImageSpan) -> Option<String>,
{
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    for site in sites {
        if site.templated || text.get(site.span.clone()).is_none() {
            continue;
        }
        let Some(new) = replacement(site) else {
            continue;
        };
        if new == site.image {
            continue;
        }
        edits.push((site.span.clone(), render(&new, site.style)));
    }
    edits.sort_by_key(|(span, _)| (span.start, span.end));
    let mut out = String::with_capacity(text.len() + edits.len() * 80);
    let mut at = 0;
    for (span, new) in edits {
        // Same span twice (aliases) or overlapping spans: the first edit wins.
        if span.start < at {
            continue;
        }
        out.push_str(&text[at..span.start]);
        out.push_str(&new);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// [`rewrite`] with replacements keyed by the image value as written.
pub fn rewrite_map(
    text: &str,
    sites: &[ImageSpan],
    replacements: &HashMap<String, String>,
) -> String {
    rewrite(text, sites, |site| replacements.get(&site.image).cloned())
}

/// Writes `value` in `style`, falling back to single quotes when a plain
/// scalar could not hold it (it would parse as something else).
fn render(value: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::Word => value.to_string(),
        ScalarStyle::Plain if plain_safe(value) => value.to_string(),
        ScalarStyle::Plain | ScalarStyle::SingleQuoted => {
            format!("'{}'", value.replace('\'', "''"))
        }
        ScalarStyle::DoubleQuoted => {
            let mut out = String::with_capacity(value.len() + 2);
            out.push('"');
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

/// Whether `value` reads back as the same string when written as a plain
/// scalar in block or flow context (conservative: any doubt means quote).
fn plain_safe(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    !"-?:,[]{}#&*!|>'\"%@`".contains(first)
        && !value.contains(": ")
        && !value.contains(" #")
        && !value.ends_with(':')
        && !value.contains([',', '[', ']', '{', '}'])
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off"
        )
        && value.parse::<f64>().is_err()
}

/// Whether a value uses a variable imgate cannot know (`$VAR`, `${VAR}`, `{{ }}`).
fn is_templated(value: &str) -> bool {
    value.contains('$') || value.contains("{{")
}

/// Byte offsets of line starts, with YAML's line breaks (`\r\n`, `\n`, `\r`).
#[derive(Debug)]
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    starts.push(i + 2);
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        Lines { starts }
    }

    /// Byte offset of 1-based `line` and 0-based character column `col`.
    fn offset(&self, text: &str, line: usize, col: usize) -> Option<usize> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        let rest = text.get(start..)?;
        if col == 0 {
            return Some(start);
        }
        match rest.char_indices().nth(col) {
            Some((i, _)) => Some(start + i),
            None if rest.chars().count() == col => Some(text.len()),
            None => None,
        }
    }

    /// 1-based line of byte offset `at`.
    fn line_of(&self, at: usize) -> usize {
        self.starts.partition_point(|&s| s <= at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
