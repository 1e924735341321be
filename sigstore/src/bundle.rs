//! Verify a Sigstore bundle (v0.1 to v0.3) for an artifact: keyless through
//! `sigstore-verify`, or with a key, where a bundle without any log entry or
//! timestamp (what `imgate sign --format bundle` writes offline) takes
//! imgate's own path because the crate rejects it outright.

use sigstore_verify::crypto::VerificationKey;
use sigstore_verify::types::bundle::VerificationMaterialContent;
use sigstore_verify::types::{
    Artifact, Bundle, DerPublicKey, HashAlgorithm, Sha256Hash, SignatureContent,
};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy, VerificationResult};

use super::provider::ensure_installed;
use super::{IdentityPolicy, SigstoreError, TlogMode, TrustRoot};

/// Largest bundle imgate parses. Image-signature bundles are a few KiB; an
/// attestation bundle carrying an SBOM can reach megabytes.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;

/// What the bundle must be about.
#[derive(Debug, Clone, Copy)]
pub enum ArtifactInput<'a> {
    /// The artifact's bytes.
    Bytes(&'a [u8]),
    /// The artifact's SHA-256 (an image manifest digest, or `sha256:` on the
    /// command line). For DSSE bundles this is the in-toto subject.
    Sha256([u8; 32]),
}

/// Who must have signed the bundle.
#[derive(Debug, Clone)]
pub enum BundlePolicy {
    /// A Fulcio certificate whose identity matches, with a verified
    /// transparency-log entry, as Sigstore's verifiers demand by default
    /// (the certificate lives ten minutes; the entry says it was used inside
    /// them). A rule whose `tlog` accepts a trusted timestamp instead goes
    /// through [`verify_keyless_bundle`].
    Keyless(IdentityPolicy),
    /// A public key (PKIX DER), with what to demand of the log.
    Key {
        /// The SubjectPublicKeyInfo DER of the key.
        spki_der: Vec<u8>,
        /// Where the key came from, for messages.
        name: String,
        /// What to demand of the log.
        tlog: TlogMode,
    },
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The certificate identity (SAN), for keyless signatures.
    pub identity: Option<String>,
    /// The certificate's OIDC issuer, for keyless signatures.
    pub issuer: Option<String>,
    /// The key name, for key signatures.
    pub key: Option<String>,
    /// The earliest authenticated signing time (log or timestamp), as Unix
    /// seconds; `None` for a key signature without log entry.
    pub signed_at: Option<i64>,
    /// Whether a transparency-log entry was verified (inclusion proof or SET).
    pub tlog_verified: bool,
    /// Fingerprint of the trusted root used.
    pub trust_root: String,
}

impl VerifiedSignature {
    /// A signature verified by the key `name` alone, with no log entry.
    pub(crate) fn by_key(name: &str, root: &TrustRoot) -> VerifiedSignature {
        VerifiedSignature {
            identity: None,
            issuer: None,
            key: Some(name.to_string()),
            signed_at: None,
            tlog_verified: false,
            trust_root: root.fingerprint().to_string(),
        }
    }
}

/// Verify a bundle's JSON bytes for `artifact` under `policy` with `root`.
pub fn verify_bundle_bytes(
    bundle: &[u8],
    artifact: ArtifactInput<'_>,
    policy: &BundlePolicy,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    let bundle = read_bundle(bundle)?;
    let art = to_artifact(artifact);
    match policy {
        BundlePolicy::Keyless(identity) => {
            keyless(&bundle, art, identity, TlogMode::Required, root)
        }
        BundlePolicy::Key {
            spki_der,
            name,
            tlog,
        } => {
            let key = DerPublicKey::new(spki_der.clone());
            let material = &bundle.verification_material;
            // As for keyless bundles, and as cosign and Kyverno read a key
            // signature by default: `required` means a log entry anyone
            // can audit; a timestamp proves a time, not publication.
            if *tlog == TlogMode::Required && material.tlog_entries.is_empty() {
                return Err(SigstoreError::rejected(
                    "the bundle has no transparency-log entry, and the policy requires one \
                     (tlog: required; a timestamp alone does not do)",
                ));
            }
            let has_evidence = !material.tlog_entries.is_empty()
                || !material
                    .timestamp_verification_data
                    .rfc3161_timestamps
                    .is_empty();
            if !has_evidence {
                return verify_key_only(&bundle, artifact, &key, name, root);
            }
            let mut key_policy = PublicKeyVerificationPolicy::new(key);
            // No entry to verify (`required` was refused above), or told not
            // to: the crate still verifies every timestamp against the root's
            // authorities.
            if *tlog == TlogMode::Ignore || material.tlog_entries.is_empty() {
                key_policy = key_policy.skip_tlog_unsafe();
            }
            let result = root
                .verifier
                .verify(art, &bundle, &key_policy)
                .map_err(SigstoreError::rejected)?;
            Ok(summary(&result, Some(name.clone()), root))
        }
    }
}

