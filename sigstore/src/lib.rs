//! Sigstore verification and signing: keyless (Fulcio certificate) and
//! transparency-log (Rekor) evidence, on the official Sigstore crates
//! (`sigstore-verify` and the crates it re-exports, `sigstore-trust-root`,
//! `sigstore-tuf`). This is the only crate that names those crates, so an
//! upgrade touches one place; where a crate gets a case wrong or refuses
//! what imgate must accept, the fix lives here and says so.
//!
//! The narrow API the rest of imgate uses:
//!
//! - [`TrustRoot`]: the embedded public-good root or a private one from a file;
//!   its [`TrustRoot::fingerprint`] belongs in every verdict cache key.
//! - [`verify_bundle_bytes`]: a Sigstore bundle for an artifact's bytes or
//!   SHA-256, under a [`BundlePolicy`] (an [`IdentityPolicy`] or a key);
//!   [`verify_keyless_bundle`] for a keyless one under a rule's `tlog`.
//! - [`verify_legacy_keyless`]: a legacy `.sig` layer's certificate, chain and
//!   Rekor annotations, for an image digest.
//!
//! - [`fetch_trusted_root`]: refresh the trusted root through TUF.
//!
//! Verification is offline: only [`fetch_trusted_root`] opens connections.
//!
//! Signing with Sigstore evidence (keyless, or a key whose signature is
//! logged) is [`SigstoreSigner`]: the identity token
//! ([`SigningServices::identity_token`]), then Fulcio, the timestamp
//! authority and Rekor as a [`SigningConfig`] names them, and a self-check
//! by the verifier above before anything is returned. It,
//! [`fetch_trusted_root`] and [`fetch_signing_config`] are the only parts
//! that open connections.
//!
//! Of the signing crates, `sigstore-trust-root` (the signing configuration),
//! `sigstore-rekor` (log entry types), `sigstore-bundle` (the bundle
//! builder), `sigstore-crypto` and `sigstore-tsa` (certificate and timestamp
//! checks) are used; `sigstore-sign`, `sigstore-fulcio`, `sigstore-oidc` and
//! the crates' HTTP clients are not: they bring a second reqwest major
//! version, read answers without a size bound or retries, build Rekor v1
//! requests for certificates only, and require a timestamp authority. The
//! HTTP side is `services`, the requests `fulcio`, `rekor_upload` and `tsa`.

#![warn(missing_docs)]

mod bundle;
mod error;
mod fulcio;
mod identity;
mod legacy;
mod provider;
mod rekor;
mod rekor_upload;
mod services;
mod sign;
mod sign_error;
mod signing_config;
mod token;
mod trust;
mod tsa;
mod tuf;
mod tuf_state;

pub use bundle::{
    public_key_from_pem, verify_bundle_bytes, verify_keyless_bundle, ArtifactInput, BundlePolicy,
    VerifiedSignature, MAX_BUNDLE_BYTES,
};
pub use error::SigstoreError;
pub use identity::{IdentityPolicy, Matcher, EXTENSION_NAMES};
pub use legacy::{check_payload_names, verify_legacy_key, verify_legacy_keyless, LegacyKeyless};
pub use rekor::{RekorBundle, RekorPayload};
pub use services::{ServiceOptions, DEFAULT_SERVICE_BUDGET};
pub use sign::{LegacyEvidence, Payload, Signed, SigningServices, SigstoreSigner};
pub use sign_error::{Service, SigningError};
pub use signing_config::{fetch_signing_config, SigningConfig, MAX_SIGNING_CONFIG_BYTES};
pub use token::{IdentityToken, SIGSTORE_AUDIENCE};
pub use trust::{TrustRoot, EMBEDDED_TRUSTED_ROOT, MAX_TRUSTED_ROOT_BYTES};
pub use tuf::{fetch_trusted_root, PUBLIC_GOOD_TUF_ROOT, PUBLIC_GOOD_TUF_URL};

/// What a signature must show of the transparency log. A keyless signature
/// always needs a verified signing time; see [`verify_keyless_bundle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlogMode {
    /// A verified log entry is required (cosign's default); a timestamp
    /// alone does not do, for keys or certificates.
    Required,
    /// Verified when present; a key signature without one is still accepted
    /// (imgate's default for keys: offline signing writes none), a keyless
    /// bundle without one on a trusted timestamp.
    #[default]
    IfPresent,
    /// Key signatures' entries are not checked for inclusion (consistency
    /// still is); keyless bundles as `IfPresent`.
    Ignore,
}
