//! A loopback stand-in for the transit secrets engine of HashiCorp Vault and
//! OpenBao, over TLS with a CA made in the test, for the endpoints imgate
//! uses, answering as Vault's API documentation describes them:
//!
//! - `GET /v1/MOUNT/keys/NAME`: `data.type`, `data.latest_version`,
//!   `data.keys["N"].public_key` (PEM) for ECDSA keys; 404 `{"errors":[]}`
//!   for a missing key.
//! - `POST /v1/MOUNT/keys/NAME` `{"type": ...}`: creates the key (an existing
//!   key is left unchanged) and answers with the key as read.
//! - `POST /v1/MOUNT/keys/NAME/rotate`: adds a version.
//! - `POST /v1/MOUNT/sign/NAME[/HASH]` `{"input", "prehashed",
//!   "hash_algorithm", "key_version", "marshaling_algorithm"}`: signs with
//!   the requested (default newest) version, `data.signature` =
//!   `vault:vN:BASE64(DER)`; 400 `{"errors":["signing key not found"]}` for a
//!   missing key.
//! - Any path without `X-Vault-Token` equal to the server's token: 403
//!   `{"errors":["permission denied"]}`; a path under no mount: 404
//!   `{"errors":["no handler for route ..."]}`.
//!
//! The keys are real P-256 keys; requests are recorded so tests can check
//! what imgate sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{json, Value};

use crate::pki::{rustls_server_config, TestCa};
use crate::server::{background, spawn_router, ServerTask};

/// One request as the fake Vault saw it.
#[derive(Debug, Clone)]
pub struct VaultRequest {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v1/transit/sign/k/sha2-256`.
    pub path: String,
    /// The `X-Vault-Token` header, if any.
    pub token: Option<String>,
    /// The JSON body, `null` if none.
    pub body: Value,
}

#[derive(Debug)]
struct Key {
    key_type: String,
    /// Index 0 is version 1. Empty for key types the fake does not sign with.
    versions: Vec<p256::ecdsa::SigningKey>,
}

#[derive(Debug, Default)]
struct Inner {
    /// mount -> key name -> key.
    mounts: BTreeMap<String, BTreeMap<String, Key>>,
    requests: Vec<VaultRequest>,
}

#[derive(Debug)]
struct Shared {
    token: String,
    inner: Mutex<Inner>,
}

/// A running fake Vault; stops when dropped.
#[derive(Debug)]
pub struct FakeVault {
    _task: ServerTask,
    shared: Arc<Shared>,
    addr: String,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeVault {
    /// Starts a fake Vault accepting `token`, with transit mounted at each
    /// of `mounts` (e.g. `transit`).
    pub async fn start(token: &str, mounts: &[&str]) -> anyhow::Result<FakeVault> {
        let ca = TestCa::new("imgate test Vault CA")?;
        let tls = rustls_server_config(&ca.server_cert()?)?;
        let dir = tempfile::tempdir().context("tempdir for the Vault CA")?;
        let ca_file = dir.path().join("vault-ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).context("writing the Vault CA")?;
        let shared = Arc::new(Shared {
            token: token.to_string(),
            inner: Mutex::new(Inner {
                mounts: mounts
                    .iter()
                    .map(|m| (m.trim_matches('/').to_string(), BTreeMap::new()))
                    .collect(),
                requests: Vec::new(),
            }),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = spawn_router(router, Some(tls)).await?;
        let addr = format!("https://127.0.0.1:{}", task.addr.port());
        // The background runtime must be up before the first request.
        let _ = background();
        Ok(FakeVault {
            _task: task,
            shared,
            addr,
            ca_file,
            _dir: dir,
        })
    }

    /// `https://127.0.0.1:PORT`, for `VAULT_ADDR`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The CA's certificate file, for `VAULT_CACERT`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Creates key `name` of `key_type` under `mount` (ECDSA P-256 keys get
    /// a real key as version 1).
    pub fn add_key(&self, mount: &str, name: &str, key_type: &str) {
        let mut inner = lock(&self.shared);
        if let Some(keys) = inner.mounts.get_mut(mount) {
            keys.insert(name.to_string(), Key::new(key_type));
        }
    }

    /// Adds a version to key `name` under `mount`.
    pub fn rotate(&self, mount: &str, name: &str) {
        let mut inner = lock(&self.shared);
        if let Some(key) = inner.mounts.get_mut(mount).and_then(|k| k.get_mut(name)) {
            key.rotate();
        }
    }

    /// The PKIX PEM of version `version` of key `name` under `mount`.
    pub fn public_key_pem(&self, mount: &str, name: &str, version: usize) -> Option<String> {
        let inner = lock(&self.shared);
        let key = inner.mounts.get(mount)?.get(name)?;
        key.versions
            .get(version.checked_sub(1)?)
            .and_then(public_pem)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<VaultRequest> {
        lock(&self.shared).requests.clone()
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    // A poisoned lock only means another handler panicked; the data is fine.
    shared.inner.lock().unwrap_or_else(|e| e.into_inner())
}

fn public_pem(key: &p256::ecdsa::SigningKey) -> Option<String> {
    key.verifying_key().to_public_key_pem(LineEnding::LF).ok()
}

impl Key {
    fn new(key_type: &str) -> Key {
        let mut key = Key {
            key_type: key_type.to_string(),
            versions: Vec::new(),
        };
        key.rotate();
        key
    }

    fn rotate(&mut self) {
        if self.key_type == "ecdsa-p256" {
            self.versions
                .push(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng));
        }
    }

    fn latest(&self) -> usize {
        self.versions.len().max(1)
    }

    /// The body of a key read, as Vault answers it.
    fn read_answer(&self, name: &str) -> Value {
        let keys: serde_json::Map<String, Value> = if self.versions.is_empty() {
            // Symmetric keys list creation times only.
            std::iter::once(("1".to_string(), json!(1_700_000_000))).collect()
        } else {
            self.versions
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    (
                        (i + 1).to_string(),
                        json!({
                            "creation_time": "2026-01-01T00:00:00.000000000Z",
                            "name": "P-256",
                            "public_key": public_pem(k).unwrap_or_default(),
                        }),
                    )
                })
                .collect()
        };
        json!({
            "request_id": "00000000-0000-0000-0000-000000000000",
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": {
                "name": name,
                "type": self.key_type,
                "latest_version": self.latest(),
                "min_available_version": 0,
                "min_decryption_version": 1,
                "min_encryption_version": 0,
                "deletion_allowed": false,
                "derived": false,
                "exportable": false,
                "supports_signing": !self.versions.is_empty(),
                "supports_encryption": self.versions.is_empty(),
                "keys": keys,
            },
            "wrap_info": null,
            "warnings": null,
            "auth": null,
        })
    }
}

