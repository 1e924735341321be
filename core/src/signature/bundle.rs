//! Sigstore bundle v0.3 as cosign v3 writes it for an image signature: a DSSE
//! envelope over an in-toto Statement v1 (predicateType
//! `https://sigstore.dev/cosign/sign/v1`), and the OCI artifact manifest that
//! attaches it to the image through the referrers API or tag schema.
//!
//! Everything here is pure (bytes in, bytes out); the registry side lives in
//! `referrers.rs`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageIndex, ImageManifest};

/// The bundle media type cosign v3 writes (layer media type and artifactType).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// in-toto Statement v0.1 (older attestations; accepted when reading).
const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// The predicateType of cosign's image signature (as opposed to attestations).
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Annotation naming the bundle's content on the attached manifest.
pub const ANNOTATION_CONTENT: &str = "dev.sigstore.bundle.content";
/// Annotation naming the predicate type on the attached manifest.
pub const ANNOTATION_PREDICATE_TYPE: &str = "dev.sigstore.bundle.predicateType";
/// OCI creation time annotation.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// The OCI empty blob used as config of artifact manifests.
pub const EMPTY_BLOB: &[u8] = b"{}";

/// True for every Sigstore bundle media type (v0.1–v0.3 spellings), so a
/// reader accepts bundles from other cosign versions too.
pub fn is_bundle_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.dev.sigstore.bundle")
}

/// DSSE pre-authentication encoding: the bytes the envelope signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, Serialize)]
struct StatementOut<'a> {
    #[serde(rename = "_type")]
    kind: &'a str,
    subject: [SubjectOut<'a>; 1],
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    predicate: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct SubjectOut<'a> {
    digest: BTreeMap<&'a str, &'a str>,
    annotations: &'a BTreeMap<String, String>,
}

/// The in-toto statement cosign signs for `digest`: no subject name, the
/// annotations (`-a k=v`) on the subject, an empty predicate.
pub fn build_statement(digest: &Digest, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let statement = StatementOut {
        kind: STATEMENT_V1,
        subject: [SubjectOut {
            digest: BTreeMap::from([(digest.algorithm(), digest.hex())]),
            annotations,
        }],
        predicate_type: COSIGN_SIGN_PREDICATE,
        predicate: BTreeMap::new(),
    };
    serde_json::to_vec(&statement).unwrap_or_default()
}

/// A Sigstore bundle (the fields imgate reads and writes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    /// The bundle media type.
    pub media_type: String,
    /// Key hint, certificate, transparency log entries (kept as JSON; key-based
    /// offline verification does not need them).
    #[serde(default)]
    pub verification_material: serde_json::Value,
    /// The DSSE envelope (absent in message-signature bundles, which cosign
    /// uses for blobs, not images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<Envelope>,
}

/// A DSSE envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// base64 of the payload bytes.
    pub payload: String,
    /// The payload type (covered by the signature through the PAE).
    pub payload_type: String,
    /// Signatures over the PAE.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// base64 of the ASN.1 DER signature.
    pub sig: String,
    /// Optional key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
}

/// An in-toto statement as read from a verified envelope.
#[derive(Debug, Clone, Deserialize)]
pub struct Statement {
    /// `_type`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// Subjects: digest maps and (cosign) annotations.
    #[serde(default)]
    pub subject: Vec<Subject>,
    /// The predicate type.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
}

/// One statement subject.
#[derive(Debug, Clone, Deserialize)]
pub struct Subject {
    /// Digests by algorithm (`sha256` → hex).
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
    /// Annotations (values other than strings are kept as JSON).
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, serde_json::Value>>,
}

impl Subject {
    /// The annotations as strings (non-string values as JSON text).
    pub fn annotation_strings(&self) -> BTreeMap<String, String> {
        self.annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, super::payload::value_text(v)))
            .collect()
    }

    /// True when this subject names `digest`.
    pub fn names(&self, digest: &Digest) -> bool {
        self.digest
            .get(digest.algorithm())
            .is_some_and(|hex| hex.eq_ignore_ascii_case(digest.hex()))
    }
}

impl Statement {
    /// True for in-toto statement types imgate reads.
    pub fn is_in_toto(&self) -> bool {
        self.kind == STATEMENT_V1 || self.kind == STATEMENT_V01
    }
}

