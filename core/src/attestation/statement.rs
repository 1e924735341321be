//! in-toto statements: the media types and annotations the three stores use,
//! cosign's `--type` short names, reading a statement's header (type,
//! predicate type, subjects) without materialising its predicate, and
//! building the statement `imgate attest` signs, the way cosign builds it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::signature::bundle::IN_TOTO_PAYLOAD_TYPE;

/// Media type of a legacy `.att` layer: a DSSE envelope.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Media type of a BuildKit statement layer (a bare statement, no envelope).
pub const IN_TOTO_MEDIA_TYPE: &str = IN_TOTO_PAYLOAD_TYPE;
/// Unsigned annotation cosign puts on `.att` layers naming the predicate type.
pub const LEGACY_PREDICATE_ANNOTATION: &str = "predicateType";
/// Unsigned annotation BuildKit puts on statement layers.
pub const BUILDKIT_PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// Unsigned annotation on a bundle's referrer manifest.
pub const BUNDLE_PREDICATE_ANNOTATION: &str = crate::signature::bundle::ANNOTATION_PREDICATE_TYPE;
/// Index annotation marking a BuildKit attestation manifest.
pub const BUILDKIT_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Value of [`BUILDKIT_REFERENCE_TYPE`] for attestation manifests.
pub const BUILDKIT_ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// Index annotation naming the platform manifest an attestation manifest is about.
pub const BUILDKIT_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// in-toto Statement v0.1: what cosign writes (and what `imgate attest` writes).
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";

