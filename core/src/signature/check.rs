//! The checks one signature goes through, over bytes already fetched: no
//! network here, so every rule is unit-tested against real cosign data.
//!
//! Order matters for the report: a signature that does not verify with an
//! allowed key proves nothing about its payload, so its payload is not
//! inspected (reporting "wrong digest" from an unauthenticated payload would
//! mislead). Once the signature verifies, every content check runs and each
//! failure is reported.

use std::collections::BTreeMap;

use super::bundle::{self, COSIGN_SIGN_PREDICATE};
use super::payload::{self, SIMPLE_SIGNING_TYPE};
use super::requirements::{Requirements, SignatureId, Unmet, Verified};
use super::Format;
use crate::digest::Digest;

/// The name of the first allowed key that verifies `sig` over `message`.
fn verifying_key<'a>(req: &'a Requirements, message: &[u8], sig: &[u8]) -> Option<&'a str> {
    req.keys
        .iter()
        .find(|key| key.verify(message, sig).is_ok())
        .map(|key| key.name())
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

/// Checks one legacy signature: `payload` is the layer blob (already checked
/// against its descriptor), `signature` the `dev.cosignproject.cosign/signature`
/// annotation. `repository` is the image's `registry/repository`.
pub(crate) fn legacy(
    index: usize,
    payload_bytes: &[u8],
    signature: Option<&str>,
    digest: &Digest,
    repository: &str,
    req: &Requirements,
) -> Result<Verified, Vec<Unmet>> {
    let id = SignatureId {
        index,
        format: Format::Legacy,
    };
    let Some(signature) = signature else {
        return Err(malformed(
            id,
            format!("layer has no {} annotation", super::SIGNATURE_ANNOTATION),
        ));
    };
    let Ok(der) = bundle::decode_base64(signature) else {
        return Err(malformed(id, "signature annotation is not base64"));
    };
    let Some(key) = verifying_key(req, payload_bytes, &der) else {
        return Err(vec![Unmet::WrongKey {
            signature: id,
            keys: req.key_names(),
        }]);
    };
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
            key: key.to_string(),
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

/// Checks one bundle (the layer blob of a referrer manifest). Repository
/// matching does not apply: a bundle's statement names no repository.
pub(crate) fn bundle(
    index: usize,
    bundle_bytes: &[u8],
    digest: &Digest,
    req: &Requirements,
) -> Result<Verified, Vec<Unmet>> {
    let id = SignatureId {
        index,
        format: Format::Bundle,
    };
    let parsed = bundle::parse_bundle(bundle_bytes).map_err(|detail| malformed(id, detail))?;
    let Some(envelope) = parsed.dsse_envelope else {
        return Err(malformed(id, "bundle has no DSSE envelope"));
    };
    let pae = envelope.pae().map_err(|detail| malformed(id, detail))?;
    let sigs: Vec<Vec<u8>> = envelope
        .signatures
        .iter()
        .filter_map(|s| bundle::decode_base64(&s.sig).ok())
        .collect();
    if sigs.is_empty() {
        return Err(malformed(id, "envelope has no readable signature"));
    }
    let Some(key) = sigs.iter().find_map(|sig| verifying_key(req, &pae, sig)) else {
        return Err(vec![Unmet::WrongKey {
            signature: id,
            keys: req.key_names(),
        }]);
    };
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
    if unmet.is_empty() {
        Ok(Verified {
            digest: digest.clone(),
            format: Format::Bundle,
            key: key.to_string(),
            annotations,
        })
    } else {
        Err(unmet)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use imgate_keys::{PublicKey, SigningKey};

    const VECTOR_PAYLOAD: &[u8] =
        include_bytes!("../../../fixtures/cosign/signature-vector-1.payload.json");
    const VECTOR_SIG: &str = include_str!("../../../fixtures/cosign/signature-vector-1.sig.b64");
    const VECTOR_PUB: &[u8] = include_bytes!("../../../fixtures/cosign/signature-vector-1.pub");
    const VECTOR_DIGEST: &str =
        "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";
    const VECTOR_REPO: &str = "registry-testing.svc.lan/busybox";
    const KEYLESS: &[u8] = include_bytes!("../../../fixtures/cosign/bundle-v03-keyless.json");
    const KEYLESS_PUB: &[u8] =
        include_bytes!("../../../fixtures/cosign/bundle-v03-keyless-leaf.pub");
    const KEYLESS_DIGEST: &str =
        "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";

    fn req(keys: Vec<PublicKey>) -> Requirements {
        Requirements {
            keys,
            annotations: BTreeMap::new(),
            match_repository: false,
        }
    }

    fn vector_key() -> PublicKey {
        PublicKey::from_pem(VECTOR_PUB, "vector.pub").unwrap()
    }

    fn digest(s: &str) -> Digest {
        Digest::parse(s).unwrap()
    }

    #[test]
    fn real_cosign_signature_verifies() {
        let v = legacy(
            1,
            VECTOR_PAYLOAD,
            Some(VECTOR_SIG.trim()),
            &digest(VECTOR_DIGEST),
            VECTOR_REPO,
            &req(vec![vector_key()]),
        )
        .unwrap();
        assert_eq!(v.key, "vector.pub");
        assert_eq!(v.format, Format::Legacy);
        assert_eq!(v.digest.as_str(), VECTOR_DIGEST);
    }

    #[test]
    fn real_cosign_signature_fails_with_any_payload_byte_changed() {
        let r = req(vec![vector_key()]);
        for i in 0..VECTOR_PAYLOAD.len() {
            let mut tampered = VECTOR_PAYLOAD.to_vec();
            tampered[i] ^= 0x01;
            let err = legacy(
                1,
                &tampered,
                Some(VECTOR_SIG.trim()),
                &digest(VECTOR_DIGEST),
                VECTOR_REPO,
                &r,
            )
            .unwrap_err();
            assert!(
                matches!(err[..], [Unmet::WrongKey { .. }]),
                "byte {i}: {err:?}"
            );
        }
    }

    #[test]
    fn real_cosign_signature_fails_with_any_signature_byte_changed() {
        let r = req(vec![vector_key()]);
        let der = bundle::decode_base64(VECTOR_SIG).unwrap();
        for i in 0..der.len() {
            let mut tampered = der.clone();
            tampered[i] ^= 0x01;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&tampered);
            assert!(
                legacy(
                    1,
                    VECTOR_PAYLOAD,
                    Some(&b64),
                    &digest(VECTOR_DIGEST),
                    VECTOR_REPO,
                    &r
                )
                .is_err(),
                "signature byte {i}"
            );
        }
    }

    #[test]
    fn signature_with_line_breaks_is_read() {
        let sig = VECTOR_SIG.trim();
        let wrapped = format!("{}\n{}\n", &sig[..40], &sig[40..]);
        assert!(legacy(
            1,
            VECTOR_PAYLOAD,
            Some(&wrapped),
            &digest(VECTOR_DIGEST),
            VECTOR_REPO,
            &req(vec![vector_key()])
        )
        .is_ok());
    }

    #[test]
    fn legacy_unmet_reasons() {
        let other = SigningKey::generate().public_key().with_name("other.pub");
        let d = digest(VECTOR_DIGEST);
        let sig = Some(VECTOR_SIG.trim());
        // Wrong key: the payload is not inspected.
        let err = legacy(
            1,
            VECTOR_PAYLOAD,
            sig,
            &Digest::sha256(b"x"),
            VECTOR_REPO,
            &req(vec![other.clone()]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![Unmet::WrongKey {
                signature: SignatureId {
                    index: 1,
                    format: Format::Legacy
                },
                keys: vec!["other.pub".into()]
            }]
        );
        // Any of several keys may satisfy.
        assert!(legacy(
            1,
            VECTOR_PAYLOAD,
            sig,
            &d,
            VECTOR_REPO,
            &req(vec![other, vector_key()])
        )
        .is_ok());
        // Another digest.
        let want = Digest::sha256(b"x");
        let err = legacy(
            2,
            VECTOR_PAYLOAD,
            sig,
            &want,
            VECTOR_REPO,
            &req(vec![vector_key()]),
        )
        .unwrap_err();
        assert!(
            matches!(&err[..], [Unmet::DigestMismatch { found, want: w, signature }] if found == VECTOR_DIGEST && *w == want && signature.index == 2),
            "{err:?}"
        );
        // Repository matching is off by default, on when asked.
        assert!(legacy(
            1,
            VECTOR_PAYLOAD,
            sig,
            &d,
            "mirror.example/busybox",
            &req(vec![vector_key()])
        )
        .is_ok());
        let mut r = req(vec![vector_key()]);
        r.match_repository = true;
        assert!(legacy(1, VECTOR_PAYLOAD, sig, &d, VECTOR_REPO, &r).is_ok());
        let err = legacy(1, VECTOR_PAYLOAD, sig, &d, "mirror.example/busybox", &r).unwrap_err();
        assert!(
            matches!(&err[..], [Unmet::RepositoryMismatch { found, .. }] if found == VECTOR_REPO),
            "{err:?}"
        );
        // Required annotation absent (optional is null).
        let mut r = req(vec![vector_key()]);
        r.annotations.insert("env".into(), "prod".into());
        let err = legacy(1, VECTOR_PAYLOAD, sig, &d, VECTOR_REPO, &r).unwrap_err();
        assert!(
            matches!(&err[..], [Unmet::MissingAnnotation { key, found: None, .. }] if key == "env"),
            "{err:?}"
        );
        // No signature annotation, or not base64.
        assert!(matches!(
            legacy(
                1,
                VECTOR_PAYLOAD,
                None,
                &d,
                VECTOR_REPO,
                &req(vec![vector_key()])
            )
            .unwrap_err()[..],
            [Unmet::Malformed { .. }]
        ));
        assert!(matches!(
            legacy(
                1,
                VECTOR_PAYLOAD,
                Some("%%"),
                &d,
                VECTOR_REPO,
                &req(vec![vector_key()])
            )
            .unwrap_err()[..],
            [Unmet::Malformed { .. }]
        ));
    }

    #[test]
    fn generated_key_legacy_round_trip_with_annotations() {
        let key = SigningKey::generate();
        let d = Digest::sha256(b"image");
        let ann = BTreeMap::from([("env".to_string(), "staging".to_string())]);
        let body = payload::build("localhost:5000/app", &d, &ann);
        let sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&body));
        let mut r = req(vec![key.public_key()]);
        let v = legacy(1, &body, Some(&sig), &d, "localhost:5000/app", &r).unwrap();
        assert_eq!(v.annotations, ann);
        r.annotations.insert("env".into(), "prod".into());
        let err = legacy(1, &body, Some(&sig), &d, "localhost:5000/app", &r).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "signature 1 (legacy): annotation env: want prod, found staging"
        );
    }

    #[test]
    fn real_cosign_v3_bundle_verifies_with_its_leaf_key() {
        let key = PublicKey::from_pem(KEYLESS_PUB, "leaf.pub").unwrap();
        assert!(is_signature_bundle(KEYLESS));
        let v = bundle(1, KEYLESS, &digest(KEYLESS_DIGEST), &req(vec![key.clone()])).unwrap();
        assert_eq!(v.format, Format::Bundle);
        assert_eq!(v.key, "leaf.pub");
        // Verified against another digest: the subject does not name it.
        let err = bundle(1, KEYLESS, &Digest::sha256(b"x"), &req(vec![key.clone()])).unwrap_err();
        assert!(
            matches!(&err[..], [Unmet::DigestMismatch { found, .. }] if found == KEYLESS_DIGEST),
            "{err:?}"
        );
        // Another key.
        let other = SigningKey::generate().public_key();
        assert!(matches!(
            bundle(1, KEYLESS, &digest(KEYLESS_DIGEST), &req(vec![other])).unwrap_err()[..],
            [Unmet::WrongKey { .. }]
        ));
    }

    #[test]
    fn real_bundle_with_a_changed_subject_fails() {
        let key = PublicKey::from_pem(KEYLESS_PUB, "leaf.pub").unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(KEYLESS).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64
            .decode(json["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let changed = String::from_utf8(payload)
            .unwrap()
            .replace("c811d58d", "d811d58d");
        let new_digest = digest(&KEYLESS_DIGEST.replace("c811d58d", "d811d58d"));
        json["dsseEnvelope"]["payload"] = b64.encode(changed).into();
        let tampered = serde_json::to_vec(&json).unwrap();
        for d in [digest(KEYLESS_DIGEST), new_digest] {
            let err = bundle(1, &tampered, &d, &req(vec![key.clone()])).unwrap_err();
            assert!(matches!(err[..], [Unmet::WrongKey { .. }]), "{err:?}");
        }
        // The payload type is covered too.
        let mut json: serde_json::Value = serde_json::from_slice(KEYLESS).unwrap();
        json["dsseEnvelope"]["payloadType"] = "application/json".into();
        let err = bundle(
            1,
            &serde_json::to_vec(&json).unwrap(),
            &digest(KEYLESS_DIGEST),
            &req(vec![key]),
        )
        .unwrap_err();
        assert!(matches!(err[..], [Unmet::WrongKey { .. }]), "{err:?}");
    }

    #[test]
    fn generated_key_bundle_round_trip_and_annotations() {
        let key = SigningKey::generate();
        let d = Digest::sha256(b"image");
        let ann = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let statement = bundle::build_statement(&d, &ann);
        let sig = key.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &statement));
        let bytes = bundle::build_bundle(&statement, &sig, &key.public_key().hint());
        let mut r = req(vec![key.public_key()]);
        r.annotations = ann.clone();
        assert_eq!(bundle(1, &bytes, &d, &r).unwrap().annotations, ann);
        r.annotations.insert("team".into(), "a".into());
        let err = bundle(3, &bytes, &d, &r).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "signature 3 (bundle): annotation team: want a, found none"
        );
        assert!(matches!(
            bundle(1, b"{}", &d, &r).unwrap_err()[..],
            [Unmet::Malformed { .. }]
        ));
    }

    #[test]
    fn attestations_are_not_signatures() {
        let key = SigningKey::generate();
        let statement = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"https://slsa.dev/provenance/v1","predicate":{}}"#;
        let sig = key.sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, statement));
        let bytes = bundle::build_bundle(statement, &sig, "");
        assert!(!is_signature_bundle(&bytes));
        assert!(is_signature_bundle(b"garbage"));
    }
}
