//! Questions over automata: whether every string of one NFA satisfies a
//! condition on which other NFAs accept it, answered by walking the product
//! of the first with the subset construction of the others and looking for
//! a string that breaks the condition (the shortest, as a counterexample).
//!
//! Every walk is bounded, per question ([`MAX_STATES`]) and per import
//! ([`MAX_TOTAL_STATES`]): a question too large to answer is
//! [`Answer::Unknown`], which every caller treats as "no" (fail closed).

use std::cell::Cell;
use std::collections::HashMap;

use super::automaton::{CharSet, Nfa};

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::automaton::Re;
    use super::*;

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