/// Verify a keyless bundle for `artifact` under a rule's `tlog`. The
/// certificate must be shown used inside its validity, by a verified log
/// entry or by an RFC 3161 timestamp from an authority of `root`:
///
/// - `Required`: a log entry is required (a timestamp alone shows the
///   time, but nobody watching the log can see the signature);
/// - `IfPresent` and `Ignore`: a bundle without a log entry is accepted on a
///   trusted timestamp (GitHub's attestations for private repositories are
///   made this way). An entry that is present is always verified: it may be
///   what proves the signing time.
///
/// A bundle with neither is always refused.
pub fn verify_keyless_bundle(
    bundle: &[u8],
    artifact: ArtifactInput<'_>,
    identity: &IdentityPolicy,
    tlog: TlogMode,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    let bundle = read_bundle(bundle)?;
    keyless(&bundle, to_artifact(artifact), identity, tlog, root)
}

fn keyless(
    bundle: &Bundle,
    art: Artifact<'_>,
    identity: &IdentityPolicy,
    tlog: TlogMode,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    let material = &bundle.verification_material;
    if !matches!(
        material.content,
        VerificationMaterialContent::Certificate(_)
            | VerificationMaterialContent::X509CertificateChain { .. }
    ) {
        return Err(SigstoreError::rejected(
            "the bundle is signed with a key, not a certificate; verify it with --key",
        ));
    }
    let policy = if material.tlog_entries.is_empty() {
        if tlog == TlogMode::Required {
            return Err(SigstoreError::rejected(
                "the bundle has no transparency-log entry, and the policy requires one \
                 (tlog: required; a timestamp alone does not do)",
            ));
        }
        if material
            .timestamp_verification_data
            .rfc3161_timestamps
            .is_empty()
        {
            return Err(SigstoreError::rejected(
                "the bundle has neither a transparency-log entry nor a timestamp: nothing \
                 proves the certificate was used while it was valid",
            ));
        }
        // No entry to verify: the crate then takes the signing time from the
        // timestamps alone, each verified against the root's authorities.
        VerificationPolicy::any_identity().skip_tlog_unsafe()
    } else {
        VerificationPolicy::any_identity()
    };
    // A root that lists no CT log (GitHub's own instance, which signs private
    // repositories' attestations) leaves no key to check an SCT with: its
    // CAs are trusted without certificate transparency, as `gh attestation
    // verify` trusts them. Every root that lists a CT log, the embedded
    // public-good one among them, still demands a verified SCT.
    let policy = if root.root.ctlogs.is_empty() {
        policy.skip_sct()
    } else {
        policy
    };
    let result = root
        .verifier
        .verify(art, bundle, &policy)
        .map_err(SigstoreError::rejected)?;
    if result.verified_timestamps().is_empty() {
        // Defence in depth: never accept a certificate checked at no proven time.
        return Err(SigstoreError::rejected("no verified signing time"));
    }
    let cert = result
        .certificate()
        .ok_or_else(|| SigstoreError::rejected("the verifier returned no certificate"))?;
    identity.check(cert)?;
    Ok(summary(&result, None, root))
}

/// A bundle within [`MAX_BUNDLE_BYTES`], parsed.
fn read_bundle(bytes: &[u8]) -> Result<Bundle, SigstoreError> {
    ensure_installed();
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(SigstoreError::Malformed {
            what: "bundle",
            reason: format!(
                "{} bytes, more than the {MAX_BUNDLE_BYTES} imgate reads",
                bytes.len()
            ),
        });
    }
    parse_bundle(bytes)
}

