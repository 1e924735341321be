//! imgate-core: image references, the registry client, cosign signature
//! formats, the policy, verification and digest pinning.
//!
//! No CLI parsing, no HTTP server and no `process::exit` here: the `imgate`
//! binary and the webhook are thin layers over this crate.

pub mod digest;
pub mod oci;
pub mod pin;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod signature;
pub mod sigstore;

pub use digest::Digest;
pub use reference::ImageRef;
