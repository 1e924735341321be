//! Scenarios: deploy.