fn errors(status: StatusCode, messages: &[&str]) -> Response {
    (status, Json(json!({ "errors": messages }))).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return errors(StatusCode::BAD_REQUEST, &["failed to parse JSON input"]),
        }
    };
    let path = uri.path().to_string();
    let mut inner = lock(&shared);
    inner.requests.push(VaultRequest {
        method: method.to_string(),
        path: path.clone(),
        token: token.clone(),
        body: body.clone(),
    });
    if token.as_deref() != Some(shared.token.as_str()) {
        return errors(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    let Some(route) = path.strip_prefix("/v1/") else {
        return errors(StatusCode::NOT_FOUND, &[]);
    };
    let mount = inner
        .mounts
        .keys()
        .filter(|m| route.starts_with(&format!("{m}/")))
        .max_by_key(|m| m.len())
        .cloned();
    let Some(mount) = mount else {
        let message = format!("no handler for route \"{route}\". route entry not found.");
        return errors(StatusCode::NOT_FOUND, &[&message]);
    };
    let rest = &route[mount.len() + 1..];
    let Some(keys) = inner.mounts.get_mut(&mount) else {
        return errors(StatusCode::NOT_FOUND, &[]);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["keys", name]) => match keys.get(*name) {
            Some(key) => Json(key.read_answer(name)).into_response(),
            None => errors(StatusCode::NOT_FOUND, &[]),
        },
        ("POST" | "PUT", ["keys", name]) => {
            let key_type = body
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("aes256-gcm96");
            let key = keys
                .entry((*name).to_string())
                .or_insert_with(|| Key::new(key_type));
            Json(key.read_answer(name)).into_response()
        }
        ("POST" | "PUT", ["keys", name, "rotate"]) => match keys.get_mut(*name) {
            Some(key) => {
                key.rotate();
                Json(key.read_answer(name)).into_response()
            }
            None => errors(StatusCode::BAD_REQUEST, &["key not found"]),
        },
        ("POST" | "PUT", ["sign", name]) => sign(keys.get(*name), &body, None),
        ("POST" | "PUT", ["sign", name, hash]) => sign(keys.get(*name), &body, Some(hash)),
        _ => {
            let message = format!("unsupported path {rest:?} in the fake Vault");
            errors(StatusCode::METHOD_NOT_ALLOWED, &[&message])
        }
    }
}

fn sign(key: Option<&Key>, body: &Value, url_hash: Option<&str>) -> Response {
    let Some(key) = key else {
        return errors(StatusCode::BAD_REQUEST, &["signing key not found"]);
    };
    if key.versions.is_empty() {
        let message = format!("key type {} does not support signing", key.key_type);
        return errors(StatusCode::BAD_REQUEST, &[&message]);
    }
    let hash = url_hash
        .or_else(|| body.get("hash_algorithm").and_then(Value::as_str))
        .unwrap_or("sha2-256");
    if hash != "sha2-256" {
        let message = format!("unsupported hash algorithm {hash} in the fake Vault");
        return errors(StatusCode::BAD_REQUEST, &[&message]);
    }
    if body.get("prehashed").and_then(Value::as_bool) != Some(true) {
        return errors(
            StatusCode::BAD_REQUEST,
            &["the fake Vault only signs prehashed input"],
        );
    }
    if body
        .get("marshaling_algorithm")
        .and_then(Value::as_str)
        .is_some_and(|m| m != "asn1")
    {
        return errors(
            StatusCode::BAD_REQUEST,
            &["unsupported marshaling algorithm"],
        );
    }
    let Some(input) = body.get("input").and_then(Value::as_str) else {
        return errors(StatusCode::BAD_REQUEST, &["missing input to process"]);
    };
    let Ok(digest) = STANDARD.decode(input) else {
        return errors(
            StatusCode::BAD_REQUEST,
            &["unable to decode input as base64"],
        );
    };
    let version = match body.get("key_version").and_then(Value::as_u64) {
        None | Some(0) => key.versions.len(),
        Some(v) => usize::try_from(v).unwrap_or(usize::MAX),
    };
    let Some(signing_key) = version.checked_sub(1).and_then(|i| key.versions.get(i)) else {
        return errors(
            StatusCode::BAD_REQUEST,
            &["requested version for signing does not exist"],
        );
    };
    let signature: p256::ecdsa::Signature = match signing_key.sign_prehash(&digest) {
        Ok(s) => s,
        Err(_) => return errors(StatusCode::BAD_REQUEST, &["invalid digest length"]),
    };
    let encoded = STANDARD.encode(signature.to_der().as_bytes());
    Json(json!({
        "request_id": "00000000-0000-0000-0000-000000000001",
        "data": {
            "signature": format!("vault:v{version}:{encoded}"),
            "key_version": version,
        },
    }))
    .into_response()
}
