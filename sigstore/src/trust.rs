//! The trusted root: which Fulcio CAs, Rekor logs, CT logs and timestamp
//! authorities imgate believes, each with its validity window. The Sigstore
//! public-good root is embedded in the binary; a private one comes from a
//! file (`--trusted-root`, or `trustRoot:` in the policy).

use std::fmt;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::Verifier;

use super::provider::ensure_installed;
use super::SigstoreError;

/// Sigstore's public-good trusted root, as shipped with this build. Refresh
/// it with `imgate trust-root update`.
pub const EMBEDDED_TRUSTED_ROOT: &[u8] = include_bytes!("trusted_root.json");

/// Largest trusted root file imgate reads. The public-good root is ~7 KiB; a
/// private one with many rotated keys stays far below this.
pub const MAX_TRUSTED_ROOT_BYTES: u64 = 1024 * 1024;

/// A parsed, checked trusted root, ready to verify with.
pub struct TrustRoot {
    name: String,
    fingerprint: String,
    pub(crate) root: TrustedRoot,
    pub(crate) verifier: Verifier,
}

impl fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustRoot")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TrustRoot {
    /// The embedded Sigstore public-good root.
    pub fn embedded() -> Result<TrustRoot, SigstoreError> {
        TrustRoot::from_json("embedded", EMBEDDED_TRUSTED_ROOT)
    }

    /// Parse a `trusted_root.json` (Sigstore's `TrustedRoot` message in
    /// protobuf JSON); `name` says where it came from, for errors.
    pub fn from_json(name: &str, json: &[u8]) -> Result<TrustRoot, SigstoreError> {
        ensure_installed();
        let fail = |reason: String| SigstoreError::TrustRoot {
            name: name.to_string(),
            reason,
        };
        if json.len() as u64 > MAX_TRUSTED_ROOT_BYTES {
            return Err(fail(format!(
                "{} bytes, more than the {MAX_TRUSTED_ROOT_BYTES} imgate reads",
                json.len()
            )));
        }
        let text = std::str::from_utf8(json).map_err(|err| fail(err.to_string()))?;
        let root = TrustedRoot::from_json(text).map_err(|err| fail(err.to_string()))?;
        let verifier = Verifier::new(&root).map_err(|err| fail(err.to_string()))?;
        Ok(TrustRoot {
            name: name.to_string(),
            fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(json))),
            root,
            verifier,
        })
    }

    /// Read a trusted root file (at most [`MAX_TRUSTED_ROOT_BYTES`]).
    pub fn from_file(path: &Path) -> Result<TrustRoot, SigstoreError> {
        let name = path.display().to_string();
        let bytes = read_bounded(path, MAX_TRUSTED_ROOT_BYTES).map_err(|reason| {
            SigstoreError::TrustRoot {
                name: name.clone(),
                reason,
            }
        })?;
        TrustRoot::from_json(&name, &bytes)
    }

    /// Where this root came from (`embedded` or a path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sha256:` of the JSON bytes: part of every verdict cache key, so a
    /// changed root never reuses a verdict made under another.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Read at most `limit` bytes of a file, failing (not truncating) when it is
/// longer.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("longer than the {limit} bytes imgate reads"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_root_parses_and_has_a_stable_fingerprint() {
        let a = TrustRoot::embedded().unwrap();
        let b = TrustRoot::embedded().unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("sha256:"));
        assert!(!a.root.certificate_authorities.is_empty());
        assert!(!a.root.tlogs.is_empty());
    }

    #[test]
    fn garbage_root_is_refused_with_its_name() {
        let err = TrustRoot::from_json("my-root.json", b"{\"tlogs\": 5}").unwrap_err();
        assert!(err.to_string().contains("my-root.json"), "{err}");
    }
}
