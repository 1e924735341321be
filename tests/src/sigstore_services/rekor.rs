//! Rekor: a real RFC 6962 Merkle tree per log, signed checkpoints, and the
//! two write APIs.
//!
//! - v1 `POST /api/v1/log/entries`: `hashedrekord` 0.0.1 and `dsse` 0.0.1
//!   proposals; the signature is checked against the verifier (certificate
//!   or public key) as Rekor does; the answer is `{uuid: entry}` with the
//!   SET, the inclusion proof (hex hashes) and the checkpoint.
//! - v2 `POST /api/v2/log/entries`: `hashedRekordRequestV002`; the answer is
//!   a `TransparencyLogEntry` with inclusion proof and checkpoint, no SET
//!   and no integrated time.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256};

use super::{der, State, Svc};
use crate::sigstore::LogKey;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

type Hash = [u8; 32];

/// One log: its key, origin and leaves.
pub(crate) struct Log {
    key: LogKey,
    origin: String,
    leaves: Vec<Hash>,
}

impl Log {
    pub(crate) fn new(key: LogKey, origin: &str) -> Log {
        Log {
            key,
            origin: origin.to_string(),
            leaves: Vec::new(),
        }
    }

    pub(crate) fn key(&self) -> &LogKey {
        &self.key
    }

    pub(crate) fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Append `body`; its index, the tree size, root, audit path and the
    /// signed checkpoint.
    fn append(&mut self, body: &[u8]) -> Appended {
        let mut leaf = vec![0u8];
        leaf.extend_from_slice(body);
        self.leaves.push(Sha256::digest(&leaf).into());
        let index = self.leaves.len() - 1;
        let root = tree_hash(&self.leaves);
        let path = audit_path(index, &self.leaves);
        let note = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.leaves.len(),
            B64.encode(root)
        );
        let mut sig = self.key.id()[..4].to_vec();
        sig.extend(self.key.sign(note.as_bytes()));
        // The signature line names the log by its host, without the tree ID.
        let name = self.origin.split(' ').next().unwrap_or_default();
        let checkpoint = format!("{note}\n\u{2014} {name} {}\n", B64.encode(sig));
        Appended {
            index,
            size: self.leaves.len(),
            root,
            path,
            checkpoint,
        }
    }
}

