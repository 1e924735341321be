//! (owned by the admission-engine work)
