//! The cross-crate test harness: a real registry (Debian's `docker-registry`)
//! on loopback in several variants, a token server, an image builder, a
//! request-counting proxy and a webhook spawner.
