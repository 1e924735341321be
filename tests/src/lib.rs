//! The cross-crate test harness: a real registry (Debian's `docker-registry`)
//! on loopback in several variants, a token server, an image builder, two
//! independent ways to push (skopeo and a raw HTTP client), a
//! request-counting proxy, a delay-and-fault proxy, a DNS server for test
//! names and a runner for the real `imgate` binary.
//!
//! Network use is loopback only (127.0.0.0/8); nothing is pulled from the
//! internet. Needs the Debian packages `docker-registry`, `skopeo` and
//! `apache2-utils` (htpasswd).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use imgate_tests::{ImageBuilder, PushWith, Registry, Variant};
//! let registry = Registry::start(Variant::Token).await?;
//! let pushed = ImageBuilder::new("demo")
//!     .index()
//!     .push(&registry, "team/app", "v1", PushWith::Skopeo)
//!     .await?;
//! let digest = imgate_tests::skopeo_inspect_digest(&registry, &pushed.reference).await?;
//! assert_eq!(digest, pushed.digest);
//! # Ok(()) }
//! ```

pub mod bin;
pub mod dns;
pub mod faultproxy;
pub mod image;
pub mod kubeapi;
pub mod pki;
pub mod proxy;
pub mod push;
pub mod registry;
pub mod server;
pub mod sigstore;
pub mod sigstore_services;
pub mod skopeo;
pub mod token;
pub mod tsa;
pub mod tuf;
pub mod vault;

// Tests may unwrap and panic (STYLE.md); library code may not.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod selftest;
pub mod webhook;

pub use bin::{imgate_bin, run_imgate, run_imgate_closed_stdout, try_imgate_bin};
pub use dns::DnsServer;
pub use faultproxy::{in_turn, FaultCounts, FaultProxy, Faults, Front, Logged};
pub use image::{BuiltImage, ImageBuilder};
pub use proxy::{CountingProxy, ProxyMode};
pub use push::{PushWith, PushedImage, RawClient};
pub use registry::{Registry, Variant};
pub use server::block_on;
pub use skopeo::{
    skopeo_inspect_digest, skopeo_inspect_raw, skopeo_platform_digests, skopeo_reported_digest,
};
