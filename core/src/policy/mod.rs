//! The admission policy file: parsing, validation and matching (owned by the policy work).
