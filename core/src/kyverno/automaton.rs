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

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::VecDeque;

/// Most product states one question may visit. Real policies need a few
/// hundred; a hostile one gets "cannot prove" instead of a long wait.
pub(super) const MAX_STATES: usize = 20_000;

/// Most product states all the questions of one import may visit together.
pub(super) const MAX_TOTAL_STATES: usize = 400_000;

/// What is left of [`MAX_TOTAL_STATES`] for one import.
#[derive(Debug)]
pub(super) struct Budget(Cell<usize>);

impl Default for Budget {
    fn default() -> Self {
        Budget(Cell::new(MAX_TOTAL_STATES))
    }
}

impl Budget {
    fn left(&self) -> usize {
        self.0.get()
    }

    fn spend(&self, states: usize) {
        self.0.set(self.0.get().saturating_sub(states));
    }
}

/// A set of ASCII characters: what one transition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct CharSet(u128);

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
    sets: Vec<CharSet>,
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

    fn initial(&self) -> Vec<u32> {
        self.closure(vec![self.start])
    }

    fn step(&self, set: &[u32], byte: u8) -> Vec<u32> {
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

    fn accepting(&self, set: &[u32]) -> bool {
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

/// The outcome of one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// Every string holds.
    Holds,
    /// This string (one of the shortest) does not.
    Fails(String),
    /// Too large to decide within [`MAX_STATES`]: treat as "no".
    Unknown,
}

/// Whether every string `a` accepts satisfies `holds`, which is told, for
/// each of `atoms`, whether that atom accepts the string too.
pub(super) fn every(
    a: &Nfa,
    atoms: &[&Nfa],
    holds: impl Fn(&[bool]) -> bool,
    budget: &Budget,
) -> Answer {
    let limit = MAX_STATES.min(budget.left());
    let answer = walk(a, atoms, holds, limit);
    budget.spend(answer.1);
    answer.0
}

/// The walk of [`every`], visiting at most `limit` states; returns the
/// answer and the states visited.
fn walk(a: &Nfa, atoms: &[&Nfa], holds: impl Fn(&[bool]) -> bool, limit: usize) -> (Answer, usize) {
    let alphabet = alphabet(a, atoms);
    type Key = (Vec<u32>, Vec<(u32, Vec<u32>)>);
    let initial: Key = (
        a.initial(),
        atoms
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, n.initial()))
            .collect(),
    );
    let mut states: Vec<(Key, Option<(usize, u8)>)> = vec![(initial.clone(), None)];
    let mut seen: HashMap<Key, usize> = HashMap::from([(initial, 0)]);
    let mut next = 0;
    let mut accepted = vec![false; atoms.len()];
    while next < states.len() {
        let current = next;
        next += 1;
        let (a_set, alive) = &states[current].0;
        if a.accepting(a_set) {
            accepted.iter_mut().for_each(|flag| *flag = false);
            for (i, set) in alive {
                accepted[*i as usize] = atoms[*i as usize].accepting(set);
            }
            if !holds(&accepted) {
                return (Answer::Fails(trace(&states, current)), states.len());
            }
        }
        let (a_set, alive) = states[current].0.clone();
        for &byte in &alphabet {
            let a_next = a.step(&a_set, byte);
            if a_next.is_empty() {
                continue;
            }
            let alive_next: Vec<(u32, Vec<u32>)> = alive
                .iter()
                .filter_map(|(i, set)| {
                    let set = atoms[*i as usize].step(set, byte);
                    (!set.is_empty()).then_some((*i, set))
                })
                .collect();
            let key = (a_next, alive_next);
            if !seen.contains_key(&key) {
                if states.len() >= limit {
                    return (Answer::Unknown, states.len());
                }
                seen.insert(key.clone(), states.len());
                states.push((key, Some((current, byte))));
            }
        }
    }
    (Answer::Holds, states.len())
}

/// One character for each class of characters that every automaton
/// involved treats alike.
fn alphabet(a: &Nfa, atoms: &[&Nfa]) -> Vec<u8> {
    let mut sets: Vec<CharSet> = a.sets.clone();
    for n in atoms {
        sets.extend_from_slice(&n.sets);
    }
    sets.sort_unstable_by_key(|s| s.0);
    sets.dedup();
    let mut classes: HashMap<Vec<bool>, u8> = HashMap::new();
    for byte in b'!'..=b'~' {
        let signature: Vec<bool> = sets.iter().map(|s| s.contains(byte)).collect();
        classes.entry(signature).or_insert(byte);
    }
    let mut reps: Vec<u8> = classes.into_values().collect();
    reps.sort_unstable();
    reps
}

