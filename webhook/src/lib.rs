//! imgate-webhook: the admission engine shared by `imgate admit` and the
//! webhook server (`admission`, with its caches, the Kubernetes reads it
//! needs and the AdmissionReview format), and the HTTPS server with its
//! limits, TLS and hot reload (`server`).

#![warn(missing_docs)]

pub mod admission;
mod cache;
mod kube;
pub mod metrics;
pub mod pullsecrets;
pub mod review;
pub mod server;
mod sparse;
