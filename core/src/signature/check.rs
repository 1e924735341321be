//! The checks one signature goes through, over bytes already fetched: no
//! network here, so every rule is unit-tested against real cosign data.
//!
//! Order matters for the report: a signature that does not verify with an
//! allowed key (or, keyless, with an allowed identity under the trust root)
//! proves nothing about its payload, so its payload is not inspected
//! (reporting "wrong digest" from an unauthenticated payload would mislead).
//! Once the signature verifies, every content check runs and each failure is
//! reported.
//!
//! Cryptography beyond a plain key signature (certificates, SCTs, Rekor
//! entries, timestamps) is `crate::sigstore`'s: this module only decides
//! which of its checks a signature needs and maps its answer to [`Unmet`].

use std::collections::BTreeMap;

use imgate_keys::PublicKey;

use super::bundle::{self, COSIGN_SIGN_PREDICATE};
use super::collect::LayerAnnotations;
use super::payload::{self, SIMPLE_SIGNING_TYPE};
use super::requirements::{Requirements, SignatureId, Unmet, Verified};
use super::Format;
use crate::digest::Digest;
use crate::sigstore::{
    self, ArtifactInput, BundlePolicy, LegacyKeyless, SigstoreError, VerifiedSignature,
};

/// The first allowed key that verifies `sig` over `message`.
fn verifying_key<'a>(req: &'a Requirements, message: &[u8], sig: &[u8]) -> Option<&'a PublicKey> {
    req.keys.iter().find(|key| key.verify(message, sig).is_ok())
}

/// Required annotations that `found` lacks or contradicts.
fn annotation_unmet(
    id: SignatureId,
    req: &Requirements,
    found: &BTreeMap<String, String>,
) -> Vec<Unmet> {
    req.annotations
        .iter()
        .filter(|(key, want)| found.get(*key) != Some(*want))
        .map(|(key, want)| Unmet::MissingAnnotation {
            signature: id,
            key: key.clone(),
            want: want.clone(),
            found: found.get(key).cloned(),
        })
        .collect()
}

fn malformed(id: SignatureId, detail: impl Into<String>) -> Vec<Unmet> {
    vec![Unmet::Malformed {
        signature: Some(id),
        detail: detail.into(),
    }]
}

/// How a keyless signature is named in a [`Verified`]: who, and by whose word.
fn signer_name(v: &VerifiedSignature) -> String {
    format!(
        "{} from {}",
        v.identity.as_deref().unwrap_or_default(),
        v.issuer.as_deref().unwrap_or_default()
    )
}

/// A keyless failure as an [`Unmet`]: a digest mismatch found after the
/// signature verified is reported as such; anything else names the
/// identity found and wanted (or what failed) in the verifier's words.
fn keyless_unmet(id: SignatureId, digest: &Digest, err: SigstoreError) -> Unmet {
    match err {
        SigstoreError::DigestMismatch { found, .. } => Unmet::DigestMismatch {
            signature: id,
            found,
            want: digest.clone(),
        },
        other => Unmet::Keyless {
            signature: id,
            reason: other.to_string(),
        },
    }
}

/// Why a certificate-signed signature meets no requirement when the rule
/// allows no keyless signer, and vice versa.
fn no_authority(id: SignatureId, req: &Requirements, keyless: bool) -> Unmet {
    if keyless {
        Unmet::Keyless {
            signature: id,
            reason: format!(
                "signed with a certificate, but no keyless signer is allowed (allowed keys: {})",
                req.key_names().join(", ")
            ),
        }
    } else {
        Unmet::Keyless {
            signature: id,
            reason: format!(
                "signed with a key, not a certificate; wanted {}",
                req.keyless_names().join(" or ")
            ),
        }
    }
}

/// Tries every keyless authority with `verify`, answering with the first
/// signer that satisfies one, or every authority's reason.
fn first_keyless(
    id: SignatureId,
    digest: &Digest,
    req: &Requirements,
    verify: impl Fn(
        &sigstore::IdentityPolicy,
        &sigstore::TrustRoot,
    ) -> Result<VerifiedSignature, SigstoreError>,
) -> Result<String, Vec<Unmet>> {
    let mut unmet = Vec::new();
    for authority in &req.keyless {
        let root = match &authority.trust_root {
            Some(root) => std::sync::Arc::clone(root),
            None => req
                .root()
                .map_err(|err| vec![keyless_unmet(id, digest, err)])?,
        };
        match verify(&authority.identity, &root) {
            Ok(verified) => return Ok(signer_name(&verified)),
            Err(err) => {
                super::requirements::push_unique(&mut unmet, keyless_unmet(id, digest, err))
            }
        }
    }
    Err(unmet)
}

