//! imgate-keys: ECDSA P-256 key pairs in cosign's file formats; signing and
//! verifying bytes. No async, and no network except Vault/OpenBao transit
//! signing (`vault`, behind the `hashivault` feature).
//!
//! - [`SigningKey`]: generate, read and write cosign's encrypted private key
//!   file ([`cosign_format`]), sign bytes (ASN.1 DER ECDSA-P256-SHA256).
//! - [`PublicKey`]: PKIX PEM in and out, verify signatures, the Sigstore
//!   bundle `publicKey.hint`.
//! - [`read_key_source`], [`load_public_key`], [`load_signing_key`]: keys
//!   from a path or `env://VAR`.
//! - [`Signer`]: signing through a key file, a PKCS#11 token ([`pkcs11`]) or
//!   Vault/OpenBao transit (`vault`, feature `hashivault`); [`KeyReference`]
//!   tells them apart as cosign spells them.
//! - [`KeyError`]: one error type, messages naming the key.

#![warn(missing_docs)]

mod algorithm;
pub mod cosign_format;
mod error;
mod pem;
pub mod pkcs11;
mod public;
mod reference;
mod signer;
mod signing;
mod source;
#[cfg(feature = "hashivault")]
pub mod vault;

pub use cosign_format::EncryptParams;
pub use error::{KeyError, Pkcs11Error, VaultError};
pub use public::PublicKey;
pub use reference::{KeyReference, HASHIVAULT_PREFIX, PKCS11_PREFIX};
pub use signer::Signer;
pub use signing::SigningKey;
pub use source::{
    is_encrypted_private_key_pem, is_private_key_pem, load_public_key, load_signing_key,
    read_key_source, read_key_source_zeroizing, ENV_PREFIX,
};

/// The first error of type `T` in `err`'s chain, looking inside
/// `io::Error` payloads too: `io::Error::source` skips its own payload, and
/// HTTP clients nest TLS errors that way. Defined here, with
/// [`error_chain`], for every imgate crate.
pub fn find_in_chain<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    if let Some(found) = err.downcast_ref::<T>() {
        return Some(found);
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(found) = find_in_chain(inner) {
            return Some(found);
        }
    }
    err.source().and_then(find_in_chain)
}

/// An error with its sources, `a: b: c`, for messages and logs. A source
/// whose text the message already holds is not repeated (many errors embed
/// their source's text). The one definition for every imgate crate (this is
/// the lowest one); `imgate_core::error_chain` re-exports it.
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
