//! Keyless signatures in cosign's legacy `.sig` layout: a simple-signing
//! payload layer whose annotations carry the signature
//! (`dev.cosignproject.cosign/signature`), the Fulcio certificate
//! (`dev.sigstore.cosign/certificate`), its chain (`.../chain`) and the Rekor
//! entry with its SET (`dev.sigstore.cosign/bundle`).
//!
//! The pieces are exactly those of a Sigstore bundle v0.1 (a `hashedrekord`
//! entry with an inclusion promise over a message signature), so they are
//! reassembled into one and verified by the same code as any bundle: the
//! certificate chains to a trusted CA at the log's integrated time, the SCT
//! verifies, the SET verifies with the log's key, the entry's body names this
//! signature, certificate and payload digest, and the signature verifies over
//! the payload. Then the identity policy, and the payload must name the image
//! digest being verified.
//!
//! Key signatures in the same layout may carry the Rekor annotation too;
//! [`verify_legacy_key`] checks it as the policy's `tlog` mode says.
//!
//! The chain annotation is not trusted: trust comes only from the trusted
//! root's CAs. It is parsed so a malformed one is reported.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::bundle::{verify_bundle_bytes, ArtifactInput, BundlePolicy, VerifiedSignature};
use super::rekor::RekorBundle;
use super::{IdentityPolicy, SigstoreError, TlogMode, TrustRoot};
use sigstore_verify::crypto::VerificationKey;
use sigstore_verify::types::{DerPublicKey, SignatureBytes};

/// The annotations of one legacy keyless layer, and its payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct LegacyKeyless<'a> {
    /// The simple-signing payload exactly as stored in the blob.
    pub payload: &'a [u8],
    /// `dev.cosignproject.cosign/signature`: base64 ASN.1 signature.
    pub signature_b64: &'a str,
    /// `dev.sigstore.cosign/certificate`: the leaf, PEM.
    pub certificate_pem: &'a str,
    /// `dev.sigstore.cosign/chain`: intermediates and root, PEM (not trusted).
    pub chain_pem: Option<&'a str>,
    /// `dev.sigstore.cosign/bundle`: the Rekor entry and SET, JSON.
    pub rekor_bundle: Option<&'a str>,
}

/// The payload type cosign writes for image signatures.
const COSIGN_PAYLOAD_TYPE: &str = "cosign container image signature";

/// Verify a legacy keyless signature for the image `digest` (`sha256:<hex>`).
pub fn verify_legacy_keyless(
    sig: &LegacyKeyless<'_>,
    digest: &str,
    policy: &IdentityPolicy,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    let rekor = sig.rekor_bundle.ok_or_else(|| {
        SigstoreError::rejected(
            "keyless signature without a Rekor entry (dev.sigstore.cosign/bundle): \
             nothing proves the certificate was used while it was valid",
        )
    })?;
    let rekor = RekorBundle::parse(rekor.as_bytes())?;
    let leaf = pem_certificates("certificate", sig.certificate_pem)?;
    let [leaf] = leaf.as_slice() else {
        return Err(SigstoreError::Malformed {
            what: "certificate",
            reason: format!("{} certificates, wanted exactly one", leaf.len()),
        });
    };
    if let Some(chain) = sig.chain_pem {
        pem_certificates("certificate chain", chain)?;
    }
    let material = serde_json::json!({
        "x509CertificateChain": {"certificates": [{"rawBytes": base64::engine::general_purpose::STANDARD.encode(leaf)}]},
    });
    let bundle = v01_bundle(material, sig.signature_b64, sig.payload, &rekor)?;
    let verified = verify_bundle_bytes(
        &bundle,
        ArtifactInput::Bytes(sig.payload),
        &BundlePolicy::Keyless(policy.clone()),
        root,
    )?;
    check_payload_names(sig.payload, digest)?;
    Ok(verified)
}