/// A log-entry failure of a key signature as an [`Unmet`]; payload problems
/// are left to the content checks, which report them precisely.
fn tlog_unmet(id: SignatureId, err: SigstoreError) -> Option<Unmet> {
    match err {
        SigstoreError::DigestMismatch { .. } => None,
        SigstoreError::Malformed {
            what: "simple-signing payload",
            ..
        } => None,
        other => Some(Unmet::Tlog {
            signature: id,
            reason: other.to_string(),
        }),
    }
}

/// Who signed a legacy layer: a keyless signer (the layer carries a
/// certificate) or an allowed key, with its Rekor annotation checked per the
/// rule's `tlog`.
fn legacy_signer(
    id: SignatureId,
    payload_bytes: &[u8],
    signature: &str,
    ann: &LayerAnnotations,
    digest: &Digest,
    req: &Requirements,
) -> Result<String, Vec<Unmet>> {
    if let Some(certificate) = ann.certificate.as_deref() {
        if req.keyless.is_empty() {
            return Err(vec![no_authority(id, req, true)]);
        }
        let sig = LegacyKeyless {
            payload: payload_bytes,
            signature_b64: signature,
            certificate_pem: certificate,
            chain_pem: ann.chain.as_deref(),
            rekor_bundle: ann.rekor_bundle.as_deref(),
        };
        return first_keyless(id, digest, req, |policy, root| {
            sigstore::verify_legacy_keyless(&sig, digest.as_str(), policy, root)
        });
    }
    if req.keys.is_empty() {
        return Err(vec![no_authority(id, req, false)]);
    }
    let Ok(der) = bundle::decode_base64(signature) else {
        return Err(malformed(id, "signature annotation is not base64"));
    };
    let Some(key) = verifying_key(req, payload_bytes, &der) else {
        return Err(vec![Unmet::WrongKey {
            signature: id,
            keys: req.key_names(),
        }]);
    };
    if req.tlog_applies(ann.rekor_bundle.is_some()) {
        let root = req.root().map_err(|err| {
            vec![Unmet::Tlog {
                signature: id,
                reason: err.to_string(),
            }]
        })?;
        if let Err(err) = sigstore::verify_legacy_key(
            payload_bytes,
            signature,
            ann.rekor_bundle.as_deref(),
            (key.to_spki_der(), key.name()),
            req.tlog,
            digest.as_str(),
            &root,
        ) {
            if let Some(unmet) = tlog_unmet(id, err) {
                return Err(vec![unmet]);
            }
        }
    }
    Ok(key.name().to_string())
}

/// Checks one legacy signature: `payload` is the layer blob (already checked
/// against its descriptor), `ann` the layer's annotations (signature, and for
/// keyless signatures certificate, chain and Rekor entry). `repository` is
/// the image's `registry/repository`.
pub(crate) fn legacy(
    index: usize,
    payload_bytes: &[u8],
    ann: &LayerAnnotations,
    digest: &Digest,
    repository: &str,
    req: &Requirements,
) -> Result<Verified, Vec<Unmet>> {
    let id = SignatureId {
        index,
        format: Format::Legacy,
    };
    let Some(signature) = ann.signature.as_deref() else {
        return Err(malformed(
            id,
            format!("layer has no {} annotation", super::SIGNATURE_ANNOTATION),
        ));
    };
    let signer = legacy_signer(id, payload_bytes, signature, ann, digest, req)?;
    let payload = payload::parse(payload_bytes).map_err(|detail| malformed(id, detail))?;
    let mut unmet = Vec::new();
    if payload.kind != SIMPLE_SIGNING_TYPE {
        unmet.push(Unmet::WrongType {
            signature: id,
            found: payload.kind.clone(),
        });
    }
    if payload.manifest_digest != digest.as_str() {
        unmet.push(Unmet::DigestMismatch {
            signature: id,
            found: payload.manifest_digest.clone(),
            want: digest.clone(),
        });
    }
    if req.match_repository
        && payload::normalise_repository(&payload.docker_reference)
            != payload::normalise_repository(repository)
    {
        unmet.push(Unmet::RepositoryMismatch {
            signature: id,
            found: payload.docker_reference.clone(),
            want: repository.to_string(),
        });
    }
    unmet.extend(annotation_unmet(id, req, &payload.optional));
    if unmet.is_empty() {
        Ok(Verified {
            digest: digest.clone(),
            format: Format::Legacy,
            key: signer,
            annotations: payload.optional,
        })
    } else {
        Err(unmet)
    }
}

/// True when `bundle_bytes` is (as far as can be told without verifying it)
/// an image signature rather than an attestation, so attestations sharing
/// the referrers mechanism are not counted. Unreadable bundles count, so
/// that they are reported rather than silently skipped.
pub(crate) fn is_signature_bundle(bundle_bytes: &[u8]) -> bool {
    let statement = bundle::parse_bundle(bundle_bytes)
        .ok()
        .and_then(|b| b.dsse_envelope)
        .and_then(|env| env.statement().ok());
    match statement {
        Some(statement) => statement.predicate_type == COSIGN_SIGN_PREDICATE,
        None => true,
    }
}

