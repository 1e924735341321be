//! A TUF repository made in the test and served on loopback: root,
//! timestamp, snapshot and targets roles with their own ECDSA P-256 keys,
//! metadata signed over securesystemslib's canonical JSON, and one target,
//! `trusted_root.json`. Tests can publish new versions, rotate the root key,
//! change served bytes behind the metadata's back, or serve an earlier
//! moment's files again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::http::{StatusCode, Uri};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::server::{block_on, spawn_router, ServerTask};

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// One role's key.
struct RoleKey {
    key: p256::ecdsa::SigningKey,
    id: String,
    public: Value,
}

impl RoleKey {
    fn generate() -> anyhow::Result<RoleKey> {
        let pair = rcgen::KeyPair::generate().context("generating a TUF key")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&pair.serialize_der())
            .context("reading a TUF key")?;
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding a TUF key")?;
        let public = json!({
            "keytype": "ecdsa",
            "scheme": "ecdsa-sha2-nistp256",
            "keyval": {"public": pem},
        });
        let id = hex::encode(Sha256::digest(canonical(&public).as_bytes()));
        Ok(RoleKey { key, id, public })
    }

    fn sign(&self, signed: &Value) -> Value {
        let sig: p256::ecdsa::Signature = self.key.sign(canonical(signed).as_bytes());
        json!({"keyid": self.id, "sig": hex::encode(sig.to_der().as_bytes())})
    }
}

/// Every file a repository served at one moment, to serve again later: a
/// mirror replaying old (still unexpired) metadata.
#[derive(Debug, Clone)]
pub struct Served(HashMap<String, Vec<u8>>);

/// The repository and its server.
pub struct TufRepo {
    files: Files,
    root_keys: Vec<RoleKey>,
    timestamp: RoleKey,
    snapshot: RoleKey,
    targets: RoleKey,
    root_version: u64,
    version: u64,
    first_root: Vec<u8>,
    server: ServerTask,
}

impl std::fmt::Debug for TufRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TufRepo")
            .field("addr", &self.server.addr)
            .finish_non_exhaustive()
    }
}

impl TufRepo {
    /// A new repository serving `trusted_root` as version 1 of everything.
    pub fn serve(trusted_root: &[u8]) -> anyhow::Result<TufRepo> {
        let files: Files = Arc::default();
        let served = files.clone();
        let router = axum::Router::new().fallback(move |uri: Uri| {
            let served = served.clone();
            async move {
                let path = uri.path().trim_start_matches('/').to_string();
                let found = served.lock().ok().and_then(|f| f.get(&path).cloned());
                match found {
                    Some(bytes) => (StatusCode::OK, bytes),
                    None => (StatusCode::NOT_FOUND, Vec::new()),
                }
            }
        });
        let server = block_on(spawn_router(router, None))?;
        let mut repo = TufRepo {
            files,
            root_keys: vec![RoleKey::generate()?],
            timestamp: RoleKey::generate()?,
            snapshot: RoleKey::generate()?,
            targets: RoleKey::generate()?,
            root_version: 0,
            version: 0,
            first_root: Vec::new(),
            server,
        };
        repo.first_root = repo.publish_root(&[0])?;
        repo.publish(trusted_root)?;
        Ok(repo)
    }

    /// The repository's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// `1.root.json`: the anchor a client starts from.
    pub fn first_root(&self) -> &[u8] {
        &self.first_root
    }

    /// Publish `trusted_root` as the next version of targets, snapshot and
    /// timestamp.
    pub fn publish(&mut self, trusted_root: &[u8]) -> anyhow::Result<()> {
        self.publish_targets(&[("trusted_root.json", trusted_root)])
    }

