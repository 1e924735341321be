//! core against the one in-process fake registry (`fake.rs`, with switches
//! and lies): the client facing lies (`lying.rs`), signing and verification
//! end to end (`signatures.rs`), answers an attacker can provoke that must
//! deny (`denials.rs`), bounded signature reads (`bombs.rs`), hanging
//! requests (`recovery.rs`) and what a verification costs in requests and
//! connections (`cold_path.rs`). One test binary, so the fake is compiled once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bombs;
mod cold_path;
mod denials;
mod fake;
mod lying;
mod recovery;
mod signatures;
