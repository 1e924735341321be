//! core against the one in-process fake registry (`fake.rs`): the client
//! facing lies (`lying.rs`) and signing and verification end to end
//! (`signatures.rs`). One test binary, so the fake is compiled once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bombs;
mod cold_path;
mod denials;
mod fake;
mod lying;
mod recovery;
mod signatures;
