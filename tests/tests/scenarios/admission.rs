//! Scenarios: admission.
