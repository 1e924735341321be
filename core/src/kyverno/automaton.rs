//! Regular languages over image-reference strings, small enough to decide
//! what the importer must prove before it writes a pattern: that every way
//! of writing every image an imgate pattern admits was admitted by the
//! Kyverno policy (so the import is never more permissive), that a
//! verification rule covers every image Kyverno verified, and whether two
//! sets of images meet.
//!
//! Kyverno's wildcards and the spellings of imgate's patterns are both
//! regular languages over printable ASCII (no valid reference has another
//! character), so each becomes a small NFA. A question is answered by
//! walking the product of one NFA `a` (the strings to check) with the subset
//! construction of the NFAs a condition mentions, looking for a string of
//! `a` that breaks the condition. The walk is bounded by [`MAX_STATES`]: a
//! question too large to answer is [`Answer::Unknown`], which every caller
//! treats as "no" (fail closed).

use std::collections::HashMap;
use std::collections::VecDeque;

/// A set of ASCII characters: what one transition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct CharSet(pub(super) u128);

impl CharSet {
    /// Reads nothing (a character outside printable ASCII, which no valid
    /// reference contains).
    pub const NONE: CharSet = CharSet(0);

    /// Every printable ASCII character but space.
    pub fn any() -> CharSet {
        CharSet::range(b'!', b'~')
    }

    /// One character; anything but printable ASCII reads nothing.
    pub fn of(c: char) -> CharSet {
        if c.is_ascii_graphic() {
            CharSet(1u128 << (c as u32))
        } else {
            CharSet::NONE
        }
    }

    /// The characters from `lo` to `hi`, both included.
    pub fn range(lo: u8, hi: u8) -> CharSet {
        (lo..=hi).fold(CharSet::NONE, |set, b| {
            set.union(CharSet::of(char::from(b)))
        })
    }

    /// The characters of `chars`.
    pub fn chars(chars: &str) -> CharSet {
        chars
            .chars()
            .fold(CharSet::NONE, |set, c| set.union(CharSet::of(c)))
    }

    pub fn union(self, other: CharSet) -> CharSet {
        CharSet(self.0 | other.0)
    }

    pub fn intersect(self, other: CharSet) -> CharSet {
        CharSet(self.0 & other.0)
    }

    pub fn contains(self, byte: u8) -> bool {
        byte < 128 && self.0 & (1u128 << byte) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Lower-case letters, digits and `.`, `_`, `-`: a repository path
    /// component (a superset: separators may repeat or lead).
    pub fn segment() -> CharSet {
        CharSet::range(b'a', b'z')
            .union(CharSet::range(b'0', b'9'))
            .union(CharSet::chars("._-"))
    }

    /// Characters of a tag.
    pub fn tag() -> CharSet {
        CharSet::range(b'A', b'Z').union(CharSet::segment())
    }

    /// Characters of a registry host name (the port is separate).
    pub fn host() -> CharSet {
        CharSet::range(b'A', b'Z')
            .union(CharSet::range(b'a', b'z'))
            .union(CharSet::range(b'0', b'9'))
            .union(CharSet::chars(".-"))
    }

    pub fn digit() -> CharSet {
        CharSet::range(b'0', b'9')
    }

    pub fn hex() -> CharSet {
        CharSet::digit().union(CharSet::range(b'a', b'f'))
    }
}

/// A regular expression over characters, as the importer builds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Re {
    /// These characters, in order.
    Lit(String),
    /// One character of the set.
    Set(CharSet),
    /// One after the other.
    Seq(Vec<Re>),
    /// Any one of them.
    Alt(Vec<Re>),
    /// Zero or more times.
    Star(Box<Re>),
}

impl Re {
    pub fn lit(text: &str) -> Re {
        Re::Lit(text.to_string())
    }

    /// One or more times.
    pub fn plus(re: Re) -> Re {
        Re::Seq(vec![re.clone(), Re::Star(Box::new(re))])
    }

    /// Zero or one time.
    pub fn opt(re: Re) -> Re {
        Re::Alt(vec![re, Re::Seq(Vec::new())])
    }

