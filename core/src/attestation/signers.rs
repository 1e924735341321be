//! Who signed a DSSE envelope, judged by a set of allowed signers (the
//! same [`Requirements`] signatures use: keys, keyless authorities with
//! their trust roots, `tlog`): an allowed key over the envelope's PAE, or
//! a Fulcio certificate matching an authority with its log entry or
//! timestamp. Cryptography beyond a plain key signature is
//! `crate::sigstore`'s, as for signatures.
//!
//! Two shapes reach here: a Sigstore bundle (referrers) and a legacy `.att`
//! layer, whose certificate, chain and Rekor entry (an `intoto` entry with
//! its SET) sit in the layer's annotations; those are reassembled into a
//! bundle v0.1 and verified the same way.

use base64::Engine as _;
use serde::Serialize;

use crate::digest::Digest;
use crate::signature::bundle::{self, Envelope};
use crate::signature::{LayerAnnotations, Requirements};
use crate::sigstore::{
    self, ArtifactInput, BundlePolicy, RekorBundle, SigstoreError, VerifiedSignature,
};

/// Who signed a statement, as conditions see it (`signer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// `key` or `keyless`.
    pub kind: &'static str,
    /// The key's name (key signatures; empty for keyless).
    pub key: String,
    /// The certificate identity (keyless; empty for keys).
    pub identity: String,
    /// The certificate's OIDC issuer (keyless; empty for keys).
    pub issuer: String,
}

impl Signer {
    fn key(name: &str) -> Signer {
        Signer {
            kind: "key",
            key: name.to_string(),
            identity: String::new(),
            issuer: String::new(),
        }
    }

    fn keyless(v: &VerifiedSignature) -> Signer {
        Signer {
            kind: "keyless",
            key: String::new(),
            identity: v.identity.clone().unwrap_or_default(),
            issuer: v.issuer.clone().unwrap_or_default(),
        }
    }

    /// The signer a signature verdict names: a key of `req` by its name,
    /// else a keyless `IDENTITY from ISSUER` (how signature verdicts name
    /// keyless signers; neither part contains the separator).
    pub(crate) fn from_verdict_name(name: &str, req: &Requirements) -> Signer {
        if req.keys.iter().any(|k| k.name() == name) {
            return Signer::key(name);
        }
        match name.split_once(" from ") {
            Some((identity, issuer)) => Signer {
                kind: "keyless",
                key: String::new(),
                identity: identity.to_string(),
                issuer: issuer.to_string(),
            },
            None => Signer::key(name),
        }
    }

    /// How messages name the signer.
    pub fn describe(&self) -> String {
        if self.kind == "key" {
            format!("key {}", self.key)
        } else {
            format!("{} from {}", self.identity, self.issuer)
        }
    }
}

/// Why no allowed signer vouches for an envelope, in words.
pub(crate) type Refusal = String;

fn sha256_of(digest: &Digest) -> Option<[u8; 32]> {
    (digest.algorithm() == "sha256")
        .then(|| hex::decode(digest.hex()).ok())
        .flatten()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}

/// The first allowed key whose signature over the envelope's PAE verifies.
fn key_signer<'a>(
    req: &'a Requirements,
    envelope: &Envelope,
) -> Result<&'a imgate_keys::PublicKey, Refusal> {
    let pae = envelope.pae()?;
    let sigs = envelope.signature_bytes();
    if sigs.is_empty() {
        return Err("the envelope has no readable signature".to_string());
    }
    req.keys
        .iter()
        .find(|key| sigs.iter().any(|sig| key.verify(&pae, sig).is_ok()))
        .ok_or_else(|| {
            format!(
                "not signed by any of the allowed keys ({})",
                req.key_names().join(", ")
            )
        })
}

