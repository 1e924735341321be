//! imgate-core: image references, the registry client, cosign signature
//! formats, the policy, verification and digest pinning.
//!
//! No CLI parsing, no HTTP server and no `process::exit` here: the `imgate`
//! binary and the webhook are thin layers over this crate.

pub mod digest;
pub mod kyverno;
pub mod oci;
pub mod pin;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod signature;
pub mod sigstore;

pub use digest::Digest;
pub use reference::ImageRef;

/// An error with its sources, `a: b: c`, for messages and logs. A source
/// whose text the message already holds is not repeated (many errors embed
/// their source's text).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

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