    /// A Kyverno wildcard: `*` any run of characters, `?` any one, the rest
    /// literally.
    pub fn wildcard(pattern: &str) -> Re {
        let mut parts = Vec::new();
        let mut literal = String::new();
        for c in pattern.chars() {
            match c {
                '*' | '?' => {
                    if !literal.is_empty() {
                        parts.push(Re::Lit(std::mem::take(&mut literal)));
                    }
                    let any = Re::Set(CharSet::any());
                    parts.push(if c == '*' {
                        Re::Star(Box::new(any))
                    } else {
                        any
                    });
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Re::Lit(literal));
        }
        Re::Seq(parts)
    }
}

/// A nondeterministic automaton with one start and one accepting state.
#[derive(Debug, Clone, Default)]
pub(super) struct Nfa {
    eps: Vec<Vec<u32>>,
    edges: Vec<Vec<(CharSet, u32)>>,
    start: u32,
    accept: u32,
    /// The distinct character sets of `edges`, for the alphabet.
    pub(super) sets: Vec<CharSet>,
}

impl Nfa {
    /// Thompson's construction.
    pub fn from_re(re: &Re) -> Nfa {
        let mut nfa = Nfa::default();
        let start = nfa.state();
        let accept = nfa.state();
        nfa.build(re, start, accept);
        nfa.start = start;
        nfa.accept = accept;
        nfa.sets = nfa.char_sets();
        nfa
    }

    /// The strings a Kyverno wildcard matches.
    pub fn wildcard(pattern: &str) -> Nfa {
        Nfa::from_re(&Re::wildcard(pattern))
    }

    fn state(&mut self) -> u32 {
        self.eps.push(Vec::new());
        self.edges.push(Vec::new());
        (self.eps.len() - 1) as u32
    }

    fn build(&mut self, re: &Re, from: u32, to: u32) {
        match re {
            Re::Lit(text) => {
                let chars: Vec<char> = text.chars().collect();
                if chars.is_empty() {
                    self.eps[from as usize].push(to);
                }
                let mut at = from;
                for (i, c) in chars.iter().enumerate() {
                    let next = if i + 1 == chars.len() {
                        to
                    } else {
                        self.state()
                    };
                    self.edges[at as usize].push((CharSet::of(*c), next));
                    at = next;
                }
            }
            Re::Set(set) => self.edges[from as usize].push((*set, to)),
            Re::Seq(parts) => {
                if parts.is_empty() {
                    self.eps[from as usize].push(to);
                }
                let mut at = from;
                for (i, part) in parts.iter().enumerate() {
                    let next = if i + 1 == parts.len() {
                        to
                    } else {
                        self.state()
                    };
                    self.build(part, at, next);
                    at = next;
                }
            }
            Re::Alt(choices) => {
                // Each choice between fresh states, so that no choice's
                // loop can reach into another's.
                for choice in choices {
                    let (a, b) = (self.state(), self.state());
                    self.eps[from as usize].push(a);
                    self.build(choice, a, b);
                    self.eps[b as usize].push(to);
                }
            }
            Re::Star(inner) => {
                let hub = self.state();
                let body_end = self.state();
                self.eps[from as usize].push(hub);
                self.eps[hub as usize].push(to);
                self.build(inner, hub, body_end);
                self.eps[body_end as usize].push(hub);
            }
        }
    }

    /// The states reachable from `set` without reading (sorted, unique).
    fn closure(&self, mut set: Vec<u32>) -> Vec<u32> {
        // Sets are small (a few states of a short pattern): a linear
        // membership test beats allocating a bitmap per step.
        let mut at = 0;
        while at < set.len() {
            let s = set[at];
            at += 1;
            for &t in &self.eps[s as usize] {
                if !set.contains(&t) {
                    set.push(t);
                }
            }
        }
        set.sort_unstable();
        set
    }

    pub(super) fn initial(&self) -> Vec<u32> {
        self.closure(vec![self.start])
    }

    pub(super) fn step(&self, set: &[u32], byte: u8) -> Vec<u32> {
        let mut next = Vec::new();
        for &s in set {
            for &(chars, t) in &self.edges[s as usize] {
                if chars.contains(byte) && !next.contains(&t) {
                    next.push(t);
                }
            }
        }
        if next.is_empty() {
            return next;
        }
        self.closure(next)
    }

    pub(super) fn accepting(&self, set: &[u32]) -> bool {
        set.binary_search(&self.accept).is_ok()
    }

    /// Whether the automaton accepts `text`.
    #[cfg(test)]
    pub fn accepts(&self, text: &str) -> bool {
        let mut set = self.initial();
        for c in text.chars() {
            if !c.is_ascii_graphic() {
                return false;
            }
            set = self.step(&set, c as u8);
            if set.is_empty() {
                return false;
            }
        }
        self.accepting(&set)
    }