/// Builds a key-based bundle: `hint` names the key, `sig` is the DER signature
/// over [`pae`] of `statement`. No transparency log entry (offline signing).
pub fn build_bundle(statement: &[u8], sig: &[u8], hint: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bundle = Bundle {
        media_type: BUNDLE_MEDIA_TYPE.to_string(),
        verification_material: serde_json::json!({ "publicKey": { "hint": hint } }),
        dsse_envelope: Some(Envelope {
            payload: b64.encode(statement),
            payload_type: IN_TOTO_PAYLOAD_TYPE.to_string(),
            signatures: vec![EnvelopeSignature {
                sig: b64.encode(sig),
                keyid: None,
            }],
        }),
    };
    serde_json::to_vec(&bundle).unwrap_or_default()
}

/// Parses bundle JSON.
pub fn parse_bundle(bytes: &[u8]) -> Result<Bundle, String> {
    let bundle: Bundle =
        serde_json::from_slice(bytes).map_err(|err| format!("bundle is not valid JSON: {err}"))?;
    if !is_bundle_media_type(&bundle.media_type) {
        return Err(format!(
            "bundle has media type {:?}, not a Sigstore bundle",
            bundle.media_type
        ));
    }
    Ok(bundle)
}

impl Envelope {
    /// The decoded payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, String> {
        decode_base64(&self.payload).map_err(|err| format!("envelope payload is not base64: {err}"))
    }

    /// The signatures that decode; unreadable ones are left out (they
    /// could not verify anyway).
    pub fn signature_bytes(&self) -> Vec<Vec<u8>> {
        self.signatures
            .iter()
            .filter_map(|s| decode_base64(&s.sig).ok())
            .collect()
    }

    /// The bytes the signatures cover.
    pub fn pae(&self) -> Result<Vec<u8>, String> {
        Ok(pae(&self.payload_type, &self.payload_bytes()?))
    }

    /// The decoded payload of an in-toto envelope; another payload type is
    /// an error naming it.
    pub fn in_toto_payload(&self) -> Result<Vec<u8>, String> {
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(format!(
                "the envelope's payload type is {:?}, not {IN_TOTO_PAYLOAD_TYPE}",
                self.payload_type
            ));
        }
        self.payload_bytes()
    }

    /// The statement inside. Only meaningful after a signature over the PAE verified.
    pub fn statement(&self) -> Result<Statement, String> {
        serde_json::from_slice(&self.in_toto_payload()?)
            .map_err(|err| format!("envelope payload is not an in-toto statement: {err}"))
    }
}

/// Whether a bundle's `verificationMaterial` carries a log entry or an RFC
/// 3161 timestamp.
pub(crate) fn has_log_evidence(material: &serde_json::Value) -> bool {
    [
        "/tlogEntries",
        "/timestampVerificationData/rfc3161Timestamps",
    ]
    .iter()
    .any(|p| {
        material
            .pointer(p)
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| !a.is_empty())
    })
}

/// base64 (standard or URL-safe alphabet, padded or not, as DSSE allows),
/// tolerating embedded white space as cosign's annotation values sometimes
/// carry line breaks.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let unpadded = compact.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(unpadded)
        .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
}

/// The descriptor of the OCI empty config blob `{}`.
pub fn empty_config() -> Descriptor {
    Descriptor {
        media_type: oci::OCI_EMPTY.to_string(),
        digest: Digest::sha256(EMPTY_BLOB),
        size: EMPTY_BLOB.len() as u64,
        artifact_type: None,
        platform: None,
        annotations: None,
    }
}

/// The artifact manifest attaching `bundle` to `subject`, annotated as cosign does.
/// `created` is an RFC 3339 time.
pub fn build_attachment(bundle: &[u8], subject: Descriptor, created: &str) -> ImageManifest {
    build_attachment_for(bundle, subject, created, COSIGN_SIGN_PREDICATE)
}

/// [`build_attachment`] for a bundle whose statement has `predicate_type`
/// (an attestation).
pub fn build_attachment_for(
    bundle: &[u8],
    subject: Descriptor,
    created: &str,
    predicate_type: &str,
) -> ImageManifest {
    ImageManifest {
        schema_version: 2,
        media_type: Some(oci::OCI_MANIFEST.to_string()),
        artifact_type: Some(BUNDLE_MEDIA_TYPE.to_string()),
        config: empty_config(),
        layers: vec![Descriptor {
            media_type: BUNDLE_MEDIA_TYPE.to_string(),
            digest: Digest::sha256(bundle),
            size: bundle.len() as u64,
            artifact_type: None,
            platform: None,
            annotations: None,
        }],
        subject: Some(subject),
        annotations: Some(BTreeMap::from([
            (ANNOTATION_CONTENT.to_string(), "dsse-envelope".to_string()),
            (
                ANNOTATION_PREDICATE_TYPE.to_string(),
                predicate_type.to_string(),
            ),
            (ANNOTATION_CREATED.to_string(), created.to_string()),
        ])),
    }
}

