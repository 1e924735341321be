//! One module per subcommand; `common` holds the options several share.

use std::process::ExitCode;

pub mod admit;
pub mod attest;
pub mod common;
pub mod identity;
pub mod keys;
pub mod password;
pub mod pin;
pub mod policy;
pub mod policy_import;
pub mod resolve;
pub mod sign;
pub mod sigstore_args;
pub mod trust_root;
pub mod verify;
pub mod verify_attestation;
pub mod verify_bundle;
pub mod webhook;

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for holds (exit 0).
    Ok,
    /// The command ran, and its answer is "no" (exit 1).
    No,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::No => ExitCode::from(1),
        }
    }
}
