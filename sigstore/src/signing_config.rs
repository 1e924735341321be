//! Where the signing services are: Sigstore's signing configuration
//! (`signing_config.json`, media type
//! `application/vnd.dev.sigstore.signingconfig.v0.2+json`, what cosign 3
//! reads with `--signing-config`), parsed by `sigstore-trust-root`. The
//! public-good one comes with the crate; `imgate trust-root update` fetches
//! the current one through TUF ([`fetch_signing_config`]); a private
//! instance's comes from a file.
//!
//! imgate submits to one Fulcio, one Rekor log and at most one timestamp
//! authority, so a configuration that demands more (a selector of `ALL`
//! across operators, or `EXACT` with a count above one) is refused rather
//! than silently reduced.

use std::path::Path;

use sigstore_verify::trust_root::{
    ServiceConfiguration, ServiceEndpoint, ServiceSelector, SigningConfig as Inner,
    SIGSTORE_PRODUCTION_SIGNING_CONFIG,
};

use super::sign_error::SigningError;
use super::trust::read_bounded;

/// Largest signing configuration imgate reads (the public-good one is ~1 KiB).
pub const MAX_SIGNING_CONFIG_BYTES: u64 = 256 * 1024;

/// The TUF target holding the signing configuration.
pub(crate) const SIGNING_CONFIG_TARGET: &str = "signing_config.v0.2.json";

/// A parsed signing configuration.
#[derive(Debug, Clone)]
pub struct SigningConfig {
    name: String,
    inner: Inner,
}

/// The services one signing run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoints {
    /// Fulcio's base URL (keyless only).
    pub fulcio: Option<String>,
    /// The log's base URL and its major API version (1 or 2).
    pub rekor: (String, u32),
    /// The timestamp authority's URL, when one is configured.
    pub tsa: Option<String>,
}

impl SigningConfig {
    /// Sigstore's public-good configuration, as shipped with this build.
    pub fn public_good() -> Result<SigningConfig, SigningError> {
        SigningConfig::from_json(
            "public-good (embedded)",
            SIGSTORE_PRODUCTION_SIGNING_CONFIG.as_bytes(),
        )
    }

    /// Parse a configuration; `name` says where it came from, for errors.
    pub fn from_json(name: &str, json: &[u8]) -> Result<SigningConfig, SigningError> {
        let fail = |reason: String| SigningError::Config {
            name: name.to_string(),
            reason,
        };
        if json.len() as u64 > MAX_SIGNING_CONFIG_BYTES {
            return Err(fail(format!(
                "{} bytes, more than the {MAX_SIGNING_CONFIG_BYTES} imgate reads",
                json.len()
            )));
        }
        let text = std::str::from_utf8(json).map_err(|err| fail(err.to_string()))?;
        let inner = Inner::from_json(text).map_err(|err| fail(err.to_string()))?;
        Ok(SigningConfig {
            name: name.to_string(),
            inner,
        })
    }

    /// Read a configuration file (at most [`MAX_SIGNING_CONFIG_BYTES`]).
    pub fn from_file(path: &Path) -> Result<SigningConfig, SigningError> {
        let name = path.display().to_string();
        let bytes = read_bounded(path, MAX_SIGNING_CONFIG_BYTES).map_err(|reason| {
            SigningError::Config {
                name: name.clone(),
                reason,
            }
        })?;
        SigningConfig::from_json(&name, &bytes)
    }

    /// Where this configuration came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The services to use. `keyless` needs a Fulcio; `needs_set` (the
    /// legacy `.sig` layout, whose Rekor annotation carries a signed entry
    /// timestamp) needs a Rekor v1 log, which v2 logs do not sign.
    pub(crate) fn select(&self, keyless: bool, needs_set: bool) -> Result<Endpoints, SigningError> {
        let fail = |reason: String| SigningError::Config {
            name: self.name.clone(),
            reason,
        };
        let fulcio = if keyless {
            let url = self
                .inner
                .fulcio_url()
                .map(|e| e.url.clone())
                .ok_or_else(|| {
                    fail("names no Fulcio (caUrls) valid now; keyless signing needs one".into())
                })?;
            Some(url)
        } else {
            None
        };
        let force = needs_set.then_some(1);
        let logs = self.inner.eligible_rekor_urls(force);
        check_selector("rekorTlogConfig", &self.inner.rekor_tlog_config, &logs).map_err(fail)?;
        let rekor = match logs.first() {
            Some(log) => (log.url.clone(), log.major_api_version),
            None if needs_set && !self.inner.eligible_rekor_urls(None).is_empty() => {
                return Err(fail(
                    "names only Rekor v2 logs, which sign no entry timestamp; the legacy \
                     `.sig` layout needs one (dev.sigstore.cosign/bundle): sign with --format bundle"
                        .into(),
                ))
            }
            None => {
                return Err(fail(
                    "names no Rekor log (rekorTlogUrls) valid now; imgate records every \
                     Sigstore signature in a log"
                        .into(),
                ))
            }
        };
        let tsas = self.inner.eligible_tsa_urls();
        check_selector("tsaConfig", &self.inner.tsa_config, &tsas).map_err(fail)?;
        let tsa = tsas.first().map(|e| e.url.clone());
        if rekor.1 >= 2 && tsa.is_none() {
            return Err(fail(format!(
                "the Rekor v2 log {} gives no signed time, and no timestamp authority \
                 (tsaUrls) is valid now",
                rekor.0
            )));
        }
        Ok(Endpoints { fulcio, rekor, tsa })
    }
}

