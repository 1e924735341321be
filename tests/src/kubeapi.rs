//! A Kubernetes API server for the webhook's reads, on loopback over TLS:
//! it serves the objects it is given by path (service accounts, secrets,
//! namespaces) to a bearer token, and counts requests per path. With
//! [`KubeApi::env`] the real `imgate webhook` binary finds it as it finds a
//! cluster's: `KUBERNETES_SERVICE_HOST`/`_PORT`, and a service account
//! directory holding the token and the cluster CA.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::pki::{rustls_server_config, TestCa};
use crate::server::{spawn_router, ServerTask};

/// The bearer token the API accepts.
pub const TOKEN: &str = "imgate-test-token";

type Objects = Arc<Mutex<HashMap<String, Value>>>;
type Hits = Arc<Mutex<Vec<String>>>;

/// A running fake API server.
#[derive(Debug)]
pub struct KubeApi {
    task: ServerTask,
    objects: Objects,
    hits: Hits,
    dir: tempfile::TempDir,
}

async fn handler(
    State((objects, hits)): State<(Objects, Hits)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<axum::Json<Value>, StatusCode> {
    if let Ok(mut hits) = hits.lock() {
        hits.push(uri.path().to_string());
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let found = objects.lock().ok().and_then(|o| o.get(uri.path()).cloned());
    found.map(axum::Json).ok_or(StatusCode::NOT_FOUND)
}

impl KubeApi {
    /// Starts an API server with no objects.
    pub async fn start() -> anyhow::Result<KubeApi> {
        let ca = TestCa::new("imgate test cluster CA")?;
        let tls = rustls_server_config(&ca.server_cert()?)?;
        let objects: Objects = Arc::default();
        let hits: Hits = Arc::default();
        let app = axum::Router::new()
            .fallback(handler)
            .with_state((objects.clone(), hits.clone()));
        let task = spawn_router(app, Some(tls)).await?;
        let dir = tempfile::tempdir().context("creating the service account directory")?;
        std::fs::write(dir.path().join("token"), TOKEN)?;
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem())?;
        Ok(KubeApi {
            task,
            objects,
            hits,
            dir,
        })
    }

    /// Serves `object` at `path` (e.g. `/api/v1/namespaces/a/secrets/b`).
    pub fn put(&self, path: &str, object: Value) {
        if let Ok(mut objects) = self.objects.lock() {
            objects.insert(path.to_string(), object);
        }
    }

    /// A `kubernetes.io/dockerconfigjson` pull secret `namespace/name` for
    /// `registry` with a user name and password.
    pub fn put_pull_secret(
        &self,
        namespace: &str,
        name: &str,
        registry: &str,
        username: &str,
        password: &str,
    ) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = json!({"auths": {registry: {"auth": b64(&format!("{username}:{password}"))}}});
        self.put(
            &format!("/api/v1/namespaces/{namespace}/secrets/{name}"),
            json!({"type": "kubernetes.io/dockerconfigjson",
                   "data": {".dockerconfigjson": b64(&config.to_string())}}),
        );
    }

    /// The paths asked for so far, in order.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The service account directory (`token`, `ca.crt`).
    pub fn service_account_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment under which `imgate webhook` reaches this server as
    /// its cluster.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "KUBERNETES_SERVICE_HOST".into(),
                self.task.addr.ip().to_string(),
            ),
            (
                "KUBERNETES_SERVICE_PORT".into(),
                self.task.addr.port().to_string(),
            ),
            (
                "IMGATE_KUBE_SERVICE_ACCOUNT_DIR".into(),
                self.dir.path().display().to_string(),
            ),
        ]
    }
}
