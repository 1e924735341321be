//! Scenarios: resolve.
