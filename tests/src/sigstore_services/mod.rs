//! A private Sigstore on loopback for keyless-signing tests: an OIDC token
//! issuer (JWTs signed with its own key, plus GitHub Actions' token
//! endpoint), Fulcio (v2 `signingCert`), Rekor v1 (entries with SET,
//! inclusion proof and checkpoint over a real Merkle tree) and Rekor v2
//! (`hashedrekord` 0.0.2 entries), and an RFC 3161 timestamp authority,
//! with the matching `trusted_root.json` and `signing_config.json`.
//!
//! Each service checks what the real one checks (token signature, audience
//! and expiry; proof of possession; entry signatures) and can be told to
//! misbehave ([`Faults`]): answer an error status, stall, issue a
//! certificate for another identity, log another body, timestamp with an
//! untrusted key or at the wrong time. [`PrivateSigstore::stop`] takes a
//! service down. Every request is counted per service.
//!
//! The CA, CT log and Rekor v1 keys are those of [`TestSigstore`]; the
//! servers run on the harness's background runtime, over plain HTTP (imgate
//! is told `--allow-http 127.0.0.1`) or, from [`PrivateSigstore::start_tls`],
//! over TLS with a certificate from a CA of their own (`--sigstore-ca`).

mod der;
mod fulcio;
mod oidc;
mod rekor;
mod tsa;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;

use crate::pki::{rustls_server_config, TestCa};
use crate::server::{spawn_router, ServerTask};
use crate::sigstore::{LogKey, TestSigstore};

pub use oidc::{TokenSpec, GITHUB_ISSUER, GITHUB_REQUEST_TOKEN, GITHUB_WORKFLOW_IDENTITY};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The services of the private instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Svc {
    /// The OIDC issuer (and GitHub Actions' token endpoint).
    Oidc,
    /// Fulcio.
    Fulcio,
    /// The Rekor v1 log.
    RekorV1,
    /// The Rekor v2 log.
    RekorV2,
    /// The timestamp authority.
    Tsa,
}

/// How a service answers instead of doing its job.
#[derive(Debug, Clone, Default)]
pub enum Fault {
    /// It does its job.
    #[default]
    None,
    /// It answers this status and body.
    Status(u16, String),
    /// It waits this long before doing its job.
    Delay(Duration),
}

/// What the services get wrong, on purpose.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Per service: an error answer or a stall.
    pub service: HashMap<Svc, Fault>,
    /// Fulcio issues certificates naming this identity instead of the token's.
    pub fulcio_identity: Option<String>,
    /// Rekor logs (and returns) another body than the one submitted.
    pub rekor_other_body: bool,
    /// The timestamp authority signs with a key the trusted root does not know.
    pub tsa_untrusted: bool,
    /// The timestamp authority's clock is off by this many seconds.
    pub tsa_clock_offset: i64,
}

/// Shared state of the servers.
pub(crate) struct State {
    pub(crate) authority: Mutex<TestSigstore>,
    pub(crate) issuer: oidc::Issuer,
    pub(crate) rekor_v1: Mutex<rekor::Log>,
    pub(crate) rekor_v2: Mutex<rekor::Log>,
    pub(crate) tsa: tsa::Authority,
    pub(crate) faults: Mutex<Faults>,
    calls: HashMap<Svc, AtomicUsize>,
}