    /// The strings both accept.
    pub fn intersect(&self, other: &Nfa) -> Nfa {
        let mut out = Nfa::default();
        let mut index: HashMap<(u32, u32), u32> = HashMap::new();
        let mut queue = VecDeque::new();
        let mut id = |out: &mut Nfa, pair: (u32, u32), queue: &mut VecDeque<(u32, u32)>| {
            *index.entry(pair).or_insert_with(|| {
                queue.push_back(pair);
                out.state()
            })
        };
        let start = id(&mut out, (self.start, other.start), &mut queue);
        out.start = start;
        while let Some((p, q)) = queue.pop_front() {
            let from = id(&mut out, (p, q), &mut queue);
            for &p2 in &self.eps[p as usize] {
                let to = id(&mut out, (p2, q), &mut queue);
                out.eps[from as usize].push(to);
            }
            for &q2 in &other.eps[q as usize] {
                let to = id(&mut out, (p, q2), &mut queue);
                out.eps[from as usize].push(to);
            }
            for &(c1, p2) in &self.edges[p as usize] {
                for &(c2, q2) in &other.edges[q as usize] {
                    let chars = c1.intersect(c2);
                    if !chars.is_empty() {
                        let to = id(&mut out, (p2, q2), &mut queue);
                        out.edges[from as usize].push((chars, to));
                    }
                }
            }
        }
        // The pair of accepting states, if reachable; else a fresh state
        // nothing reaches (the empty language).
        out.accept = match index.get(&(self.accept, other.accept)) {
            Some(&s) => s,
            None => out.state(),
        };
        out.sets = out.char_sets();
        out
    }

    /// The characters every accepted string starts with (up to 256).
    pub fn literal_prefix(&self) -> String {
        let mut prefix = String::new();
        let mut set = self.initial();
        while prefix.len() < 256 && !self.accepting(&set) {
            let mut only: Option<CharSet> = None;
            for &s in &set {
                for &(chars, _) in &self.edges[s as usize] {
                    if only.is_some_and(|o| o != chars) {
                        return prefix;
                    }
                    only = Some(chars);
                }
            }
            let Some(chars) = only else { return prefix };
            let mut members = (b'!'..=b'~').filter(|&b| chars.contains(b));
            let (Some(byte), None) = (members.next(), members.next()) else {
                return prefix;
            };
            prefix.push(char::from(byte));
            set = self.step(&set, byte);
        }
        prefix
    }

    /// The distinct character sets its transitions read.
    fn char_sets(&self) -> Vec<CharSet> {
        let mut sets: Vec<CharSet> = self.edges.iter().flatten().map(|(set, _)| *set).collect();
        sets.sort_unstable_by_key(|s| s.0);
        sets.dedup();
        sets
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn intersect_is_both() {
        let x = Nfa::wildcard("ghcr.io/*");
        let y = Nfa::wildcard("*/app");
        let both = x.intersect(&y);
        assert!(both.accepts("ghcr.io/team/app"));
        assert!(!both.accepts("ghcr.io/team/api"));
        assert!(!both.accepts("quay.io/app"));
        let none = Nfa::wildcard("a").intersect(&Nfa::wildcard("b"));
        assert!(!none.accepts("a") && !none.accepts("b") && !none.accepts(""));
    }

    #[test]
    fn star_and_alt_keep_their_languages() {
        let re = Re::Seq(vec![
            Re::lit("sha"),
            Re::Alt(vec![Re::lit("256"), Re::lit("512")]),
            Re::lit(":"),
            Re::plus(Re::Set(CharSet::hex())),
        ]);
        let n = Nfa::from_re(&re);
        assert!(n.accepts("sha256:ab"));
        assert!(n.accepts("sha512:0"));
        assert!(!n.accepts("sha384:0"));
        assert!(!n.accepts("sha256:"));
        assert!(!n.accepts("sha256:xy"));
        let path = Nfa::from_re(&Re::Seq(vec![
            Re::lit("a"),
            Re::Star(Box::new(Re::Seq(vec![
                Re::lit("/"),
                Re::plus(Re::Set(CharSet::segment())),
            ]))),
            Re::lit("/b"),
        ]));
        assert!(path.accepts("a/b"));
        assert!(path.accepts("a/x/y/b"));
        assert!(!path.accepts("a//b"));
        assert!(!path.accepts("ab"));
    }
}
