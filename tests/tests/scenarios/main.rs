//! Cross-crate scenarios against real parts, in one test binary: the real
//! registry, the real `imgate` binary, real TLS.

mod admission;
mod attacks;
mod attestations;
mod common;
mod deploy;
mod image;
mod interop;
mod keyless;
mod keyless_images;
mod keyless_sign;
mod kyverno_import;
mod limits;
mod pin;
mod pkcs11;
mod release;
mod resolve;
mod sign_verify;
mod stdout;
mod tenancy;
mod trust_root;
mod vault;
mod verify_policy;
mod warm_path;
mod webhook;
