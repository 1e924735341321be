//! imgate-core: image references, the registry client, cosign signature
//! formats, the policy, verification and digest pinning.
//!
//! No CLI parsing, no HTTP server and no `process::exit` here: the `imgate`
//! binary and the webhook are thin layers over this crate.

#![warn(missing_docs)]

pub mod attestation;
pub mod digest;
pub mod kyverno;
pub mod oci;
pub mod pin;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod signature;
pub mod workload;

pub use digest::Digest;
pub use reference::ImageRef;

pub use imgate_keys::error_chain;
/// Sigstore verification and signing (the `imgate-sigstore` crate).
pub use imgate_sigstore as sigstore;

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_sources_once() {
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(super::error_chain(&err), "outer: inner");
        let err = Repeats(std::io::Error::other("inner"));
        assert_eq!(super::error_chain(&err), "wrapped: inner");
    }
}