/// The referrers-tag-schema entry for an attachment manifest (OCI 1.1: the
/// descriptor carries the artifactType and the manifest's annotations).
pub fn referrer_descriptor(manifest: &ImageManifest, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: oci::OCI_MANIFEST.to_string(),
        digest: Digest::sha256(bytes),
        size: bytes.len() as u64,
        artifact_type: manifest.artifact_type.clone(),
        platform: None,
        annotations: manifest.annotations.clone(),
    }
}

/// `index` with `entry` appended unless its digest is already listed; `None`
/// when nothing changes.
pub fn append_referrer(index: Option<ImageIndex>, entry: Descriptor) -> Option<ImageIndex> {
    let mut index = index.unwrap_or(ImageIndex {
        schema_version: 2,
        media_type: Some(oci::OCI_INDEX.to_string()),
        manifests: Vec::new(),
        annotations: None,
    });
    if index.manifests.iter().any(|d| d.digest == entry.digest) {
        return None;
    }
    index.media_type = Some(oci::OCI_INDEX.to_string());
    index.manifests.push(entry);
    Some(index)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const KEYLESS: &[u8] = include_bytes!("../../../fixtures/cosign/bundle-v03-keyless.json");

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn parses_the_real_cosign_v3_bundle() {
        let bundle = parse_bundle(KEYLESS).unwrap();
        assert_eq!(bundle.media_type, BUNDLE_MEDIA_TYPE);
        let env = bundle.dsse_envelope.unwrap();
        assert_eq!(env.payload_type, IN_TOTO_PAYLOAD_TYPE);
        assert_eq!(env.signatures.len(), 1);
        let st = env.statement().unwrap();
        assert!(st.is_in_toto());
        assert_eq!(st.predicate_type, COSIGN_SIGN_PREDICATE);
        let digest = Digest::parse(
            "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172",
        )
        .unwrap();
        assert!(st.subject[0].names(&digest));
        assert!(!st.subject[0].names(&Digest::sha256(b"other")));
        assert!(st.subject[0].annotation_strings().is_empty());
    }

    #[test]
    fn built_statement_has_cosign_shape() {
        let d = Digest::sha256(b"img");
        let ann = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let text = String::from_utf8(build_statement(&d, &ann)).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{}"}},"annotations":{{"env":"prod"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#,
                d.hex()
            )
        );
    }

    #[test]
    fn built_bundle_parses_back() {
        let d = Digest::sha256(b"img");
        let st = build_statement(&d, &BTreeMap::new());
        let bytes = build_bundle(&st, b"\x30\x01", "aGludA==");
        let bundle = parse_bundle(&bytes).unwrap();
        assert_eq!(
            bundle.verification_material["publicKey"]["hint"],
            "aGludA=="
        );
        let env = bundle.dsse_envelope.unwrap();
        assert_eq!(env.payload_bytes().unwrap(), st);
        assert_eq!(env.pae().unwrap(), pae(IN_TOTO_PAYLOAD_TYPE, &st));
        assert_eq!(decode_base64(&env.signatures[0].sig).unwrap(), b"\x30\x01");
    }

    #[test]
    fn base64_tolerates_line_breaks() {
        assert_eq!(decode_base64("aGVs\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert!(decode_base64("!!").is_err());
    }

    #[test]
    fn attachment_and_tag_schema_index() {
        let bundle = b"{\"mediaType\":\"x\"}";
        let subject = Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest: Digest::sha256(b"m"),
            size: 1,
            artifact_type: None,
            platform: None,
            annotations: None,
        };
        let m = build_attachment(bundle, subject.clone(), "2024-01-01T00:00:00Z");
        assert_eq!(m.subject.as_ref().unwrap(), &subject);
        assert_eq!(m.config.digest, Digest::sha256(b"{}"));
        assert_eq!(m.layers[0].media_type, BUNDLE_MEDIA_TYPE);
        let bytes = serde_json::to_vec(&m).unwrap();
        let entry = referrer_descriptor(&m, &bytes);
        let index = append_referrer(None, entry.clone()).unwrap();
        assert_eq!(index.manifests.len(), 1);
        assert!(append_referrer(Some(index.clone()), entry).is_none());
        let other = referrer_descriptor(&m, b"other");
        assert_eq!(
            append_referrer(Some(index), other).unwrap().manifests.len(),
            2
        );
    }
}