/// Verify a legacy key signature (`dev.cosignproject.cosign/signature` over
/// the payload) for the image `digest`, with its Rekor annotation
/// (`dev.sigstore.cosign/bundle`) checked as `tlog` says: `Required` demands
/// a verified entry; `IfPresent` verifies one when it is there (a present but
/// invalid entry is a rejection, never a silent pass); `Ignore` skips it.
/// `spki_der` is the key's SubjectPublicKeyInfo; `name` names it in messages.
pub fn verify_legacy_key(
    payload: &[u8],
    signature_b64: &str,
    rekor_bundle: Option<&str>,
    (spki_der, name): (&[u8], &str),
    tlog: TlogMode,
    digest: &str,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    let verified = match (rekor_bundle, tlog) {
        (Some(rekor), TlogMode::Required | TlogMode::IfPresent) => {
            let rekor = RekorBundle::parse(rekor.as_bytes())?;
            let material = serde_json::json!({"publicKey": {"hint": ""}});
            let bundle = v01_bundle(material, signature_b64, payload, &rekor)?;
            verify_bundle_bytes(
                &bundle,
                ArtifactInput::Bytes(payload),
                &BundlePolicy::Key {
                    spki_der: spki_der.to_vec(),
                    name: name.to_string(),
                    tlog,
                },
                root,
            )?
        }
        (None, TlogMode::Required) => {
            return Err(SigstoreError::rejected(
                "no Rekor entry (dev.sigstore.cosign/bundle), and the policy requires one",
            ))
        }
        _ => {
            let key = DerPublicKey::new(spki_der.to_vec());
            let key = VerificationKey::from_spki(&key).map_err(|err| SigstoreError::Key {
                name: name.to_string(),
                reason: err.to_string(),
            })?;
            let sig = base64::engine::general_purpose::STANDARD
                .decode(signature_b64.trim())
                .map_err(|err| SigstoreError::Malformed {
                    what: "signature annotation",
                    reason: err.to_string(),
                })?;
            key.verify(payload, &SignatureBytes::new(sig))
                .map_err(|_| {
                    SigstoreError::rejected(format!(
                        "the signature does not verify with key {name}"
                    ))
                })?;
            VerifiedSignature::by_key(name, root)
        }
    };
    check_payload_names(payload, digest)?;
    Ok(verified)
}

/// The simple-signing payload must be a cosign image signature for `digest`.
pub fn check_payload_names(payload: &[u8], digest: &str) -> Result<(), SigstoreError> {
    let doc: serde_json::Value =
        serde_json::from_slice(payload).map_err(|err| SigstoreError::Malformed {
            what: "simple-signing payload",
            reason: err.to_string(),
        })?;
    let kind = doc.pointer("/critical/type").and_then(|v| v.as_str());
    if kind != Some(COSIGN_PAYLOAD_TYPE) {
        return Err(SigstoreError::Malformed {
            what: "simple-signing payload",
            reason: format!("critical.type is {kind:?}, not {COSIGN_PAYLOAD_TYPE:?}"),
        });
    }
    let named = doc
        .pointer("/critical/image/docker-manifest-digest")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if named != digest {
        return Err(SigstoreError::DigestMismatch {
            found: named.to_string(),
            wanted: digest.to_string(),
        });
    }
    Ok(())
}

fn pem_certificates(what: &'static str, pem: &str) -> Result<Vec<Vec<u8>>, SigstoreError> {
    let mut reader = std::io::Cursor::new(pem.as_bytes());
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| SigstoreError::Malformed {
            what,
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(SigstoreError::Malformed {
            what,
            reason: "no PEM CERTIFICATE block".into(),
        });
    }
    Ok(certs.into_iter().map(|c| c.as_ref().to_vec()).collect())
}

/// Reassemble the pieces as a Sigstore bundle v0.1.
fn v01_bundle(
    material: serde_json::Value,
    signature_b64: &str,
    payload: &[u8],
    rekor: &RekorBundle,
) -> Result<Vec<u8>, SigstoreError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let log_id = hex::decode(&rekor.payload.log_id).map_err(|err| SigstoreError::Malformed {
        what: "rekor log id",
        reason: err.to_string(),
    })?;
    // Checked here so a bad annotation is named, not reported as bundle JSON.
    b64.decode(signature_b64.trim())
        .map_err(|err| SigstoreError::Malformed {
            what: "signature annotation",
            reason: err.to_string(),
        })?;
    let mut bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": {
            "tlogEntries": [{
                "logIndex": rekor.payload.log_index.to_string(),
                "logId": {"keyId": b64.encode(log_id)},
                "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                "integratedTime": rekor.payload.integrated_time.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
                "canonicalizedBody": rekor.payload.body,
            }],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64.encode(Sha256::digest(payload))},
            "signature": signature_b64.trim(),
        },
    });
    if let (Some(vm), serde_json::Value::Object(extra)) =
        (bundle["verificationMaterial"].as_object_mut(), material)
    {
        vm.extend(extra);
    }
    serde_json::to_vec(&bundle).map_err(|err| SigstoreError::Malformed {
        what: "bundle",
        reason: err.to_string(),
    })
}
