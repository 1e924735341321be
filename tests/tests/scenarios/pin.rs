//! Scenarios: pin.