fn to_artifact(artifact: ArtifactInput<'_>) -> Artifact<'_> {
    match artifact {
        ArtifactInput::Bytes(bytes) => Artifact::from_blob(bytes),
        ArtifactInput::Sha256(digest) => Artifact::from_digest(Sha256Hash::new(digest)),
    }
}

fn parse_bundle(bytes: &[u8]) -> Result<Bundle, SigstoreError> {
    let malformed = |reason: String| SigstoreError::Malformed {
        what: "bundle",
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|err| malformed(err.to_string()))?;
    Bundle::from_json(text).map_err(|err| malformed(err.to_string()))
}

fn summary(
    result: &VerificationResult,
    key: Option<String>,
    root: &TrustRoot,
) -> VerifiedSignature {
    let earliest = result
        .verified_timestamps()
        .iter()
        .chain(result.integrated_time().iter())
        .map(|t| t.as_second())
        .min();
    VerifiedSignature {
        identity: result.identity().map(|san| san.as_str().to_string()),
        issuer: result.issuer().map(str::to_string),
        key,
        signed_at: earliest,
        tlog_verified: result.tlog_verified(),
        trust_root: root.fingerprint().to_string(),
    }
}

/// A key-signed bundle with no log entry or timestamp: check the signature
/// with the key and that the signed content names the artifact. Nothing else
/// can be checked: there is no time and no log.
fn verify_key_only(
    bundle: &Bundle,
    artifact: ArtifactInput<'_>,
    key: &DerPublicKey,
    name: &str,
    root: &TrustRoot,
) -> Result<VerifiedSignature, SigstoreError> {
    if !matches!(
        bundle.verification_material.content,
        VerificationMaterialContent::PublicKey(_)
    ) {
        return Err(SigstoreError::rejected(
            "the bundle carries a certificate but a key was given; verify it by identity",
        ));
    }
    let vkey = VerificationKey::from_spki(key).map_err(|err| SigstoreError::Key {
        name: name.to_string(),
        reason: err.to_string(),
    })?;
    let wanted = match artifact {
        ArtifactInput::Bytes(bytes) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
            let mut out = [0u8; 32];
            out.copy_from_slice(digest.as_ref());
            out
        }
        ArtifactInput::Sha256(digest) => digest,
    };
    match &bundle.content {
        SignatureContent::DsseEnvelope(env) => {
            vkey.verify(env.pae(), &env.signature.sig)
                .map_err(|err| SigstoreError::rejected(format!("DSSE signature: {err}")))?;
            let statement: serde_json::Value = serde_json::from_slice(env.payload.as_bytes())
                .map_err(|err| SigstoreError::Malformed {
                    what: "in-toto statement",
                    reason: err.to_string(),
                })?;
            let wanted_hex = hex::encode(wanted);
            let subjects = statement
                .get("subject")
                .and_then(|s| s.as_array())
                .cloned()
                .unwrap_or_default();
            let named = subjects.iter().any(|s| {
                s.pointer("/digest/sha256").and_then(|d| d.as_str()) == Some(wanted_hex.as_str())
            });
            if !named {
                return Err(SigstoreError::DigestMismatch {
                    found: "an in-toto subject list without it".into(),
                    wanted: format!("sha256:{wanted_hex}"),
                });
            }
        }
        SignatureContent::MessageSignature(msg) => {
            if let Some(md) = &msg.message_digest {
                if md.algorithm != HashAlgorithm::Sha2256 || md.digest.as_bytes() != wanted {
                    return Err(SigstoreError::DigestMismatch {
                        found: format!("{:?}:{}", md.algorithm, md.digest.to_hex()),
                        wanted: format!("sha256:{}", hex::encode(wanted)),
                    });
                }
            }
            let checked = match artifact {
                ArtifactInput::Bytes(bytes) => vkey.verify(bytes, &msg.signature),
                ArtifactInput::Sha256(digest) => vkey.verify_prehashed(&digest, &msg.signature),
            };
            checked.map_err(|err| SigstoreError::rejected(format!("signature: {err}")))?;
        }
        _ => {
            return Err(SigstoreError::rejected(
                "the bundle's content is neither a DSSE envelope nor a message signature",
            ))
        }
    }
    Ok(VerifiedSignature::by_key(name, root))
}

/// The SubjectPublicKeyInfo DER of a PEM `PUBLIC KEY` (any algorithm the
/// verifier supports: ECDSA P-256/P-384, Ed25519, RSA).
pub fn public_key_from_pem(name: &str, pem: &[u8]) -> Result<Vec<u8>, SigstoreError> {
    let fail = |reason: String| SigstoreError::Key {
        name: name.to_string(),
        reason,
    };
    let text = std::str::from_utf8(pem).map_err(|err| fail(err.to_string()))?;
    let key = DerPublicKey::from_pem(text).map_err(|err| fail(err.to_string()))?;
    ensure_installed();
    VerificationKey::from_spki(&key).map_err(|err| fail(err.to_string()))?;
    Ok(key.as_bytes().to_vec())
}
