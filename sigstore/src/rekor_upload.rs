//! Recording a signature in Rekor, in the entry kinds cosign 3 writes:
//!
//! - Rekor v1 (`POST /api/v1/log/entries`): `hashedrekord` 0.0.1 for a
//!   signature over bytes (a legacy `.sig` payload, a blob), `dsse` 0.0.1
//!   for a DSSE envelope; the answer carries the signed entry timestamp
//!   (SET), the inclusion proof and a checkpoint.
//! - Rekor v2 (`POST /api/v2/log/entries`): `hashedrekord` 0.0.2 for both;
//!   a DSSE envelope is logged as the digest of its pre-authentication
//!   encoding (the Rekor v2 specification; sigstore-python 4.5 and
//!   sigstore-rust write and verify the same). The answer has an inclusion
//!   proof and checkpoint, no SET: time comes from a timestamp authority.
//!
//! The verifier (certificate or public key) travels in the entry, so the
//! log says who signed. Request bodies for v2 come from `sigstore-rekor`;
//! v1 bodies are written here because the crate builds them only for
//! certificates, and key signatures are logged too.

use std::collections::BTreeMap;

use base64::Engine as _;
use sigstore_verify::rekor::{HashedRekordV2, LogEntry, RekorV2KeyDetails};
use sigstore_verify::types::{
    DerCertificate, DerPublicKey, DsseEnvelope, KindVersion, Sha256Hash, SignatureBytes,
    TransparencyLogEntry,
};

use super::services::{Body, Call, ServiceClient};
use super::sign_error::{Service, SigningError};

/// Largest answer read: the entry body (a few KiB with a certificate), a
/// proof of up to 64 hashes and a checkpoint.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Who made the signature, as the log records it.
#[derive(Debug, Clone)]
pub(crate) enum Verifier {
    /// A Fulcio leaf certificate, DER.
    Certificate(Vec<u8>),
    /// A public key, SubjectPublicKeyInfo DER.
    Key(Vec<u8>),
}

impl Verifier {
    fn pem(&self) -> String {
        match self {
            Verifier::Certificate(der) => pem("CERTIFICATE", der),
            Verifier::Key(der) => pem("PUBLIC KEY", der),
        }
    }
}

/// PEM as Go's `encoding/pem` (and so cosign and Rekor) writes it: 64-column
/// lines, LF. Verifiers compare the PEM in a log entry with their own
/// encoding of the certificate, byte for byte.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// What is logged.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Entry<'a> {
    /// A signature over content whose SHA-256 is `digest`.
    Hashed {
        digest: [u8; 32],
        signature: &'a [u8],
    },
    /// A DSSE envelope (one signature) and the SHA-256 of its PAE.
    Dsse {
        envelope: &'a DsseEnvelope,
        pae_digest: [u8; 32],
        signature: &'a [u8],
    },
}

/// Log `entry` by `verifier` at the Rekor `base_url` speaking API `version`.
pub(crate) async fn upload(
    client: &ServiceClient,
    (base_url, version): (&str, u32),
    entry: Entry<'_>,
    verifier: Verifier,
) -> Result<TransparencyLogEntry, SigningError> {
    let base = base_url.trim_end_matches('/');
    let url = format!("{base}/api/v{version}/log/entries");
    let bad = |answer: String| SigningError::Service {
        service: Service::Rekor,
        url: url.clone(),
        answer,
    };
    let (request, kind) = match version {
        1 => v1_request(entry, &verifier),
        2 => (v2_request(entry, &verifier)?, KindVersion::HashedRekordV002),
        other => {
            return Err(bad(format!(
                "Rekor API v{other} is not supported (1 and 2 are)"
            )))
        }
    };
    let answer = client
        .send(Call {
            service: Service::Rekor,
            url: &url,
            body: Body::Json(&request),
            bearer: None,
            accept: "application/json",
            max_bytes: MAX_ANSWER_BYTES,
            // A 502 may hide an entry that was written; sending it again
            // would answer 409 at best. Connection failures still retry.
            retry_server_errors: false,
        })
        .await?;
    if version == 2 {
        return serde_json::from_slice(&answer)
            .map_err(|err| bad(format!("answered an unreadable log entry: {err}")));
    }
    let entries: BTreeMap<String, LogEntry> = serde_json::from_slice(&answer)
        .map_err(|err| bad(format!("answered an unreadable log entry: {err}")))?;
    let mut entries = entries.into_values();
    match (entries.next(), entries.next()) {
        (Some(entry), None) => entry
            .to_bundle_entry(kind)
            .map_err(|err| bad(format!("answered an unusable log entry: {err}"))),
        _ => Err(bad("answered other than exactly one log entry".into())),
    }
}

fn v1_request(entry: Entry<'_>, verifier: &Verifier) -> (serde_json::Value, KindVersion) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let verifier_b64 = b64.encode(verifier.pem());
    match entry {
        Entry::Hashed { digest, signature } => (
            serde_json::json!({
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": hex::encode(digest)}},
                    "signature": {"content": b64.encode(signature), "publicKey": {"content": verifier_b64}},
                },
            }),
            KindVersion::HashedRekordV001,
        ),
        Entry::Dsse { envelope, .. } => (
            serde_json::json!({
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {"proposedContent": {
                    // Rekor wants the envelope as a JSON string.
                    "envelope": serde_json::to_string(envelope).unwrap_or_default(),
                    "verifiers": [verifier_b64],
                }},
            }),
            KindVersion::DsseV001,
        ),
    }
}

fn v2_request(entry: Entry<'_>, verifier: &Verifier) -> Result<serde_json::Value, SigningError> {
    let (digest, signature) = match entry {
        Entry::Hashed { digest, signature } => (digest, signature),
        Entry::Dsse {
            pae_digest,
            signature,
            ..
        } => (pae_digest, signature),
    };
    let digest = Sha256Hash::new(digest);
    let signature = SignatureBytes::new(signature.to_vec());
    let details = RekorV2KeyDetails::PkixEcdsaP256Sha256;
    let request = match verifier {
        Verifier::Certificate(der) => HashedRekordV2::new_with_certificate(
            &digest,
            &signature,
            &DerCertificate::new(der.clone()),
            details,
        ),
        Verifier::Key(der) => HashedRekordV2::new_with_public_key(
            &digest,
            &signature,
            &DerPublicKey::new(der.clone()),
            details,
        ),
    };
    serde_json::to_value(request).map_err(|err| SigningError::Config {
        name: "Rekor v2 request".into(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn request_shapes_match_the_rekor_apis() {
        let key = imgate_keys::SigningKey::generate().public_key();
        let verifier = Verifier::Key(key.to_spki_der().to_vec());
        let entry = Entry::Hashed {
            digest: [7; 32],
            signature: b"sig",
        };
        let (v1, kind) = v1_request(entry, &verifier);
        assert_eq!(kind, KindVersion::HashedRekordV001);
        assert_eq!(v1["spec"]["data"]["hash"]["value"], hex::encode([7; 32]));
        let pem = base64::engine::general_purpose::STANDARD
            .decode(
                v1["spec"]["signature"]["publicKey"]["content"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert!(String::from_utf8(pem)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        let v2 = v2_request(entry, &verifier).unwrap();
        let req = &v2["hashedRekordRequestV002"];
        assert_eq!(
            req["signature"]["verifier"]["keyDetails"],
            "PKIX_ECDSA_P256_SHA_256"
        );
        assert!(req["signature"]["verifier"]["publicKey"]["rawBytes"].is_string());
        assert!(req["digest"].is_string());
    }
}
