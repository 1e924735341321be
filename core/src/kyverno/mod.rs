//! Importing Kyverno policies (work in progress).

mod automaton;
mod cond;
mod names;