    /// Publish these targets (name, bytes) as the next version of targets,
    /// snapshot and timestamp.
    pub fn publish_targets(&mut self, files: &[(&str, &[u8])]) -> anyhow::Result<()> {
        self.version += 1;
        let v = self.version;
        let listed: serde_json::Map<String, Value> = files
            .iter()
            .map(|(name, bytes)| {
                let meta = json!({
                    "length": bytes.len(),
                    "hashes": {"sha256": hex::encode(Sha256::digest(bytes))},
                });
                (name.to_string(), meta)
            })
            .collect();
        let targets = json!({
            "_type": "targets", "spec_version": "1.0.31", "version": v, "expires": expires(),
            "targets": listed,
        });
        let targets = self.envelope(targets, &[&self.targets]);
        let snapshot = json!({
            "_type": "snapshot", "spec_version": "1.0.31", "version": v, "expires": expires(),
            "meta": {"targets.json": {"version": v}},
        });
        let snapshot = self.envelope(snapshot, &[&self.snapshot]);
        let timestamp = json!({
            "_type": "timestamp", "spec_version": "1.0.31", "version": v, "expires": expires(),
            "meta": {"snapshot.json": {"version": v}},
        });
        let timestamp = self.envelope(timestamp, &[&self.timestamp]);
        for (name, bytes) in files {
            self.put(&format!("targets/{name}"), bytes.to_vec())?;
        }
        self.put("targets.json", targets)?;
        self.put("snapshot.json", snapshot)?;
        self.put("timestamp.json", timestamp)?;
        Ok(())
    }

    /// Rotate to a new root key: `N.root.json` signed by the old and the new
    /// key, as TUF requires.
    pub fn rotate_root(&mut self) -> anyhow::Result<()> {
        self.root_keys.push(RoleKey::generate()?);
        let signers: Vec<usize> = vec![self.root_keys.len() - 2, self.root_keys.len() - 1];
        self.publish_root(&signers)?;
        Ok(())
    }

    /// What the repository serves now.
    pub fn served(&self) -> anyhow::Result<Served> {
        let files = self
            .files
            .lock()
            .map_err(|_| anyhow::anyhow!("TUF file map poisoned"))?;
        Ok(Served(files.clone()))
    }

    /// Serve exactly `served` again, as a mirror stuck at (or replaying)
    /// that moment would; later publications continue from the newest
    /// version made so far.
    pub fn serve_again(&self, served: &Served) -> anyhow::Result<()> {
        *self
            .files
            .lock()
            .map_err(|_| anyhow::anyhow!("TUF file map poisoned"))? = served.0.clone();
        Ok(())
    }

    /// Serve other bytes at `path` without touching the metadata.
    pub fn tamper(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.put(path, bytes)
    }

    fn publish_root(&mut self, signers: &[usize]) -> anyhow::Result<Vec<u8>> {
        self.root_version += 1;
        let current = self.root_keys.last().context("no root key")?;
        let mut keys = serde_json::Map::new();
        for k in [current, &self.timestamp, &self.snapshot, &self.targets] {
            keys.insert(k.id.clone(), k.public.clone());
        }
        let role = |k: &RoleKey| json!({"keyids": [k.id], "threshold": 1});
        let root = json!({
            "_type": "root", "spec_version": "1.0.31", "version": self.root_version,
            "expires": expires(), "consistent_snapshot": false, "keys": keys,
            "roles": {
                "root": role(current), "timestamp": role(&self.timestamp),
                "snapshot": role(&self.snapshot), "targets": role(&self.targets),
            },
        });
        let signing: Vec<&RoleKey> = signers
            .iter()
            .filter_map(|i| self.root_keys.get(*i))
            .collect();
        let bytes = self.envelope(root, &signing);
        self.put(&format!("{}.root.json", self.root_version), bytes.clone())?;
        Ok(bytes)
    }

    fn envelope(&self, signed: Value, keys: &[&RoleKey]) -> Vec<u8> {
        let signatures: Vec<Value> = keys.iter().map(|k| k.sign(&signed)).collect();
        json!({"signed": signed, "signatures": signatures})
            .to_string()
            .into_bytes()
    }

    fn put(&self, path: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.files
            .lock()
            .map_err(|_| anyhow::anyhow!("TUF file map poisoned"))?
            .insert(path.to_string(), bytes);
        Ok(())
    }
}

/// A day from now, in TUF's `YYYY-MM-DDTHH:MM:SSZ`.
fn expires() -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// securesystemslib's canonical JSON: sorted keys, no whitespace, strings
/// escaping only `"` and `\`, integers only. Written here independently of
/// the verifier's encoder, so the two check each other.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(&Value::String((*key).clone()), out);
                out.push(':');
                if let Some(v) = map.get(*key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
    }
}