/// The first keyless authority of `req` that `bundle` (for the artifact
/// `sha256`) verifies under, or every authority's reason.
fn keyless_signer(req: &Requirements, bundle: &[u8], sha256: [u8; 32]) -> Result<Signer, Refusal> {
    if req.keyless.is_empty() {
        return Err(format!(
            "signed with a certificate, but no keyless signer is allowed (allowed keys: {})",
            req.key_names().join(", ")
        ));
    }
    let mut reasons = Vec::new();
    for authority in &req.keyless {
        let root = match &authority.trust_root {
            Some(root) => std::sync::Arc::clone(root),
            None => req.root().map_err(|err| err.to_string())?,
        };
        // Under the rule's `tlog`, as signatures are: a bundle with a
        // trusted timestamp and no log entry (GitHub's attestations for
        // private repositories) passes unless the rule says `required`.
        match sigstore::verify_keyless_bundle(
            bundle,
            ArtifactInput::Sha256(sha256),
            &authority.identity,
            req.tlog,
            &root,
        ) {
            Ok(verified) => return Ok(Signer::keyless(&verified)),
            Err(err) => {
                let reason = keyless_reason(err);
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
        }
    }
    Err(reasons.join("; "))
}

fn keyless_reason(err: SigstoreError) -> String {
    match err {
        SigstoreError::DigestMismatch { found, wanted } => {
            format!("the statement is about {found}, not {wanted}")
        }
        other => format!("keyless: {other}"),
    }
}

fn no_keys(req: &Requirements) -> Refusal {
    format!(
        "signed with a key, not a certificate; wanted {}",
        req.keyless_names().join(" or ")
    )
}

/// Who signed a Sigstore bundle carrying a DSSE envelope, for a statement
/// about `digest`.
pub(crate) fn bundle_signer(
    bundle_bytes: &[u8],
    parsed: &bundle::Bundle,
    envelope: &Envelope,
    digest: &Digest,
    req: &Requirements,
) -> Result<Signer, Refusal> {
    let material = &parsed.verification_material;
    let keyless =
        material.get("certificate").is_some() || material.get("x509CertificateChain").is_some();
    let sha256 = sha256_of(digest).ok_or_else(|| format!("{digest} is not a sha256 digest"))?;
    if keyless {
        return keyless_signer(req, bundle_bytes, sha256);
    }
    if req.keys.is_empty() {
        return Err(no_keys(req));
    }
    let key = key_signer(req, envelope)?;
    if req.tlog_applies(bundle::has_log_evidence(material)) {
        check_key_tlog(bundle_bytes, sha256, key, req)?;
    }
    Ok(Signer::key(key.name()))
}

/// A key signature's log evidence through `crate::sigstore`; a statement
/// for another digest is reported by the subject check, not here.
fn check_key_tlog(
    bundle_bytes: &[u8],
    sha256: [u8; 32],
    key: &imgate_keys::PublicKey,
    req: &Requirements,
) -> Result<(), Refusal> {
    let root = req
        .root()
        .map_err(|err| format!("transparency log: {err}"))?;
    let policy = BundlePolicy::Key {
        spki_der: key.to_spki_der().to_vec(),
        name: key.name().to_string(),
        tlog: req.tlog,
    };
    match sigstore::verify_bundle_bytes(bundle_bytes, ArtifactInput::Sha256(sha256), &policy, &root)
    {
        Ok(_) | Err(SigstoreError::DigestMismatch { .. }) => Ok(()),
        Err(err) => Err(format!("transparency log: {err}")),
    }
}

/// Who signed a legacy `.att` layer (`envelope_bytes` is the layer blob,
/// `ann` its annotations), for a statement about `digest`.
pub(crate) fn legacy_signer(
    envelope_bytes: &[u8],
    envelope: &Envelope,
    ann: &LayerAnnotations,
    digest: &Digest,
    req: &Requirements,
) -> Result<Signer, Refusal> {
    let sha256 = sha256_of(digest).ok_or_else(|| format!("{digest} is not a sha256 digest"))?;
    if let Some(certificate) = ann.certificate.as_deref() {
        let rekor = ann.rekor_bundle.as_deref().ok_or_else(|| {
            "keyless: no Rekor entry (dev.sigstore.cosign/bundle): nothing proves the \
             certificate was used while it was valid"
                .to_string()
        })?;
        let bundle = v01_bundle(envelope_bytes, Some(certificate), rekor)?;
        return keyless_signer(req, &bundle, sha256);
    }
    if req.keys.is_empty() {
        return Err(no_keys(req));
    }
    let key = key_signer(req, envelope)?;
    if req.tlog_applies(ann.rekor_bundle.is_some()) {
        let Some(rekor) = ann.rekor_bundle.as_deref() else {
            return Err(
                "transparency log: no Rekor entry (dev.sigstore.cosign/bundle), and the policy requires one"
                    .to_string(),
            );
        };
        let bundle = v01_bundle(envelope_bytes, None, rekor)?;
        check_key_tlog(&bundle, sha256, key, req)?;
    }
    Ok(Signer::key(key.name()))
}

/// A legacy layer's envelope, certificate and Rekor entry as a Sigstore
/// bundle v0.1: the envelope as `dsseEnvelope`, the entry (its kind and
/// version read from its body) with its SET as inclusion promise.
fn v01_bundle(
    envelope_bytes: &[u8],
    certificate_pem: Option<&str>,
    rekor: &str,
) -> Result<Vec<u8>, Refusal> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let rekor = RekorBundle::parse(rekor.as_bytes()).map_err(|err| err.to_string())?;
    let body = bundle::decode_base64(&rekor.payload.body)
        .map_err(|err| format!("the Rekor entry's body is not base64: {err}"))?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|err| format!("the Rekor entry's body is not JSON: {err}"))?;
    let kind = body
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let version = body
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let log_id = hex::decode(&rekor.payload.log_id)
        .map_err(|err| format!("the Rekor entry's log id is not hex: {err}"))?;
    let envelope: serde_json::Value = serde_json::from_slice(envelope_bytes)
        .map_err(|err| format!("the envelope is not JSON: {err}"))?;
    let mut material = serde_json::json!({
        "tlogEntries": [{
            "logIndex": rekor.payload.log_index.to_string(),
            "logId": {"keyId": b64.encode(log_id)},
            "kindVersion": {"kind": kind, "version": version},
            "integratedTime": rekor.payload.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
            "canonicalizedBody": rekor.payload.body,
        }],
    });
    match certificate_pem {
        Some(pem) => {
            let mut reader = std::io::Cursor::new(pem.as_bytes());
            let leaf = rustls_pemfile::certs(&mut reader)
                .next()
                .ok_or_else(|| "the certificate annotation holds no certificate".to_string())?
                .map_err(|err| format!("the certificate annotation: {err}"))?;
            material["x509CertificateChain"] =
                serde_json::json!({"certificates": [{"rawBytes": b64.encode(leaf.as_ref())}]});
        }
        None => material["publicKey"] = serde_json::json!({"hint": ""}),
    }
    serde_json::to_vec(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": material,
        "dsseEnvelope": envelope,
    }))
    .map_err(|err| err.to_string())
}
