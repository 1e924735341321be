//! A fake Kubernetes API server for the webhook's pull secrets: serves the
//! Secrets and ServiceAccounts a test gives it over TLS (a test CA), checks
//! the bearer token, and records every read by path; plus the service
//! account directory (`token`, `ca.crt`) and environment through which the
//! real `imgate webhook` finds it, as it would in a pod.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::pki::{rustls_server_config, TestCa};
use crate::server::{spawn_router, ServerTask};

/// The service account token the fake API accepts.
pub const TOKEN: &str = "imgate-test-service-account-token";

type Shared = (Arc<HashMap<String, Value>>, Arc<Mutex<Vec<String>>>);

async fn answer(
    State((objects, reads)): State<Shared>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<axum::Json<Value>, StatusCode> {
    if let Ok(mut reads) = reads.lock() {
        reads.push(uri.path().to_string());
    }
    let bearer = format!("Bearer {TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    objects
        .get(uri.path())
        .cloned()
        .map(axum::Json)
        .ok_or(StatusCode::NOT_FOUND)
}

/// A running fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeKubeApi {
    server: ServerTask,
    reads: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl FakeKubeApi {
    /// Serves `objects` by API path (`/api/v1/namespaces/NS/secrets/NAME`).
    pub async fn start(objects: HashMap<String, Value>) -> anyhow::Result<FakeKubeApi> {
        let ca = TestCa::new("imgate fake kubernetes api CA")?;
        let tls = rustls_server_config(&ca.server_cert()?)?;
        let reads = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .fallback(answer)
            .with_state((Arc::new(objects), reads.clone()));
        let server = spawn_router(router, Some(tls)).await?;
        let dir = tempfile::tempdir().context("service account dir")?;
        std::fs::write(dir.path().join("token"), TOKEN)?;
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem())?;
        std::fs::write(dir.path().join("namespace"), "imgate-system")?;
        Ok(FakeKubeApi { server, reads, dir })
    }

    /// The paths read so far, in order.
    pub fn reads(&self) -> Vec<String> {
        self.reads.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The service account directory (`token`, `ca.crt`, `namespace`).
    pub fn service_account_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment of a pod: `KUBERNETES_SERVICE_HOST` and `_PORT`,
    /// and `IMGATE_KUBE_SERVICE_ACCOUNT_DIR` naming the directory above.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "KUBERNETES_SERVICE_HOST".to_string(),
                self.server.addr.ip().to_string(),
            ),
            (
                "KUBERNETES_SERVICE_PORT".to_string(),
                self.server.addr.port().to_string(),
            ),
            (
                "IMGATE_KUBE_SERVICE_ACCOUNT_DIR".to_string(),
                self.dir.path().display().to_string(),
            ),
        ]
    }
}

/// The API path of a namespaced object (`secrets`, `serviceaccounts`).
pub fn path(namespace: &str, resource: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/{resource}/{name}")
}

/// A `kubernetes.io/dockerconfigjson` Secret with `username:password` for
/// `registry`.
pub fn pull_secret(registry: &str, username: &str, password: &str) -> Value {
    let auth = STANDARD.encode(format!("{username}:{password}"));
    let config = json!({"auths": {registry: {"auth": auth}}});
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": STANDARD.encode(config.to_string())}
    })
}

/// A ServiceAccount without pull secrets of its own.
pub fn service_account() -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount"})
}
