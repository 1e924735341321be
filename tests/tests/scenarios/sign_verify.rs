//! Scenarios: sign_verify.