struct Appended {
    index: usize,
    size: usize,
    root: Hash,
    path: Vec<Hash>,
    checkpoint: String,
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two below `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn tree_hash(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
        }
    }
}

fn audit_path(index: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    if index < k {
        let mut path = audit_path(index, &leaves[..k]);
        path.push(tree_hash(&leaves[k..]));
        path
    } else {
        let mut path = audit_path(index - k, &leaves[k..]);
        path.push(tree_hash(&leaves[..k]));
        path
    }
}

pub(crate) fn router_v1(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/log/entries", post(create_v1))
        .with_state(state)
}

pub(crate) fn router_v2(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/api/v2/log/entries", post(create_v2))
        .with_state(state)
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({"code": 400, "message": message.to_string()})),
    )
        .into_response()
}

/// The P-256 key of a PEM public key or certificate.
fn verifying_key_from_pem(pem: &str) -> anyhow::Result<p256::ecdsa::VerifyingKey> {
    if pem.contains("BEGIN CERTIFICATE") {
        let text: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        return verifying_key_from_cert(&B64.decode(text.trim())?);
    }
    Ok(p256::PublicKey::from_public_key_pem(pem)?.into())
}

fn verifying_key_from_cert(der: &[u8]) -> anyhow::Result<p256::ecdsa::VerifyingKey> {
    let cert = der::read(der)?;
    let tbs = der::read(cert.content)?;
    let fields = der::children(tbs.content)?;
    // version, serial, signature, issuer, validity, subject, spki
    let spki = fields.get(6).context("certificate without a public key")?;
    Ok(p256::PublicKey::from_public_key_der(spki.whole)?.into())
}

fn verify_prehash(
    key: &p256::ecdsa::VerifyingKey,
    digest: &[u8],
    sig: &[u8],
) -> anyhow::Result<()> {
    let sig = p256::ecdsa::Signature::from_der(sig)?;
    key.verify_prehash(digest, &sig)?;
    Ok(())
}

/// The canonical body of a v1 proposal, after checking its signature(s).
fn v1_body(proposal: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    match proposal["kind"].as_str() {
        Some("hashedrekord") => {
            let spec = &proposal["spec"];
            let digest = hex::decode(spec["data"]["hash"]["value"].as_str().context("no hash")?)?;
            let sig = B64.decode(
                spec["signature"]["content"]
                    .as_str()
                    .context("no signature")?,
            )?;
            let pem_b64 = spec["signature"]["publicKey"]["content"]
                .as_str()
                .context("no key")?;
            let pem = String::from_utf8(B64.decode(pem_b64)?)?;
            verify_prehash(&verifying_key_from_pem(&pem)?, &digest, &sig)
                .context("the signature does not verify")?;
            Ok(serde_json::json!({
                "apiVersion": "0.0.1", "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": hex::encode(&digest)}},
                    "signature": {"content": B64.encode(&sig), "publicKey": {"content": pem_b64}},
                },
            }))
        }
        Some("dsse") => {
            let content = &proposal["spec"]["proposedContent"];
            let envelope_text = content["envelope"].as_str().context("no envelope")?;
            let envelope: serde_json::Value = serde_json::from_str(envelope_text)?;
            let payload = B64.decode(envelope["payload"].as_str().context("no payload")?)?;
            let payload_type = envelope["payloadType"].as_str().context("no payloadType")?;
            let mut pae = format!(
                "DSSEv1 {} {payload_type} {} ",
                payload_type.len(),
                payload.len()
            )
            .into_bytes();
            pae.extend_from_slice(&payload);
            let pae_digest = Sha256::digest(&pae);
            let verifier_b64 = content["verifiers"][0].as_str().context("no verifier")?;
            let key = verifying_key_from_pem(&String::from_utf8(B64.decode(verifier_b64)?)?)?;
            let mut signatures = Vec::new();
            for s in envelope["signatures"].as_array().context("no signatures")? {
                let sig = B64.decode(s["sig"].as_str().context("no sig")?)?;
                verify_prehash(&key, &pae_digest, &sig).context("the signature does not verify")?;
                signatures.push(
                    serde_json::json!({"signature": B64.encode(&sig), "verifier": verifier_b64}),
                );
            }
            Ok(serde_json::json!({
                "apiVersion": "0.0.1", "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(envelope.to_string()))},
                    "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
                    "signatures": signatures,
                },
            }))
        }
        other => anyhow::bail!("unsupported entry kind {other:?}"),
    }
}

/// A body describing another signature: what a log that lies would return.
fn other_body(body: &serde_json::Value) -> serde_json::Value {
    let mut other = body.clone();
    let decoy = hex::encode(Sha256::digest(b"another artifact"));
    for pointer in ["/spec/data/hash/value", "/spec/payloadHash/value"] {
        if let Some(v) = other.pointer_mut(pointer) {
            *v = decoy.clone().into();
        }
    }
    if let Some(v) = other.pointer_mut("/spec/hashedRekordV002/data/digest") {
        *v = B64.encode(Sha256::digest(b"another artifact")).into();
    }
    other
}

fn poisoned() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "log lock poisoned").into_response()
}

async fn create_v1(
    AxumState(state): AxumState<Arc<State>>,
    Json(proposal): Json<serde_json::Value>,
) -> Response {
    if let Some(answer) = state.enter(Svc::RekorV1).await {
        return answer;
    }
    let body = match v1_body(&proposal) {
        Ok(body) => body,
        Err(err) => return bad_request(format!("{err:#}")),
    };
    let body = if state.faults().rekor_other_body {
        other_body(&body)
    } else {
        body
    };
    let body = body.to_string();
    let Ok(mut log) = state.rekor_v1.lock() else {
        return poisoned();
    };
    let at = log.append(body.as_bytes());
    let integrated = time::OffsetDateTime::now_utc().unix_timestamp();
    let body_b64 = B64.encode(&body);
    let log_id = hex::encode(log.key().id());
    let canonical = format!(
        "{{\"body\":\"{body_b64}\",\"integratedTime\":{integrated},\"logID\":\"{log_id}\",\"logIndex\":{}}}",
        at.index
    );
    let set = log.key().sign(canonical.as_bytes());
    let uuid = hex::encode(Sha256::digest(body.as_bytes()));
    (
        StatusCode::CREATED,
        Json(serde_json::json!({ uuid: {
            "body": body_b64,
            "integratedTime": integrated,
            "logID": log_id,
            "logIndex": at.index,
            "verification": {
                "signedEntryTimestamp": B64.encode(set),
                "inclusionProof": {
                    "checkpoint": at.checkpoint,
                    "hashes": at.path.iter().map(hex::encode).collect::<Vec<_>>(),
                    "logIndex": at.index,
                    "rootHash": hex::encode(at.root),
                    "treeSize": at.size,
                },
            },
        }})),
    )
        .into_response()
}

/// The body of a v2 `hashedRekordRequestV002`, after checking its signature.
fn v2_body(request: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let req = request
        .get("hashedRekordRequestV002")
        .context("only hashedRekordRequestV002 is supported")?;
    let digest = B64.decode(req["digest"].as_str().context("no digest")?)?;
    let sig = B64.decode(
        req["signature"]["content"]
            .as_str()
            .context("no signature")?,
    )?;
    let verifier = &req["signature"]["verifier"];
    let key = if let Some(cert) = verifier["x509Certificate"]["rawBytes"].as_str() {
        verifying_key_from_cert(&B64.decode(cert)?)?
    } else {
        let spki = B64.decode(
            verifier["publicKey"]["rawBytes"]
                .as_str()
                .context("no verifier")?,
        )?;
        p256::PublicKey::from_public_key_der(&spki)?.into()
    };
    verify_prehash(&key, &digest, &sig).context("the signature does not verify")?;
    Ok(serde_json::json!({
        "apiVersion": "0.0.2", "kind": "hashedrekord",
        "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": B64.encode(&digest)},
            "signature": {"content": B64.encode(&sig), "verifier": verifier},
        }},
    }))
}

async fn create_v2(
    AxumState(state): AxumState<Arc<State>>,
    Json(request): Json<serde_json::Value>,
) -> Response {
    if let Some(answer) = state.enter(Svc::RekorV2).await {
        return answer;
    }
    let body = match v2_body(&request) {
        Ok(body) => body,
        Err(err) => return bad_request(format!("{err:#}")),
    };
    let body = if state.faults().rekor_other_body {
        other_body(&body)
    } else {
        body
    };
    let body = body.to_string();
    let Ok(mut log) = state.rekor_v2.lock() else {
        return poisoned();
    };
    let at = log.append(body.as_bytes());
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "logIndex": at.index.to_string(),
            "logId": {"keyId": B64.encode(log.key().id())},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
            "inclusionProof": {
                "logIndex": at.index.to_string(),
                "rootHash": B64.encode(at.root),
                "treeSize": at.size.to_string(),
                "hashes": at.path.iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
                "checkpoint": {"envelope": at.checkpoint},
            },
            "canonicalizedBody": B64.encode(&body),
        })),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// Recompute the root from a leaf and its path (RFC 9162 2.1.3.2).
    fn root_from(index: usize, size: usize, leaf: Hash, path: &[Hash]) -> Hash {
        let (mut fn_, mut sn, mut r) = (index, size - 1, leaf);
        for p in path {
            if fn_ % 2 == 1 || fn_ == sn {
                r = node(p, &r);
                while fn_ % 2 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            } else {
                r = node(&r, p);
            }
            fn_ >>= 1;
            sn >>= 1;
        }
        r
    }

    #[test]
    fn audit_paths_lead_to_the_root_for_every_size() {
        let leaves: Vec<Hash> = (0u8..13).map(|i| Sha256::digest([i]).into()).collect();
        for size in 1..=leaves.len() {
            let root = tree_hash(&leaves[..size]);
            for index in 0..size {
                let path = audit_path(index, &leaves[..size]);
                assert_eq!(
                    root_from(index, size, leaves[index], &path),
                    root,
                    "{index}/{size}"
                );
            }
        }
    }
}
