//! What several scenarios share: the outcome of one run of the real `imgate`
//! binary, captured so a failed assertion can print all of it.

// Tests: a failed expectation is a failed test.
#![allow(clippy::panic)]

use std::process::Output;

use serde_json::Value;

/// The outcome of one `imgate` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Captures a finished process; a run killed by a signal has code -1.
    pub fn from_output(out: &Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Stdout parsed as JSON; a failure names both streams.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }

    /// A usage or runtime error: exit 2, exactly one `imgate:` line on
    /// stderr, and that line (or the rest of stderr) says `needle`.
    pub fn assert_one_line_error(&self, needle: &str) {
        assert_eq!(self.code, 2, "{self:?}");
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?}: {self:?}"
        );
        let lines = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("imgate:"))
            .count();
        assert_eq!(lines, 1, "one error line: {self:?}");
    }
}

/// Subcommands that docs/ and the release workflows already use and that
/// arrive with attestations: `imgate attest` and `imgate verify-attestation`.
/// While the binary lacks one, its command lines are not held against its
/// `--help`; [`is_pending`] asserts that it is still missing, so the day it
/// exists this list must shrink and its flags get checked like all others.
pub const PENDING_SUBCOMMANDS: &[&str] = &[];

/// Whether `words` (after `imgate`) run a [`PENDING_SUBCOMMANDS`] entry that
/// this binary does not have yet; panics if it has it.
pub fn is_pending(words: &[String]) -> bool {
    let Some(sub) = words
        .first()
        .filter(|w| PENDING_SUBCOMMANDS.contains(&w.as_str()))
    else {
        return false;
    };
    let out = match std::process::Command::new(imgate_tests::imgate_bin())
        .args([sub.as_str(), "--help"])
        .output()
    {
        Ok(out) => out,
        Err(err) => panic!("imgate {sub} --help: {err}"),
    };
    assert!(
        !out.status.success(),
        "`imgate {sub}` exists now: remove it from PENDING_SUBCOMMANDS \
         (tests/tests/scenarios/common.rs) so its flags are checked"
    );
    true
}
