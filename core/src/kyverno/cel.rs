//! CEL shapes.
