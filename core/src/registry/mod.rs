//! The registry client: the only code that talks to an OCI registry.
//!
//! It never trusts a digest it did not hash: manifests are fetched with GET
//! and their bytes hashed, blobs are hashed as they arrive, and a registry
//! whose `Docker-Content-Digest` header disagrees is an error naming both
//! digests. Auth (anonymous, basic, bearer-token), TLS roots plus extra CAs,
//! plain HTTP only for registries named insecure, timeouts and retries on
//! 429/5xx live here too.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use crate::digest::Digest;
use crate::oci::Platform;
use crate::reference::ImageRef;

/// Errors talking to a registry. Each names the registry or image it concerns.
/// Clone: one failed listing may be shared by several readers (signatures
/// and attestations read the same referrers).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The manifest or blob does not exist.
    #[error("{what} not found in {image}")]
    NotFound {
        /// `manifest sha256:…`, `tag v1`, `blob sha256:…`.
        what: String,
        /// The repository.
        image: String,
    },
    /// Credentials missing or refused.
    #[error("registry {registry} refused access ({status}): {detail}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// HTTP status (401 or 403).
        status: u16,
        /// What the registry or token server said, or which credentials were tried.
        detail: String,
    },
    /// The content does not hash to the digest asked for or announced.
    #[error("digest mismatch for {image}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The image or blob concerned.
        image: String,
        /// The digest asked for or announced by the registry.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The registry answered with something that is not what the protocol says.
    #[error("registry {registry} sent an invalid response: {detail}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// What was wrong.
        detail: String,
    },
    /// A blob larger than the caller allows, announced by its descriptor or
    /// its `Content-Length`, or found while reading (reading stops there).
    #[error("{what} in {image} is larger than the {limit} bytes allowed{}", .size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    TooLarge {
        /// `blob sha256:…`.
        what: String,
        /// The repository.
        image: String,
        /// The size announced, when one was.
        size: Option<u64>,
        /// The cap that applied.
        limit: u64,
    },
    /// An unexpected HTTP status after retries.
    #[error("registry {registry} answered {status} for {url}")]
    Status {
        /// Registry host.
        registry: String,
        /// HTTP status.
        status: u16,
        /// The request URL.
        url: String,
    },
    /// No answer within the timeout.
    #[error("registry {registry} did not answer within {timeout:?}")]
    Timeout {
        /// Registry host.
        registry: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// Could not connect (DNS, refused, TLS handshake).
    #[error("cannot reach registry {registry}: {detail}")]
    Connect {
        /// Registry host.
        registry: String,
        /// The underlying error, with its chain.
        detail: String,
    },
    /// Client configuration is unusable (CA file, docker config, credential helper).
    #[error("registry configuration: {0}")]
    Config(String),
}

impl RegistryError {
    /// Whether the registry is unavailable (cannot connect, timed out, 5xx,
    /// 429): the only failures a policy's `onRegistryError: allow` may fail
    /// open on. Everything else (404, 401, a lying or malformed answer, a bad
    /// configuration) is an answer about the image, which someone who pushes
    /// to the repository can provoke, so it must deny.
    pub fn is_unavailable(&self) -> bool {
        match self {
            RegistryError::Timeout { .. } | RegistryError::Connect { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || (500..600).contains(status),
            _ => false,
        }
    }
}

/// How to reach one registry.
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Talk plain HTTP (only for registries the operator names insecure).
    pub http: bool,
    /// Extra CA bundle (PEM) to trust for this registry.
    pub ca_file: Option<PathBuf>,
}

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name (`<token>` for identity tokens).
    pub username: String,
    /// Password or token. Never printed.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Client-wide configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Per-registry settings keyed by `host[:port]`.
    pub registries: BTreeMap<String, RegistrySettings>,
    /// CA bundles trusted for every registry, on top of the system roots.
    pub extra_ca_files: Vec<PathBuf>,
    /// Explicit credentials keyed by `host[:port]` (take precedence over the docker config).
    pub credentials: BTreeMap<String, Credentials>,
    /// Read `DOCKER_CONFIG`/`~/.docker/config.json` (and credential helpers) for credentials.
    pub use_docker_config: bool,
    /// Docker config file to read instead of the default location.
    pub docker_config: Option<PathBuf>,
    /// Timeout for one HTTP request (connect, headers and body), well under
    /// the webhook's deadline so a request that hangs is abandoned and
    /// retried while there is time, instead of holding the whole admission.
    pub request_timeout: Duration,
    /// Retries on 429/5xx/connection errors and timeouts, with exponential backoff.
    pub retries: u32,
    /// How long one registry operation (a request and its retries) may take:
    /// a retry after a timeout is started only if it can finish within it.
    pub operation_timeout: Duration,
}

/// Default [`ClientConfig::request_timeout`]: a registry answers a small
/// manifest or signature in well under a second; 3 s leaves room for one
/// retry within the webhook's default 8 s deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Default [`ClientConfig::operation_timeout`]: the webhook's default deadline.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            registries: BTreeMap::new(),
            extra_ca_files: Vec::new(),
            credentials: BTreeMap::new(),
            use_docker_config: true,
            docker_config: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retries: 2,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }
}

/// A manifest fetched and checked against its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The digest of `bytes` (computed here, never taken from a header).
    pub digest: Digest,
    /// The media type the registry reported (or found in the body).
    pub media_type: String,
    /// The exact bytes.
    pub bytes: Vec<u8>,
}

/// The result of resolving a reference.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference pinned to what its tag names (for an index, the index digest).
    pub pinned: ImageRef,
    /// The manifest itself.
    pub manifest: FetchedManifest,
    /// For an index: each platform's manifest digest.
    pub platforms: Vec<(Option<Platform>, Digest)>,
}

pub use client::{RegistryClient, MAX_BLOB_SIZE, MAX_MANIFEST_SIZE, NO_REFERRERS_API_TTL};
pub use dockerconfig::{normalise_host, parse_auths};

mod auth;
mod authflow;
mod client;
mod dockerconfig;
mod origins;
mod tls;
mod transport;

/// Makes room for one more entry in a memory keyed by what image references
/// name (registries, repositories, token scopes), which whoever writes a Pod
/// chooses: at `max` entries it forgets those `live` rejects, then all of
/// them if that is not enough. Forgetting costs a request later; a memory
/// without a bound costs RAM without end.
pub(crate) fn make_room<K, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    live: impl FnMut(&K, &mut V) -> bool,
) {
    if map.len() < max {
        return;
    }
    map.retain(live);
    if map.len() >= max {
        map.clear();
    }
}