/// Whether submitting to the first of `eligible` satisfies `config`.
fn check_selector(
    field: &str,
    config: &ServiceConfiguration,
    eligible: &[&ServiceEndpoint],
) -> Result<(), String> {
    let ok = match config.selector {
        ServiceSelector::Any => true,
        ServiceSelector::Exact => config.count == Some(1),
        ServiceSelector::All => {
            let first = eligible.first().map(|e| e.operator.as_deref());
            eligible.len() <= 1
                || first.flatten().is_some()
                    && eligible
                        .iter()
                        .all(|e| e.operator.as_deref() == first.flatten())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} asks for {:?} (count {:?}) of {} services; imgate submits to one",
            config.selector,
            config.count,
            eligible.len()
        ))
    }
}

/// Fetch and verify `signing_config.v0.2.json` from the TUF repository at
/// `url`, anchored at `tuf_root` (the public-good one when `None`), with the
/// TUF state in `state`: the same checks as the trusted root
/// ([`super::fetch_trusted_root`]). Returns the target's bytes once they
/// also parse as a usable configuration.
pub async fn fetch_signing_config(
    url: &str,
    tuf_root: Option<&[u8]>,
    state: &std::path::Path,
) -> Result<Vec<u8>, super::SigstoreError> {
    let bytes = super::tuf::fetch_target(url, tuf_root, state, SIGNING_CONFIG_TARGET).await?;
    SigningConfig::from_json(&format!("{url} {SIGNING_CONFIG_TARGET}"), &bytes).map_err(|err| {
        super::SigstoreError::Update {
            url: url.to_string(),
            reason: err.to_string(),
        }
    })?;
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn config(rekor: &[(&str, u32)], tsa: bool, rekor_selector: &str) -> SigningConfig {
        let endpoint = |url: &str, version: u32| {
            serde_json::json!({
                "url": url, "majorApiVersion": version,
                "validFor": {"start": "2020-01-01T00:00:00Z"}, "operator": "op.test",
            })
        };
        let json = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [endpoint("https://fulcio.test", 1)],
            "oidcUrls": [],
            "rekorTlogUrls": rekor.iter().map(|(u, v)| endpoint(u, *v)).collect::<Vec<_>>(),
            "tsaUrls": if tsa { vec![endpoint("https://tsa.test/api/v1/timestamp", 1)] } else { vec![] },
            "rekorTlogConfig": {"selector": rekor_selector},
            "tsaConfig": {"selector": "ANY"},
        });
        SigningConfig::from_json("test.json", json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn public_good_names_fulcio_rekor_and_a_tsa() {
        let picked = SigningConfig::public_good()
            .unwrap()
            .select(true, true)
            .unwrap();
        assert_eq!(
            picked.fulcio.as_deref(),
            Some("https://fulcio.sigstore.dev")
        );
        assert_eq!(picked.rekor, ("https://rekor.sigstore.dev".to_string(), 1));
        assert!(picked.tsa.is_some());
    }

    #[test]
    fn bundles_prefer_v2_and_legacy_needs_v1() {
        let both = config(
            &[("https://v1.test", 1), ("https://v2.test", 2)],
            true,
            "ANY",
        );
        assert_eq!(both.select(true, false).unwrap().rekor.1, 2);
        assert_eq!(both.select(true, true).unwrap().rekor.0, "https://v1.test");
        let only_v2 = config(&[("https://v2.test", 2)], true, "ANY");
        let err = only_v2.select(true, true).unwrap_err().to_string();
        assert!(
            err.contains("--format bundle") && err.contains("test.json"),
            "{err}"
        );
    }

    #[test]
    fn v2_without_a_tsa_and_unsatisfiable_selectors_are_refused() {
        let err = config(&[("https://v2.test", 2)], false, "ANY")
            .select(true, false)
            .unwrap_err();
        assert!(err.to_string().contains("timestamp authority"), "{err}");
        let err = config(&[("https://v1.test", 1)], true, "EXACT")
            .select(true, false)
            .unwrap_err();
        assert!(err.to_string().contains("rekorTlogConfig"), "{err}");
        let err = config(&[], true, "ANY").select(false, false).unwrap_err();
        assert!(err.to_string().contains("no Rekor log"), "{err}");
        // Key signatures need no Fulcio; a TSA stays optional with a v1 log.
        let key = config(&[("https://v1.test", 1)], false, "ANY")
            .select(false, false)
            .unwrap();
        assert_eq!((key.fulcio, key.tsa), (None, None));
    }

    #[test]
    fn oversized_and_foreign_documents_are_refused_by_name() {
        let big = vec![b' '; MAX_SIGNING_CONFIG_BYTES as usize + 1];
        assert!(SigningConfig::from_json("big.json", &big)
            .unwrap_err()
            .to_string()
            .contains("big.json"));
        let err = SigningConfig::from_json(
            "root.json",
            br#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("root.json"), "{err}");
    }
}
