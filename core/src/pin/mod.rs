//! Digest pinning of Kubernetes manifests and Dockerfiles (owned by the pin work).
