//! Image references in Dockerfile `FROM` lines.
//!
//! Only as much of the Dockerfile grammar as finding `FROM` needs: the
//! `escape` parser directive, line continuations (with comment lines inside
//! them), heredoc bodies (whose lines are not instructions), and
//! `FROM [--flag=…] IMAGE [AS NAME]`. `scratch` and earlier stage names are
//! not images; a reference built from `ARG`s is reported as templated and
//! never rewritten, since only the build knows its value.

use std::collections::HashSet;
use std::ops::Range;

use super::{is_templated, ImageSpan, PinError, ScalarStyle};

/// Finds the image of every `FROM` instruction, in order.
pub fn find_dockerfile_images(text: &str) -> Result<Vec<ImageSpan>, PinError> {
    let escape = escape_directive(text);
    let mut sites = Vec::new();
    let mut stages: HashSet<String> = HashSet::new();
    for instruction in instructions(text, escape) {
        let Some(keyword) = instruction.words.first() else {
            continue;
        };
        // A byte order mark may precede the first instruction.
        if !keyword
            .text
            .trim_start_matches('\u{feff}')
            .eq_ignore_ascii_case("FROM")
        {
            continue;
        }
        let mut args = instruction.words[1..]
            .iter()
            .skip_while(|w| w.text.starts_with("--"));
        let Some(image) = args.next() else {
            return Err(PinError::Dockerfile {
                line: keyword.line,
                message: "FROM without an image".to_string(),
            });
        };
        let stage = match (args.next(), args.next()) {
            (Some(as_), Some(name)) if as_.text.eq_ignore_ascii_case("AS") => {
                Some(name.text.to_string())
            }
            _ => None,
        };
        let lower = image.text.to_ascii_lowercase();
        let is_image = lower != "scratch" && !stages.contains(&lower);
        if let Some(stage) = &stage {
            stages.insert(stage.to_ascii_lowercase());
        }
        if !is_image {
            continue;
        }
        sites.push(ImageSpan {
            image: image.text.to_string(),
            span: image.span.clone(),
            line: image.line,
            column: text[line_start(text, image.span.start)..image.span.start]
                .chars()
                .count()
                + 1,
            style: ScalarStyle::Word,
            kind: "Dockerfile".to_string(),
            name: stage,
            path: "FROM".to_string(),
            alias_line: None,
            templated: is_templated(image.text),
        });
    }
    Ok(sites)
}

/// The escape character from a leading `# escape=` directive (default `\`).
fn escape_directive(text: &str) -> char {
    for line in text.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        if key.eq_ignore_ascii_case("escape") && value.trim() == "`" {
            return '`';
        }
    }
    '\\'
}

/// One whitespace-separated word and where it is.
#[derive(Debug)]
struct Word<'a> {
    text: &'a str,
    span: Range<usize>,
    line: usize,
}

/// One instruction's words across its continuation lines.
#[derive(Debug)]
struct Instruction<'a> {
    words: Vec<Word<'a>>,
}

/// Splits the text into instructions, skipping comments, blank lines and heredoc bodies.
fn instructions(text: &str, escape: char) -> Vec<Instruction<'_>> {
    let mut out = Vec::new();
    let mut current: Option<Instruction<'_>> = None;
    // Heredoc terminators still to be met, and whether leading tabs are stripped.
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut offset = 0;
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if let Some((word, strip_tabs)) = heredocs.first() {
            let candidate = if *strip_tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if candidate == word {
                heredocs.remove(0);
            }
            continue;
        }
        let trimmed = line.trim_start();
        // Comment and blank lines are skipped, also inside a continuation.
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (content, continues) = match line.trim_end().strip_suffix(escape) {
            Some(before) => (before, true),
            None => (line, false),
        };
        let instruction = current.get_or_insert_with(|| Instruction { words: Vec::new() });
        let mut at = 0;
        // Only ASCII blanks separate words, so every separator is one byte.
        for word in content.split([' ', '\t']) {
            if !word.is_empty() {
                instruction.words.push(Word {
                    text: word,
                    span: start + at..start + at + word.len(),
                    line: line_no,
                });
            }
            at += word.len() + 1;
        }
        if !continues {
            if let Some(done) = current.take() {
                heredocs.extend(done.words.iter().filter_map(|w| heredoc_word(w.text)));
                out.push(done);
            }
        }
    }
    out.extend(current);
    out
}

/// The terminator of a heredoc opened by `word` (`<<EOF`, `<<-"EOF"`, `2<<EOF`…).
fn heredoc_word(word: &str) -> Option<(String, bool)> {
    let at = word.find("<<")?;
    let rest = &word[at + 2..];
    if rest.starts_with('<') {
        return None;
    }
    let (rest, strip_tabs) = match rest.strip_prefix('-') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let name = rest.trim_matches(['"', '\'']);
    (!name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .then(|| (name.to_string(), strip_tabs))
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |i| i + 1)
}
