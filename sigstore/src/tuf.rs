//! Refresh the trusted root through a TUF repository (Sigstore's, or a
//! private instance's), with `sigstore-tuf` doing every check: root chaining
//! from the embedded TUF root, signature thresholds, expiry, rollback (across
//! runs, through the state directory), and length and hash pinning of
//! `trusted_root.json`.
//!
//! The HTTP side is imgate's own reqwest client rather than the crate's
//! `client` feature, which brings a second reqwest major version; every read
//! is bounded by the length the crate asks for.
//!
//! The metadata accepted is kept between runs in a state directory
//! (`tuf_state`), so a version once accepted is the floor of the next run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sigstore_tuf::client::Updater;
use sigstore_tuf::transport::{FetchFuture, Repository};

use super::tuf_state::StateStore;
use super::{SigstoreError, TrustRoot};

/// Sigstore's public-good TUF repository.
pub const PUBLIC_GOOD_TUF_URL: &str = "https://tuf-repo-cdn.sigstore.dev";

/// The public-good TUF root (`root.json`), the anchor of every refresh from
/// [`PUBLIC_GOOD_TUF_URL`]; copied from `sigstore-trust-root` 0.15.1
/// (`repository/tuf_root.json`). Older roots chain forward to newer ones.
pub const PUBLIC_GOOD_TUF_ROOT: &[u8] = include_bytes!("tuf_root.json");

/// The target holding the trusted root.
const TRUSTED_ROOT_TARGET: &str = "trusted_root.json";

/// Timeout for the whole of one TUF request; a stalled mirror fails rather
/// than hanging the update (TUF's slow-retrieval attack).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A TUF repository over HTTP(S): metadata at `<base>/NAME`, targets at
/// `<base>/targets/PATH`.
struct HttpRepository {
    base: url::Url,
    client: reqwest::Client,
}

impl HttpRepository {
    async fn get(&self, path: String, max_length: u64) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        let transport = |message: String| sigstore_tuf::Error::transport(message);
        let url = self
            .base
            .join(&path)
            .map_err(|err| transport(format!("{path}: {err}")))?;
        let resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|err| transport(format!("GET {url}: {err}")))?;
        let status = resp.status();
        // 403 as well as 404: object stores answer 403 for a missing key, and
        // root chaining probes for the next root version until one is missing.
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(transport(format!("GET {url}: status {status}")));
        }
        if resp.content_length().is_some_and(|len| len > max_length) {
            return Err(transport(format!(
                "GET {url}: larger than the {max_length} bytes allowed"
            )));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|err| transport(format!("reading {url}: {err}")))?
        {
            if body.len() as u64 + chunk.len() as u64 > max_length {
                return Err(transport(format!(
                    "GET {url}: larger than the {max_length} bytes allowed"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }
}

impl Repository for HttpRepository {
    fn fetch_metadata<'a>(&'a self, name: &'a str, max_length: u64) -> FetchFuture<'a> {
        Box::pin(self.get(name.to_string(), max_length))
    }

    fn fetch_target<'a>(&'a self, path: &'a str, max_length: u64) -> FetchFuture<'a> {
        Box::pin(self.get(format!("targets/{path}"), max_length))
    }
}

/// Fetch and verify `trusted_root.json` from the TUF repository at `url`,
/// anchored at `tuf_root` (the public-good one when `None`), with the
/// metadata accepted before kept in `state` (one subdirectory per
/// repository): older versions than those are refused as a rollback, and
/// what this run accepts is written back. Returns the target's bytes once
/// they also parse as a usable trusted root.
pub async fn fetch_trusted_root(
    url: &str,
    tuf_root: Option<&[u8]>,
    state: &Path,
) -> Result<Vec<u8>, SigstoreError> {
    let bytes = fetch_target(url, tuf_root, state, TRUSTED_ROOT_TARGET).await?;
    TrustRoot::from_json(&format!("{url} {TRUSTED_ROOT_TARGET}"), &bytes)?;
    Ok(bytes)
}

/// Refresh the TUF metadata at `url` (as [`fetch_trusted_root`] does) and
/// fetch the verified bytes of the target `name`.
pub(crate) async fn fetch_target(
    url: &str,
    tuf_root: Option<&[u8]>,
    state: &Path,
    name: &str,
) -> Result<Vec<u8>, SigstoreError> {
    super::provider::ensure_installed();
    let fail = |reason: String| SigstoreError::Update {
        url: url.to_string(),
        reason,
    };
    let mut base = url::Url::parse(url).map_err(|err| fail(err.to_string()))?;
    if !matches!(base.scheme(), "https" | "http") {
        return Err(fail(
            "only http and https repositories are supported".into(),
        ));
    }
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let store = Arc::new(StateStore::open(state, &base).map_err(&fail)?);
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(15))
        .build()
        .map_err(|err| fail(err.to_string()))?;
    let repo = HttpRepository { base, client };
    let mut updater = Updater::new(repo, tuf_root.unwrap_or(PUBLIC_GOOD_TUF_ROOT))
        .map_err(|err| fail(format!("TUF root: {err}")))?
        .with_store(Arc::clone(&store));
    // The state must be readable and writable before anything is fetched:
    // without it there is no floor to hold the repository to.
    store.check().map_err(&fail)?;
    let now = jiff::Timestamp::now();
    updater
        .refresh(now)
        .await
        .map_err(|err| fail(refresh_failure(err, store.dir())))?;
    let bytes = updater
        .get_target(name, now)
        .await
        .map_err(|err| fail(format!("{name}: {err}")))?;
    store.check().map_err(&fail)?;
    Ok(bytes)
}

/// Why a refresh failed; a rollback says which version was offered against
/// which was accepted before, and where that memory is kept.
fn refresh_failure(err: sigstore_tuf::Error, state: &Path) -> String {
    match err {
        sigstore_tuf::Error::Rollback { role, trusted, new } => format!(
            "rollback refused: the repository offers {role} version {new}, older than \
             version {trusted} accepted before (TUF state in {})",
            state.display()
        ),
        other => format!("TUF refresh: {other}"),
    }
}
