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
