//! What a Kyverno policy requires of one image string, as a formula over
//! wildcard atoms ("the image matches `ghcr.io/*`"), and the table of those
//! atoms with where each came from.
//!
//! Parts the importer cannot evaluate are [`Cond::Unknown`]. Before anything
//! is proved, [`Cond::strict`] puts the formula in negation normal form and
//! replaces every literal that involves an unknown with `False`: the formula
//! is monotone in its literals then, so the result admits no more than the
//! original did, whatever the unknown part meant (fail closed).

use std::collections::{BTreeMap, BTreeSet};

use super::automaton::Nfa;
use super::question::{self, Answer, Budget};

/// A condition on one image string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Cond {
    #[default]
    True,
    False,
    /// The image matches atom `n` of the table.
    Atom(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// Something the importer cannot evaluate (its refusal is reported
    /// where it was found).
    Unknown,
}

impl Cond {
    pub fn not(self) -> Cond {
        match self {
            Cond::True => Cond::False,
            Cond::False => Cond::True,
            Cond::Not(inner) => *inner,
            other => Cond::Not(Box::new(other)),
        }
    }

    pub fn and(parts: Vec<Cond>) -> Cond {
        let mut out = Vec::new();
        for part in parts {
            match part {
                Cond::True => {}
                Cond::False => return Cond::False,
                Cond::And(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Cond::True,
            1 => out.remove(0),
            _ => Cond::And(out),
        }
    }

    pub fn or(parts: Vec<Cond>) -> Cond {
        let mut out = Vec::new();
        for part in parts {
            match part {
                Cond::False => {}
                Cond::True => return Cond::True,
                Cond::Or(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Cond::False,
            1 => out.remove(0),
            _ => Cond::Or(out),
        }
    }

    /// Negation normal form with every unknown literal made `False`: admits
    /// a subset of what `self` admits for any meaning of the unknowns.
    pub fn strict(&self) -> Cond {
        self.nnf(false)
    }

    fn nnf(&self, negated: bool) -> Cond {
        match (self, negated) {
            (Cond::True, false) | (Cond::False, true) => Cond::True,
            (Cond::True, true) | (Cond::False, false) => Cond::False,
            (Cond::Unknown, _) => Cond::False,
            (Cond::Atom(n), false) => Cond::Atom(*n),
            (Cond::Atom(n), true) => Cond::Not(Box::new(Cond::Atom(*n))),
            (Cond::Not(inner), _) => inner.nnf(!negated),
            (Cond::And(parts), false) | (Cond::Or(parts), true) => {
                Cond::and(parts.iter().map(|p| p.nnf(negated)).collect())
            }
            (Cond::And(parts), true) | (Cond::Or(parts), false) => {
                Cond::or(parts.iter().map(|p| p.nnf(negated)).collect())
            }
        }
    }

    /// The same with every atom `keep` rejects replaced by `False`, for a
    /// question whose strings no such atom can match.
    pub fn restrict(&self, keep: &dyn Fn(usize) -> bool) -> Cond {
        match self {
            Cond::Atom(n) if !keep(*n) => Cond::False,
            Cond::Not(inner) => inner.restrict(keep).not(),
            Cond::And(parts) => Cond::and(parts.iter().map(|p| p.restrict(keep)).collect()),
            Cond::Or(parts) => Cond::or(parts.iter().map(|p| p.restrict(keep)).collect()),
            other => other.clone(),
        }
    }

    /// Whether it holds, given which atoms match.
    pub fn eval(&self, matches: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Cond::True => true,
            Cond::False | Cond::Unknown => false,
            Cond::Atom(n) => matches(*n),
            Cond::Not(inner) => !inner.eval(matches),
            Cond::And(parts) => parts.iter().all(|p| p.eval(matches)),
            Cond::Or(parts) => parts.iter().any(|p| p.eval(matches)),
        }
    }

    /// Whether an unknown part is in it.
    #[cfg(test)]
    pub fn has_unknown(&self) -> bool {
        match self {
            Cond::Unknown => true,
            Cond::Not(inner) => inner.has_unknown(),
            Cond::And(parts) | Cond::Or(parts) => parts.iter().any(Cond::has_unknown),
            _ => false,
        }
    }

    /// Every atom it mentions, in order of first mention.
    pub fn atoms(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.collect(&mut out, &mut BTreeSet::new(), None, false);
        out
    }

    /// The atoms that appear un-negated (of a formula in negation normal
    /// form): the images it can admit come from these.
    pub fn positive_atoms(&self) -> Vec<usize> {
        let mut out = Vec::new();
        self.collect(&mut out, &mut BTreeSet::new(), Some(false), false);
        out
    }

    fn collect(
        &self,
        out: &mut Vec<usize>,
        seen: &mut BTreeSet<usize>,
        polarity: Option<bool>,
        negated: bool,
    ) {
        match self {
            Cond::Atom(n) if polarity.is_none_or(|p| p == negated) && seen.insert(*n) => {
                out.push(*n);
            }
            Cond::Not(inner) => inner.collect(out, seen, polarity, !negated),
            Cond::And(parts) | Cond::Or(parts) => {
                for part in parts {
                    part.collect(out, seen, polarity, negated);
                }
            }
            _ => {}
        }
    }
}

/// Where one atom came from.
#[derive(Debug, Clone)]
pub(super) struct Atom {
    /// The Kyverno wildcard, as written.
    pub glob: String,
    /// Which policy: `ClusterPolicy/name`.
    pub source: String,
    /// Field path inside that policy.
    pub path: String,
    pub nfa: Nfa,
    /// The literal characters the glob starts with.
    pub prefix: String,
}

/// Every wildcard the policies use, each compiled once.
#[derive(Debug, Default)]
pub(super) struct Atoms {
    pub list: Vec<Atom>,
    /// What is left for the proofs of this import.
    pub budget: Budget,
}

impl Atoms {
    /// The atom for `glob` found at `source`/`path` (a new entry per place,
    /// so that the report can name each).
    pub fn add(&mut self, glob: &str, source: &str, path: &str) -> Cond {
        self.list.push(Atom {
            glob: glob.to_string(),
            source: source.to_string(),
            path: path.to_string(),
            nfa: Nfa::wildcard(glob),
            prefix: glob[..glob.find(['*', '?']).unwrap_or(glob.len())].to_string(),
        });
        Cond::Atom(self.list.len() - 1)
    }

    pub fn get(&self, n: usize) -> &Atom {
        &self.list[n]
    }

    /// Whether `image`, exactly as written, satisfies `cond` the way
    /// Kyverno would decide it.
    pub fn admits(&self, cond: &Cond, image: &str) -> bool {
        cond.eval(&|n| super::wildcard::wildcard_match(&self.list[n].glob, image))
    }

    /// Whether every string of `a` satisfies `cond`.
    pub fn every(&self, a: &Nfa, cond: &Cond) -> Answer {
        // An atom whose literal start no string of `a` can have never
        // matches: it is false for this question (a real allow-list mostly
        // differs in its first characters, so little is left to walk).
        let prefix = a.literal_prefix();
        let cond = cond.restrict(&|n| {
            let start = &self.list[n].prefix;
            start.starts_with(&prefix) || prefix.starts_with(start.as_str())
        });
        let used = cond.atoms();
        let slot: BTreeMap<usize, usize> = used.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let nfas: Vec<&Nfa> = used.iter().map(|&n| &self.list[n].nfa).collect();
        question::every(
            a,
            &nfas,
            |matched| cond.eval(&|n| slot.get(&n).is_some_and(|&i| matched[i])),
            &self.budget,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn strict_never_admits_more() {
        let mut atoms = Atoms::default();
        let a = atoms.add("ghcr.io/*", "t", "p");
        let b = atoms.add("*:latest", "t", "p");
        // "if the image is latest then <unknown>": ¬b ∨ U → ¬b.
        let c = Cond::or(vec![b.clone().not(), Cond::Unknown]);
        assert_eq!(c.strict(), Cond::Not(Box::new(Cond::Atom(1))));
        // "not (a and unknown)": ¬a ∨ ¬U → ¬a.
        let c = Cond::and(vec![a.clone(), Cond::Unknown]).not();
        assert_eq!(c.strict(), Cond::Not(Box::new(Cond::Atom(0))));
        // Every image admitted by the strict form is admitted by the
        // original, whatever the unknown is (checked both ways round).
        for image in [
            "ghcr.io/x:1",
            "ghcr.io/x:latest",
            "quay.io/y:latest",
            "nginx",
        ] {
            for unknown in [false, true] {
                let original = Cond::and(vec![
                    a.clone(),
                    Cond::or(vec![b.clone().not(), Cond::Unknown]),
                ]);
                let strict = original.strict();
                let with = |c: &Cond| {
                    let replaced = replace_unknown(c, unknown);
                    atoms.admits(&replaced, image)
                };
                if atoms.admits(&strict, image) {
                    assert!(with(&original), "{image} {unknown}");
                }
            }
        }
    }

    fn replace_unknown(c: &Cond, value: bool) -> Cond {
        match c {
            Cond::Unknown => {
                if value {
                    Cond::True
                } else {
                    Cond::False
                }
            }
            Cond::Not(inner) => Cond::Not(Box::new(replace_unknown(inner, value))),
            Cond::And(parts) => {
                Cond::And(parts.iter().map(|p| replace_unknown(p, value)).collect())
            }
            Cond::Or(parts) => Cond::Or(parts.iter().map(|p| replace_unknown(p, value)).collect()),
            other => other.clone(),
        }
    }

    #[test]
    fn positive_atoms_skip_negated_ones() {
        let c = Cond::and(vec![
            Cond::Atom(0),
            Cond::Atom(1).not(),
            Cond::or(vec![Cond::Atom(2)]),
        ]);
        assert_eq!(c.positive_atoms(), vec![0, 2]);
        assert_eq!(c.atoms(), vec![0, 1, 2]);
    }
}
