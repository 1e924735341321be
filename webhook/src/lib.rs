//! imgate-webhook: the admission engine shared by `imgate admit` and the
//! webhook server, plus the HTTPS server, caches and metrics.

#![warn(missing_docs)]

pub mod admission;
pub mod cache;
pub mod certs;
mod handlers;
pub mod kube;
pub mod limits;
pub mod metrics;
pub mod pullsecrets;
mod reload;
pub mod review;
pub mod server;
mod shutdown;
mod sparse;
mod state;
pub mod tls;
