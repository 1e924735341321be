//! Image values in Kubernetes YAML: where they are, to the byte.
//!
//! The text is parsed into a small arena of nodes from yaml-rust2's events
//! (not into a value tree) so that each scalar keeps its position and style,
//! and aliases point at their anchored node instead of being copied. The
//! parser reports positions as line and character column; they are turned
//! into byte offsets here, and each scalar's extent is measured on the text
//! and checked against the parsed value before anything is reported.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use super::{is_templated, ImageSpan, Lines, PinError, ScalarStyle};
use crate::workload::{self, Workload};

/// How deep `List`s may nest and merge keys may chain (guards against alias cycles).
const MAX_DEPTH: usize = 16;

/// Finds every image in a (multi-document) Kubernetes YAML stream.
///
/// Looks in every kind of [`workload::WORKLOADS`] (Pods and the pod
/// templates of controllers), and in the `items` of `List` kinds; in each
/// pod spec, every field of [`workload::IMAGE_FIELDS`] (container images and
/// image volumes). Sites are in the order of the lines where they are used.
pub fn find_yaml_images(text: &str) -> Result<Vec<ImageSpan>, PinError> {
    // yaml-rust2 would read a byte order mark as part of the first key
    // (`\u{feff}kind`), hiding the object: scan after it, then shift the spans.
    let Some(body) = text.strip_prefix('\u{feff}') else {
        return find_in(text);
    };
    let shift = text.len() - body.len();
    let mut sites = find_in(body)?;
    for site in &mut sites {
        site.span = site.span.start + shift..site.span.end + shift;
    }
    Ok(sites)
}

fn find_in(text: &str) -> Result<Vec<ImageSpan>, PinError> {
    let tree = Tree::parse(text)?;
    let lines = Lines::new(text);
    let mut finder = Finder {
        text,
        lines: &lines,
        tree: &tree,
        sites: Vec::new(),
    };
    for &root in &tree.documents {
        finder.object(root, 0)?;
    }
    let mut sites = finder.sites;
    // Stable: sites on one line keep the order of the pod spec.
    sites.sort_by_key(ImageSpan::use_line);
    Ok(sites)
}

type NodeId = usize;

#[derive(Debug)]
enum Node {
    Scalar {
        value: String,
        style: TScalarStyle,
        /// 1-based line.
        line: usize,
        /// 0-based character column.
        col: usize,
    },
    Seq(Vec<NodeId>),
    /// Keys and values, alternating.
    Map(Vec<NodeId>),
    Alias {
        target: NodeId,
        line: usize,
    },
}

/// All nodes of a stream, and each document's root.
#[derive(Debug, Default)]
struct Tree {
    nodes: Vec<Node>,
    documents: Vec<NodeId>,
}