/// Who signed a bundle: a keyless signer (the bundle carries a certificate),
/// or an allowed key, with the bundle's log entry verified per the rule's
/// `tlog` (a key bundle without one keeps imgate's own check).
fn bundle_signer(
    id: SignatureId,
    bundle_bytes: &[u8],
    parsed: &bundle::Bundle,
    envelope: &bundle::Envelope,
    digest: &Digest,
    req: &Requirements,
) -> Result<String, Vec<Unmet>> {
    let material = &parsed.verification_material;
    let keyless =
        material.get("certificate").is_some() || material.get("x509CertificateChain").is_some();
    let sha256 = (digest.algorithm() == "sha256")
        .then(|| hex::decode(digest.hex()).ok())
        .flatten()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
    if keyless {
        if req.keyless.is_empty() {
            return Err(vec![no_authority(id, req, true)]);
        }
        let Some(sha256) = sha256 else {
            return Err(malformed(id, format!("{digest} is not a sha256 digest")));
        };
        return first_keyless(id, digest, req, |policy, root| {
            sigstore::verify_keyless_bundle(
                bundle_bytes,
                ArtifactInput::Sha256(sha256),
                policy,
                req.tlog,
                root,
            )
        });
    }
    if req.keys.is_empty() {
        return Err(vec![no_authority(id, req, false)]);
    }
    let pae = envelope.pae().map_err(|detail| malformed(id, detail))?;
    let sigs = envelope.signature_bytes();
    if sigs.is_empty() {
        return Err(malformed(id, "envelope has no readable signature"));
    }
    let Some(key) = sigs.iter().find_map(|sig| verifying_key(req, &pae, sig)) else {
        return Err(vec![Unmet::WrongKey {
            signature: id,
            keys: req.key_names(),
        }]);
    };
    if req.tlog_applies(bundle::has_log_evidence(material)) {
        let tlog = |reason: String| {
            vec![Unmet::Tlog {
                signature: id,
                reason,
            }]
        };
        // The subject is checked below with a precise report; a bundle for
        // another digest must not fail here as a log problem.
        let Some(sha256) = sha256 else {
            return Err(malformed(id, format!("{digest} is not a sha256 digest")));
        };
        let root = req.root().map_err(|err| tlog(err.to_string()))?;
        let policy = BundlePolicy::Key {
            spki_der: key.to_spki_der().to_vec(),
            name: key.name().to_string(),
            tlog: req.tlog,
        };
        match sigstore::verify_bundle_bytes(
            bundle_bytes,
            ArtifactInput::Sha256(sha256),
            &policy,
            &root,
        ) {
            Ok(_) => {}
            Err(SigstoreError::DigestMismatch { .. }) => {}
            Err(err) => return Err(tlog(err.to_string())),
        }
    }
    Ok(key.name().to_string())
}

/// Checks one bundle (the layer blob of a referrer manifest) of the image
/// whose repository is `repository`. A bundle's statement names no
/// repository, so under `matchRepository` it is unmet, never skipped.
pub(crate) fn bundle(
    index: usize,
    bundle_bytes: &[u8],
    digest: &Digest,
    repository: &str,
    req: &Requirements,
) -> Result<Verified, Vec<Unmet>> {
    let id = SignatureId {
        index,
        format: Format::Bundle,
    };
    let parsed = bundle::parse_bundle(bundle_bytes).map_err(|detail| malformed(id, detail))?;
    let Some(envelope) = &parsed.dsse_envelope else {
        return Err(malformed(id, "bundle has no DSSE envelope"));
    };
    let signer = bundle_signer(id, bundle_bytes, &parsed, envelope, digest, req)?;
    let statement = envelope
        .statement()
        .map_err(|detail| malformed(id, detail))?;
    let mut unmet = Vec::new();
    if !statement.is_in_toto() || statement.predicate_type != COSIGN_SIGN_PREDICATE {
        unmet.push(Unmet::WrongType {
            signature: id,
            found: statement.predicate_type.clone(),
        });
    }
    let Some(subject) = statement.subject.iter().find(|s| s.names(digest)) else {
        let found: Vec<String> = statement
            .subject
            .iter()
            .flat_map(|s| s.digest.iter().map(|(alg, hex)| format!("{alg}:{hex}")))
            .collect();
        unmet.push(Unmet::DigestMismatch {
            signature: id,
            found: if found.is_empty() {
                "no subject".to_string()
            } else {
                found.join(", ")
            },
            want: digest.clone(),
        });
        return Err(unmet);
    };
    let annotations = subject.annotation_strings();
    unmet.extend(annotation_unmet(id, req, &annotations));
    if req.match_repository {
        unmet.push(Unmet::NoRepository {
            signature: id,
            want: repository.to_string(),
        });
    }
    if unmet.is_empty() {
        Ok(Verified {
            digest: digest.clone(),
            format: Format::Bundle,
            key: signer,
            annotations,
        })
    } else {
        Err(unmet)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
