//! cosign's `dev.sigstore.cosign/bundle` annotation: a Rekor entry with its
//! Signed Entry Timestamp (SET), the log's signature over the RFC 8785
//! canonical JSON of `{body, integratedTime, logID, logIndex}`.

use base64::Engine as _;
use serde::Deserialize;
use sigstore_verify::crypto::VerificationKey;
use sigstore_verify::types::{LogKeyId, SignatureBytes};

use super::{SigstoreError, TrustRoot};

/// Largest annotation parsed (a hashedrekord body with a certificate is
/// ~3 KiB).
const MAX_REKOR_BUNDLE_BYTES: usize = 64 * 1024;

/// The annotation's JSON, as cosign writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RekorBundle {
    /// Base64 ASN.1 signature by the log over the canonical payload.
    pub signed_entry_timestamp: String,
    /// The logged entry.
    pub payload: RekorPayload,
}

/// The part of a Rekor entry the SET signs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RekorPayload {
    /// Base64 of the entry body (a `hashedrekord` JSON document).
    pub body: String,
    /// When the log integrated the entry (Unix seconds).
    pub integrated_time: i64,
    /// Position in the log.
    pub log_index: i64,
    /// Hex SHA-256 of the log's public key.
    #[serde(rename = "logID")]
    pub log_id: String,
}

impl RekorBundle {
    /// Parse the annotation value.
    pub fn parse(json: &[u8]) -> Result<RekorBundle, SigstoreError> {
        let malformed = |reason: String| SigstoreError::Malformed {
            what: "rekor bundle annotation",
            reason,
        };
        if json.len() > MAX_REKOR_BUNDLE_BYTES {
            return Err(malformed(format!(
                "{} bytes, more than the {MAX_REKOR_BUNDLE_BYTES} imgate reads",
                json.len()
            )));
        }
        let bundle: RekorBundle =
            serde_json::from_slice(json).map_err(|err| malformed(err.to_string()))?;
        if bundle.payload.log_index < 0 || bundle.payload.integrated_time < 0 {
            return Err(malformed("negative log index or integrated time".into()));
        }
        Ok(bundle)
    }

    /// The bytes the SET signs: RFC 8785 canonical JSON, keys in code-point
    /// order. Written out by hand because the four fields are fixed; the
    /// strings go through serde_json, whose escaping agrees with RFC 8785.
    pub fn canonical_payload(&self) -> Result<Vec<u8>, SigstoreError> {
        let text = |s: &str| {
            serde_json::to_string(s).map_err(|err| SigstoreError::Malformed {
                what: "rekor bundle annotation",
                reason: err.to_string(),
            })
        };
        Ok(format!(
            "{{\"body\":{},\"integratedTime\":{},\"logID\":{},\"logIndex\":{}}}",
            text(&self.payload.body)?,
            self.payload.integrated_time,
            text(&self.payload.log_id)?,
            self.payload.log_index
        )
        .into_bytes())
    }

    /// The decoded entry body.
    pub fn body(&self) -> Result<Vec<u8>, SigstoreError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.payload.body)
            .map_err(|err| SigstoreError::Malformed {
                what: "rekor entry body",
                reason: err.to_string(),
            })
    }

    /// Verify the SET with the trusted root's key for `logID`, valid at the
    /// integrated time.
    pub fn verify_set(&self, root: &TrustRoot) -> Result<(), SigstoreError> {
        let id = hex::decode(&self.payload.log_id).map_err(|err| SigstoreError::Malformed {
            what: "rekor log id",
            reason: err.to_string(),
        })?;
        let time = jiff::Timestamp::from_second(self.payload.integrated_time).map_err(|err| {
            SigstoreError::Malformed {
                what: "rekor integrated time",
                reason: err.to_string(),
            }
        })?;
        let key = root
            .root
            .rekor_key_for_log_at(&LogKeyId::from_bytes(&id), time)
            .map_err(|_| {
                SigstoreError::rejected(format!(
                    "no Rekor key in trusted root {} for log {} at {time}",
                    root.name(),
                    self.payload.log_id
                ))
            })?;
        let key = VerificationKey::from_spki(&key).map_err(|err| SigstoreError::TrustRoot {
            name: root.name().to_string(),
            reason: format!("Rekor key for log {}: {err}", self.payload.log_id),
        })?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&self.signed_entry_timestamp)
            .map_err(|err| SigstoreError::Malformed {
                what: "signed entry timestamp",
                reason: err.to_string(),
            })?;
        key.verify(self.canonical_payload()?, &SignatureBytes::new(sig))
            .map_err(|_| {
                SigstoreError::rejected(format!(
                    "the Rekor signed entry timestamp for log index {} does not verify",
                    self.payload.log_index
                ))
            })
    }
}