fn trace<K>(states: &[(K, Option<(usize, u8)>)], mut at: usize) -> String {
    let mut bytes = Vec::new();
    while let Some((parent, byte)) = states[at].1 {
        bytes.push(byte);
        at = parent;
    }
    bytes.reverse();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Kyverno's wildcard match: `*` any run of characters (also `/`, `.`,
/// `:`), `?` exactly one character, everything else itself; over the whole
/// string. Linear: the last `*` is the only one ever grown.
pub(super) fn wildcard_match(pattern: &str, name: &str) -> bool {
    if pattern.is_ascii() && name.is_ascii() {
        // The common case, without allocating.
        return wildcard_match_in(pattern.as_bytes(), name.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    wildcard_match_in(&p, &n)
}

fn wildcard_match_in<T: Copy + PartialEq + From<u8>>(p: &[T], n: &[T]) -> bool {
    let (star_char, one_char) = (T::from(b'*'), T::from(b'?'));
    let (mut px, mut nx) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while nx < n.len() {
        if px < p.len() {
            if p[px] == star_char {
                px += 1;
                if px == p.len() {
                    return true;
                }
                star = Some((px, nx));
                continue;
            }
            if p[px] == one_char || p[px] == n[nx] {
                px += 1;
                nx += 1;
                continue;
            }
        }
        match star {
            Some((star_px, star_nx)) => {
                star = Some((star_px, star_nx + 1));
                px = star_px;
                nx = star_nx + 1;
            }
            None => return false,
        }
    }
    p[px..].iter().all(|&c| c == star_char)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("*", "s3:GetObject", true)]
    #[case("", "s3:GetObject", false)]
    #[case("", "", true)]
    #[case("nginx*", "nginx.evil.example/x:1", true)]
    #[case("10.0.20.10*", "10.0.20.100:5000/x", true)]
    #[case("docker.io/*", "nginx:1.25", false)]
    #[case("my-bucket/In*/Ka*/Ban", "my-bucket/India/Karnataka/Area1/Ban", true)]
    #[case("my-bucket/In*/Ka*/Ban", "my-bucket/India/Karnataka/Bangalore", false)]
    #[case("my-?-bucket/abc*", "my--bucket/abc", false)]
    #[case("my-bucket/abc?efg", "my-bucket/abc/efg", true)]
    #[case("my-bucket/mnop*?and", "my-bucket/mnopand", false)]
    #[case("my-bucket/mnop*?and", "my-bucket/mnopqand", true)]
    #[case("a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false)]
    fn wildcard_like_kyverno(#[case] pattern: &str, #[case] name: &str, #[case] expected: bool) {
        assert_eq!(wildcard_match(pattern, name), expected, "{pattern} {name}");
        assert_eq!(
            Nfa::wildcard(pattern).accepts(name),
            expected,
            "nfa {pattern} {name}"
        );
    }

    #[test]
    fn every_finds_the_shortest_counterexample() {
        // All of `ghcr.io/` + lower-case path chars: matched by `ghcr.io/*`,
        // not by `ghcr.io/a*`.
        let a = Nfa::from_re(&Re::Seq(vec![
            Re::lit("ghcr.io/"),
            Re::plus(Re::Set(CharSet::segment())),
        ]));
        let all = Nfa::wildcard("ghcr.io/*");
        let narrow = Nfa::wildcard("ghcr.io/a*");
        let b = Budget::default();
        assert_eq!(every(&a, &[&all], |m| m[0], &b), Answer::Holds);
        match every(&a, &[&narrow], |m| m[0], &b) {
            Answer::Fails(s) => {
                assert_eq!(s.len(), "ghcr.io/x".len(), "{s}");
                assert!(!s.starts_with("ghcr.io/a"), "{s}");
            }
            other => panic!("{other:?}"),
        }
        // Negation: nothing of `a` ends in `:latest`.
        assert_eq!(
            every(&a, &[&Nfa::wildcard("*:latest")], |m| !m[0], &b),
            Answer::Holds
        );
    }

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

    #[test]
    fn a_hostile_question_is_bounded() {
        // 40 `?` after a `*`: the subset construction of this glob has
        // 2^40 states; the walk gives up instead of running for ever.
        let pattern = format!("*a{}", "?".repeat(40));
        let glob = Nfa::wildcard(&pattern);
        let a = Nfa::from_re(&Re::Star(Box::new(Re::Set(CharSet::chars("ab")))));
        let started = std::time::Instant::now();
        let b = Budget::default();
        assert_eq!(every(&a, &[&glob], |m| !m[0], &b), Answer::Unknown);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        assert_eq!(b.left(), MAX_TOTAL_STATES - MAX_STATES);
        // An import whose budget is spent answers at once.
        b.spend(MAX_TOTAL_STATES);
        assert_eq!(every(&a, &[&glob], |m| !m[0], &b), Answer::Unknown);
    }
}