impl Tree {
    fn parse(text: &str) -> Result<Tree, PinError> {
        let mut parser = Parser::new_from_str(text);
        let mut tree = Tree::default();
        let mut anchors: HashMap<usize, NodeId> = HashMap::new();
        // Open collections: the node id and the children gathered so far.
        let mut open: Vec<(NodeId, Vec<NodeId>)> = Vec::new();
        loop {
            let (event, mark) = parser.next_token().map_err(|e| PinError::Yaml {
                line: e.marker().line(),
                column: e.marker().col() + 1,
                message: e.info().to_string(),
            })?;
            let done = match event {
                Event::StreamEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {
                    None
                }
                Event::Alias(anchor) => {
                    let target = anchors.get(&anchor).copied().ok_or(PinError::Yaml {
                        line: mark.line(),
                        column: mark.col() + 1,
                        message: "unknown anchor".to_string(),
                    })?;
                    Some(tree.push(Node::Alias {
                        target,
                        line: mark.line(),
                    }))
                }
                Event::Scalar(value, style, anchor, _tag) => {
                    let id = tree.push(Node::Scalar {
                        value,
                        style,
                        line: mark.line(),
                        col: mark.col(),
                    });
                    if anchor != 0 {
                        anchors.insert(anchor, id);
                    }
                    Some(id)
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    let is_seq = matches!(event, Event::SequenceStart(..));
                    let id = tree.push(if is_seq {
                        Node::Seq(Vec::new())
                    } else {
                        Node::Map(Vec::new())
                    });
                    if anchor != 0 {
                        anchors.insert(anchor, id);
                    }
                    open.push((id, Vec::new()));
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                    Some((id, children)) => {
                        match &mut tree.nodes[id] {
                            Node::Seq(c) | Node::Map(c) => *c = children,
                            _ => {}
                        }
                        Some(id)
                    }
                    None => None,
                },
            };
            if let Some(id) = done {
                match open.last_mut() {
                    Some((_, children)) => children.push(id),
                    None => tree.documents.push(id),
                }
            }
        }
        Ok(tree)
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Follows aliases to the node they name.
    fn deref(&self, mut id: NodeId) -> NodeId {
        for _ in 0..MAX_DEPTH {
            match self.nodes.get(id) {
                Some(Node::Alias { target, .. }) => id = *target,
                _ => break,
            }
        }
        id
    }

    fn scalar(&self, id: NodeId) -> Option<&str> {
        match self.nodes.get(self.deref(id)) {
            Some(Node::Scalar { value, .. }) => Some(value),
            _ => None,
        }
    }

    fn seq(&self, id: NodeId) -> &[NodeId] {
        match self.nodes.get(self.deref(id)) {
            Some(Node::Seq(items)) => items,
            _ => &[],
        }
    }

    /// The value of `key` in a mapping, honouring `<<` merge keys (as the
    /// Kubernetes YAML decoder does); explicit keys win over merged ones.
    fn get(&self, map: NodeId, key: &str) -> Option<NodeId> {
        self.get_depth(map, key, 0)
    }

    fn get_depth(&self, map: NodeId, key: &str, depth: usize) -> Option<NodeId> {
        if depth > MAX_DEPTH {
            return None;
        }
        let Some(Node::Map(entries)) = self.nodes.get(self.deref(map)) else {
            return None;
        };
        let pairs = || entries.chunks_exact(2).map(|kv| (kv[0], kv[1]));
        if let Some((_, v)) = pairs().find(|&(k, _)| self.scalar(k) == Some(key)) {
            return Some(v);
        }
        for (k, v) in pairs() {
            if self.scalar(k) != Some("<<") {
                continue;
            }
            let sources: Vec<NodeId> = match self.nodes.get(self.deref(v)) {
                Some(Node::Seq(items)) => items.clone(),
                _ => vec![v],
            };
            if let Some(found) = sources
                .into_iter()
                .find_map(|m| self.get_depth(m, key, depth + 1))
            {
                return Some(found);
            }
        }
        None
    }

    fn path(&self, mut node: NodeId, path: &[&str]) -> Option<NodeId> {
        for key in path {
            node = self.get(node, key)?;
        }
        Some(node)
    }
}

struct Finder<'a> {
    text: &'a str,
    lines: &'a Lines,
    tree: &'a Tree,
    sites: Vec<ImageSpan>,
}

impl Finder<'_> {
    /// One Kubernetes object (a document root or a `List` item).
    fn object(&mut self, node: NodeId, depth: usize) -> Result<(), PinError> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let tree = self.tree;
        let Some(kind) = tree.get(node, "kind").and_then(|k| tree.scalar(k)) else {
            return Ok(());
        };
        if workload::is_list_kind(kind) {
            if let Some(items) = tree.get(node, "items") {
                for &item in tree.seq(items) {
                    self.object(item, depth + 1)?;
                }
            }
            return Ok(());
        }
        let Some(workload) = workload_of(tree, node, kind) else {
            return Ok(());
        };
        let Some(spec) = tree.path(node, workload.pod_spec) else {
            return Ok(());
        };
        let name = tree
            .path(node, &["metadata", "name"])
            .and_then(|n| tree.scalar(n))
            .map(str::to_string);
        let spec_path: String = workload.pod_spec.iter().map(|m| format!("{m}.")).collect();
        for field in workload.image_fields(false) {
            let Some(list) = tree.get(spec, field.list) else {
                continue;
            };
            for (i, &element) in tree.seq(list).iter().enumerate() {
                let Some(image) = tree.path(element, field.image) else {
                    continue;
                };
                let where_ = format!("{spec_path}{}[{i}].{}", field.list, field.image.join("."));
                self.site(image, kind, name.as_deref(), where_)?;
            }
        }
        Ok(())
    }

    /// Records the scalar `node` (an `image` value) with its exact span.
    fn site(
        &mut self,
        node: NodeId,
        kind: &str,
        name: Option<&str>,
        path: String,
    ) -> Result<(), PinError> {
        let tree = self.tree;
        let alias_line = match tree.nodes.get(node) {
            Some(Node::Alias { line, .. }) => Some(*line),
            _ => None,
        };
        let Some(Node::Scalar {
            value,
            style,
            line,
            col,
        }) = tree.nodes.get(tree.deref(node))
        else {
            // A mapping or sequence where an image belongs: not ours to judge.
            return Ok(());
        };
        let (line, col) = (*line, *col);
        // `image:` with nothing (or null) after it names no image.
        if *style == TScalarStyle::Plain
            && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL")
        {
            return Ok(());
        }
        let unsupported = |what| PinError::UnsupportedScalar {
            line,
            column: col + 1,
            image: value.clone(),
            style: what,
        };
        let locate = || PinError::Locate {
            line,
            column: col + 1,
            image: value.clone(),
        };
        let start = self.lines.offset(self.text, line, col).ok_or_else(locate)?;
        let rest = self.text.get(start..).ok_or_else(locate)?;
        let (style, len) = match style {
            TScalarStyle::Plain => {
                // The parsed value of a one-line plain scalar is its text; a
                // multi-line one is folded, so it cannot match the raw text.
                if value.contains(['\n', '\r']) || !rest.starts_with(value.as_str()) {
                    return Err(unsupported("multi-line plain scalar"));
                }
                (ScalarStyle::Plain, value.len())
            }
            TScalarStyle::SingleQuoted => {
                let (len, decoded) =
                    single_quoted(rest).ok_or_else(|| unsupported("multi-line quoted scalar"))?;
                if decoded != *value {
                    return Err(locate());
                }
                (ScalarStyle::SingleQuoted, len)
            }
            TScalarStyle::DoubleQuoted => {
                let (len, decoded) =
                    double_quoted(rest).ok_or_else(|| unsupported("multi-line quoted scalar"))?;
                if decoded != *value {
                    return Err(locate());
                }
                (ScalarStyle::DoubleQuoted, len)
            }
            TScalarStyle::Literal | TScalarStyle::Folded => {
                return Err(unsupported("block scalar"))
            }
        };
        // A column past the end of its line would land on the next one.
        if self.lines.line_of(start) != line {
            return Err(locate());
        }
        self.sites.push(ImageSpan {
            image: value.clone(),
            span: start..start + len,
            line,
            column: col + 1,
            style,
            kind: kind.to_string(),
            name: name.map(str::to_string),
            path,
            alias_line,
            templated: is_templated(value),
        });
        Ok(())
    }
}