impl State {
    /// Count a call to `svc` and apply its fault: `Some(answer)` when the
    /// service must answer that instead of doing its job.
    pub(crate) async fn enter(&self, svc: Svc) -> Option<axum::response::Response> {
        use axum::response::IntoResponse as _;
        if let Some(count) = self.calls.get(&svc) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        let fault = self.faults().service.get(&svc).cloned().unwrap_or_default();
        match fault {
            Fault::None => None,
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                None
            }
            Fault::Status(code, body) => {
                let status = axum::http::StatusCode::from_u16(code)
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                Some((status, body).into_response())
            }
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// The running private instance.
pub struct PrivateSigstore {
    state: Arc<State>,
    servers: Mutex<HashMap<Svc, ServerTask>>,
    urls: HashMap<Svc, String>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PrivateSigstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateSigstore")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

/// Which services a signing configuration names.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpec {
    /// The Rekor v1 log.
    pub rekor_v1: bool,
    /// The Rekor v2 log.
    pub rekor_v2: bool,
    /// The timestamp authority.
    pub tsa: bool,
}

impl PrivateSigstore {
    /// Start every service on 127.0.0.1 and write `trusted_root.json` and
    /// `signing_config.json` (Rekor v1 and the TSA) into a temp dir.
    pub async fn start() -> anyhow::Result<PrivateSigstore> {
        PrivateSigstore::start_with(None).await
    }

    /// [`PrivateSigstore::start`] with every service on HTTPS, its
    /// certificate from a CA of its own ([`PrivateSigstore::ca_path`]).
    pub async fn start_tls() -> anyhow::Result<PrivateSigstore> {
        PrivateSigstore::start_with(Some(TestCa::new("imgate-test-sigstore-tls")?)).await
    }

    async fn start_with(ca: Option<TestCa>) -> anyhow::Result<PrivateSigstore> {
        let tls = match &ca {
            Some(ca) => Some(rustls_server_config(&ca.server_cert()?)?),
            None => None,
        };
        let authority = TestSigstore::new()?;
        let state = Arc::new(State {
            authority: Mutex::new(authority),
            issuer: oidc::Issuer::new()?,
            rekor_v1: Mutex::new(rekor::Log::new(
                LogKey::generate()?,
                "rekor.imgate.test - 1",
            )),
            rekor_v2: Mutex::new(rekor::Log::new(LogKey::generate()?, "rekor-v2.imgate.test")),
            tsa: tsa::Authority::new()?,
            faults: Mutex::new(Faults::default()),
            calls: [Svc::Oidc, Svc::Fulcio, Svc::RekorV1, Svc::RekorV2, Svc::Tsa]
                .into_iter()
                .map(|s| (s, AtomicUsize::new(0)))
                .collect(),
        });
        let mut servers = HashMap::new();
        let mut urls = HashMap::new();
        for (svc, router) in [
            (Svc::Oidc, oidc::router(state.clone())),
            (Svc::Fulcio, fulcio::router(state.clone())),
            (Svc::RekorV1, rekor::router_v1(state.clone())),
            (Svc::RekorV2, rekor::router_v2(state.clone())),
            (Svc::Tsa, tsa::router(state.clone())),
        ] {
            let task = spawn_router(router, tls.clone()).await?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            urls.insert(svc, format!("{scheme}://{}", task.addr));
            servers.insert(svc, task);
        }
        let this = PrivateSigstore {
            state,
            servers: Mutex::new(servers),
            urls,
            dir: tempfile::tempdir()?,
        };
        if let Some(ca) = &ca {
            std::fs::write(this.ca_path(), ca.cert_pem())?;
        }
        std::fs::write(this.trusted_root_path(), this.trusted_root_json()?)?;
        this.write_signing_config(
            "signing_config.json",
            ConfigSpec {
                rekor_v1: true,
                rekor_v2: false,
                tsa: true,
            },
        )?;
        Ok(this)
    }

    /// The base URL of `svc` (the TSA's is its timestamp endpoint).
    pub fn url(&self, svc: Svc) -> String {
        let base = self.urls.get(&svc).cloned().unwrap_or_default();
        match svc {
            Svc::Tsa => format!("{base}/api/v1/timestamp"),
            _ => base,
        }
    }

    /// The issuer of the tokens [`PrivateSigstore::token`] mints.
    pub fn issuer(&self) -> String {
        self.url(Svc::Oidc)
    }

    /// GitHub Actions' token request URL (`ACTIONS_ID_TOKEN_REQUEST_URL`).
    pub fn actions_token_url(&self) -> String {
        format!("{}/actions/token?api-version=2.0", self.url(Svc::Oidc))
    }

    /// A signed JWT from the issuer.
    pub fn token(&self, spec: &TokenSpec) -> anyhow::Result<String> {
        self.state.issuer.mint(&self.issuer(), spec)
    }

    /// The temp dir holding the trust files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA of the services' TLS certificates (from
    /// [`PrivateSigstore::start_tls`]), PEM.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("tls-ca.pem")
    }

    /// `trusted_root.json`: the CA, the CT log, both Rekor logs and the TSA.
    pub fn trusted_root_path(&self) -> PathBuf {
        self.dir.path().join("trusted_root.json")
    }

    /// The default `signing_config.json` (Rekor v1 and the TSA).
    pub fn signing_config_path(&self) -> PathBuf {
        self.dir.path().join("signing_config.json")
    }

    /// Change what the services get wrong.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.state.faults.lock() {
            *f = faults;
        }
    }

    /// Requests `svc` received so far.
    pub fn calls(&self, svc: Svc) -> usize {
        self.state
            .calls
            .get(&svc)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    /// Entries logged so far by the Rekor v1 (`false`) or v2 (`true`) log.
    pub fn logged(&self, v2: bool) -> usize {
        let log = if v2 {
            &self.state.rekor_v2
        } else {
            &self.state.rekor_v1
        };
        log.lock().map_or(0, |l| l.len())
    }

    /// Take `svc` down: its port refuses connections from now on.
    pub fn stop(&self, svc: Svc) {
        if let Ok(mut servers) = self.servers.lock() {
            servers.remove(&svc);
        }
    }

    /// Write a signing configuration naming the services `spec` asks for;
    /// returns its path.
    pub fn write_signing_config(&self, name: &str, spec: ConfigSpec) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, self.signing_config_json(spec).to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The signing configuration `spec` describes.
    pub fn signing_config_json(&self, spec: ConfigSpec) -> serde_json::Value {
        let endpoint = |url: String, version: u32| {
            serde_json::json!({
                "url": url, "majorApiVersion": version,
                "validFor": {"start": "2020-01-01T00:00:00Z"}, "operator": "imgate.test",
            })
        };
        let mut logs = Vec::new();
        if spec.rekor_v1 {
            logs.push(endpoint(self.url(Svc::RekorV1), 1));
        }
        if spec.rekor_v2 {
            logs.push(endpoint(self.url(Svc::RekorV2), 2));
        }
        let tsas = if spec.tsa {
            vec![endpoint(self.url(Svc::Tsa), 1)]
        } else {
            Vec::new()
        };
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [endpoint(self.url(Svc::Fulcio), 1)],
            "oidcUrls": [endpoint(self.issuer(), 1)],
            "rekorTlogUrls": logs,
            "tsaUrls": tsas,
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaConfig": {"selector": "ANY"},
        })
    }

    /// The instance's `trusted_root.json`.
    pub fn trusted_root_json(&self) -> anyhow::Result<String> {
        let start = (time::OffsetDateTime::now_utc() - time::Duration::days(30))
            .format(&time::format_description::well_known::Rfc3339)?;
        let log = |key: &LogKey, url: String| {
            serde_json::json!({
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": B64.encode(key.spki_der()),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": B64.encode(key.id())},
            })
        };
        let authority = self
            .state
            .authority
            .lock()
            .map_err(|_| anyhow::anyhow!("authority lock poisoned"))?;
        let v1 = self
            .state
            .rekor_v1
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?;
        let v2 = self
            .state
            .rekor_v2
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?;
        let tsa_chain = self
            .state
            .tsa
            .trusted_chain()
            .iter()
            .map(|der| serde_json::json!({"rawBytes": B64.encode(der)}))
            .collect::<Vec<_>>();
        Ok(serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(v1.key(), self.url(Svc::RekorV1)), log(v2.key(), self.url(Svc::RekorV2))],
            "certificateAuthorities": [{
                "subject": {"organization": "imgate-test", "commonName": "imgate-test-fulcio"},
                "uri": self.url(Svc::Fulcio),
                "certChain": {"certificates": [{"rawBytes": B64.encode(authority.ca_der())}]},
                "validFor": {"start": start},
            }],
            "ctlogs": [log(authority.ct_log(), "https://ctfe.imgate.test".into())],
            "timestampAuthorities": [{
                "subject": {"organization": "imgate-test", "commonName": "imgate-test-tsa"},
                "uri": self.url(Svc::Tsa),
                "certChain": {"certificates": tsa_chain},
                "validFor": {"start": start},
            }],
        })
        .to_string())
    }

    /// sigstore-python's `--trust-config` document: the trusted root and the
    /// signing configuration in one.
    pub fn client_trust_config_json(&self, spec: ConfigSpec) -> anyhow::Result<String> {
        let root: serde_json::Value = serde_json::from_str(&self.trusted_root_json()?)?;
        Ok(serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": root,
            "signingConfig": self.signing_config_json(spec),
        })
        .to_string())
    }
}