/// cosign's `--type` short names and the predicate type URI each stands for
/// (cosign's `predicateTypeMap`).
pub const SHORT_NAMES: &[(&str, &str)] = &[
    ("custom", "https://cosign.sigstore.dev/attestation/v1"),
    ("slsaprovenance", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance02", "https://slsa.dev/provenance/v0.2"),
    ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ("spdx", "https://spdx.dev/Document"),
    ("spdxjson", "https://spdx.dev/Document"),
    ("cyclonedx", "https://cyclonedx.org/bom"),
    ("link", "https://in-toto.io/Link/v1"),
    ("vuln", "https://cosign.sigstore.dev/attestation/vuln/v1"),
    ("openvex", "https://openvex.dev/ns"),
];

/// The predicate type URI `name` stands for: a short name from
/// [`SHORT_NAMES`], or an absolute URI given as it is.
pub fn predicate_type(name: &str) -> Result<String, String> {
    if let Some((_, uri)) = SHORT_NAMES.iter().find(|(short, _)| *short == name) {
        return Ok((*uri).to_string());
    }
    match url::Url::parse(name) {
        Ok(url) if !url.cannot_be_a_base() => Ok(name.to_string()),
        _ => Err(format!(
            "{name:?} is neither a predicate type URI nor one of {}",
            SHORT_NAMES
                .iter()
                .map(|(short, _)| *short)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// in-toto Statement v1.
pub const STATEMENT_V1: &str = crate::signature::bundle::STATEMENT_V1;

/// A statement's header: everything but the predicate.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// `_type`.
    #[serde(rename = "_type")]
    pub kind: String,
    /// The predicate type.
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The subjects.
    #[serde(default)]
    pub subject: Vec<Subject>,
}

/// One subject of a statement (what conditions see as `subject`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Subject {
    /// Its name (cosign: the repository; BuildKit: a `pkg:docker/` URL).
    #[serde(default)]
    pub name: String,
    /// Digests by algorithm.
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Subject {
    /// Whether this subject names `digest` (hex compared without case).
    pub fn names(&self, digest: &Digest) -> bool {
        self.digest
            .get(digest.algorithm())
            .is_some_and(|hex| hex.eq_ignore_ascii_case(digest.hex()))
    }
}

impl Header {
    /// The subject naming `digest`, if any.
    pub fn subject_naming(&self, digest: &Digest) -> Option<&Subject> {
        self.subject.iter().find(|s| s.names(digest))
    }

    /// The digests the subjects name, for messages.
    pub fn subject_digests(&self) -> String {
        let found: Vec<String> = self
            .subject
            .iter()
            .flat_map(|s| s.digest.iter().map(|(alg, hex)| format!("{alg}:{hex}")))
            .collect();
        if found.is_empty() {
            "no subject digest".to_string()
        } else {
            found.join(", ")
        }
    }
}

/// The header of a statement read from payload bytes; the predicate is
/// skipped, not built. v0.1 and v1 statements are read.
pub fn header(payload: &[u8]) -> Result<Header, String> {
    let header: Header = serde_json::from_slice(payload)
        .map_err(|err| format!("the payload is not an in-toto statement: {err}"))?;
    if header.kind != STATEMENT_V01 && header.kind != STATEMENT_V1 {
        return Err(format!(
            "the payload's _type is {:?}, not an in-toto statement",
            header.kind
        ));
    }
    Ok(header)
}

/// Why a predicate file cannot be attested.
#[derive(Debug, thiserror::Error)]
#[error("predicate for {predicate_type}: {detail}")]
pub struct PredicateError {
    /// The predicate type asked for.
    pub predicate_type: String,
    /// What is wrong with the file.
    pub detail: String,
}

/// The statement cosign's `attest --type TYPE` signs for `repository` at
/// `digest`: in-toto Statement v0.1, one subject named by the repository.
/// `kind` is a short name or a URI. cosign's rules for the predicate:
/// `custom` wraps the file as `{"Data": TEXT, "Timestamp": NOW}`, `spdx`
/// embeds the file as a JSON string, every other type must be a JSON
/// object and is embedded as it is. `now` is RFC 3339.
pub fn build(
    kind: &str,
    predicate: &[u8],
    repository: &str,
    digest: &Digest,
    now: &str,
) -> Result<(String, Vec<u8>), PredicateError> {
    let uri = predicate_type(kind).map_err(|detail| PredicateError {
        predicate_type: kind.to_string(),
        detail,
    })?;
    let fail = |detail: String| PredicateError {
        predicate_type: uri.clone(),
        detail,
    };
    let text = || {
        std::str::from_utf8(predicate)
            .map(str::to_string)
            .map_err(|err| fail(format!("not UTF-8 text: {err}")))
    };
    let body = match kind {
        "custom" => serde_json::json!({"Data": text()?, "Timestamp": now}),
        "spdx" => serde_json::Value::String(text()?),
        _ => {
            let value: serde_json::Value = serde_json::from_slice(predicate)
                .map_err(|err| fail(format!("not JSON: {err}")))?;
            if !value.is_object() {
                return Err(fail("not a JSON object".to_string()));
            }
            value
        }
    };
    #[derive(serde::Serialize)]
    struct Out<'a> {
        #[serde(rename = "_type")]
        kind: &'a str,
        subject: [OutSubject<'a>; 1],
        #[serde(rename = "predicateType")]
        predicate_type: &'a str,
        predicate: serde_json::Value,
    }
    #[derive(serde::Serialize)]
    struct OutSubject<'a> {
        name: &'a str,
        digest: BTreeMap<&'a str, &'a str>,
    }
    let statement = Out {
        kind: STATEMENT_V01,
        subject: [OutSubject {
            name: repository,
            digest: BTreeMap::from([(digest.algorithm(), digest.hex())]),
        }],
        predicate_type: &uri,
        predicate: body,
    };
    let bytes = serde_json::to_vec(&statement).map_err(|err| fail(err.to_string()))?;
    Ok((uri, bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const MODE_MAX: &[u8] =
        include_bytes!("../../../fixtures/buildkit/provenance-v1-mode-max.json");

    #[test]
    fn short_names_map_to_cosigns_uris() {
        assert_eq!(
            predicate_type("slsaprovenance").unwrap(),
            "https://slsa.dev/provenance/v0.2"
        );
        assert_eq!(
            predicate_type("slsaprovenance1").unwrap(),
            "https://slsa.dev/provenance/v1"
        );
        assert_eq!(
            predicate_type("vuln").unwrap(),
            "https://cosign.sigstore.dev/attestation/vuln/v1"
        );
        assert_eq!(
            predicate_type("https://example.com/p/v1").unwrap(),
            "https://example.com/p/v1"
        );
        let err = predicate_type("provenance").unwrap_err();
        assert!(err.contains("slsaprovenance1"), "{err}");
        assert!(predicate_type("mailto:x").is_err());
    }

    #[test]
    fn reads_buildkits_statement_header() {
        let st = header(MODE_MAX).unwrap();
        assert_eq!(st.predicate_type, "https://slsa.dev/provenance/v1");
        let d = Digest::parse(
            "sha256:e8275b2b76280af67e26f068e5d585eb905f8dfd2f1918b3229db98133cb4862",
        )
        .unwrap();
        assert!(st.subject_naming(&d).is_some());
        assert!(st.subject_naming(&Digest::sha256(b"x")).is_none());
        assert_eq!(st.subject_digests(), format!("{d}"));
        assert!(header(br#"{"_type":"x","predicateType":"p"}"#).is_err());
        assert!(header(b"[]").is_err());
    }

    #[test]
    fn builds_statements_the_way_cosign_does() {
        let d = Digest::sha256(b"image");
        let (uri, bytes) = build(
            "slsaprovenance1",
            br#"{"buildDefinition":{"buildType":"x"}}"#,
            "localhost:5000/app",
            &d,
            "2024-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(uri, "https://slsa.dev/provenance/v1");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["_type"], STATEMENT_V01);
        assert_eq!(v["subject"][0]["name"], "localhost:5000/app");
        assert_eq!(v["subject"][0]["digest"]["sha256"], d.hex());
        assert_eq!(v["predicate"]["buildDefinition"]["buildType"], "x");

        let (uri, bytes) = build("custom", b"hello", "r", &d, "2024-01-01T00:00:00Z").unwrap();
        assert_eq!(uri, "https://cosign.sigstore.dev/attestation/v1");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["predicate"]["Data"], "hello");
        assert_eq!(v["predicate"]["Timestamp"], "2024-01-01T00:00:00Z");

        let (_, bytes) = build("spdx", b"SPDXVersion: SPDX-2.2", "r", &d, "t").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["predicate"], "SPDXVersion: SPDX-2.2");

        let err = build("vuln", b"[1]", "r", &d, "t").unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
        let err = build("cyclonedx", b"{", "r", &d, "t").unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }
}