/// The workload of the object at `node`: by its `apiVersion` and `kind`, or
/// by `kind` alone when it has no `apiVersion` (a fragment or a template).
fn workload_of(tree: &Tree, node: NodeId, kind: &str) -> Option<&'static Workload> {
    match tree.get(node, "apiVersion").and_then(|v| tree.scalar(v)) {
        Some(api_version) => workload::workload_of(api_version, kind),
        None => workload::WORKLOADS.iter().find(|w| w.kind == kind),
    }
}

/// Length in bytes (quotes included) and value of the one-line single-quoted
/// scalar at the start of `text`; `None` if it spans lines or never closes.
fn single_quoted(text: &str) -> Option<(usize, String)> {
    let mut chars = text.char_indices().skip(1).peekable();
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if chars.peek().map(|&(_, n)| n) == Some('\'') => {
                chars.next();
                value.push('\'');
            }
            '\'' => return Some((i + 1, value)),
            '\n' | '\r' => return None,
            c => value.push(c),
        }
    }
    None
}

/// Length in bytes (quotes included) and decoded value of the one-line
/// double-quoted scalar at the start of `text`; `None` if it spans lines,
/// never closes, or has an escape this decoder does not know.
fn double_quoted(text: &str) -> Option<(usize, String)> {
    let mut chars = text.char_indices().skip(1);
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((i + 1, value)),
            '\n' | '\r' => return None,
            '\\' => {
                let (_, e) = chars.next()?;
                let simple = match e {
                    '0' => Some('\0'),
                    'a' => Some('\x07'),
                    'b' => Some('\x08'),
                    't' | '\t' => Some('\t'),
                    'n' => Some('\n'),
                    'v' => Some('\x0b'),
                    'f' => Some('\x0c'),
                    'r' => Some('\r'),
                    'e' => Some('\x1b'),
                    ' ' => Some(' '),
                    '"' => Some('"'),
                    '/' => Some('/'),
                    '\\' => Some('\\'),
                    'N' => Some('\u{85}'),
                    '_' => Some('\u{a0}'),
                    'L' => Some('\u{2028}'),
                    'P' => Some('\u{2029}'),
                    _ => None,
                };
                if let Some(s) = simple {
                    value.push(s);
                    continue;
                }
                let digits = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => return None,
                };
                let mut code = 0u32;
                for _ in 0..digits {
                    let (_, d) = chars.next()?;
                    code = code * 16 + d.to_digit(16)?;
                }
                value.push(char::from_u32(code)?);
            }
            c => value.push(c),
        }
    }
    None
}
