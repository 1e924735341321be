//! cosign's simple-signing payload: built byte-for-byte as cosign writes it,
//! and parsed leniently from the exact bytes that were signed.
//!
//! The signature covers the stored bytes, so a payload is never
//! re-serialised before verification; parsing only reads the fields the
//! requirements look at.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The `critical.type` cosign writes for an image signature.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

/// The payload as cosign's Go struct serialises it. Field order here is the
/// order of the JSON keys, which matches cosign's (`critical` then `optional`;
/// `identity`, `image`, `type`); `optional` is a sorted map like Go's.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    critical: Critical<'a>,
    optional: Option<&'a BTreeMap<String, String>>,
}

#[derive(Debug, Serialize)]
struct Critical<'a> {
    identity: Identity<'a>,
    image: Image<'a>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Debug, Serialize)]
struct Identity<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Debug, Serialize)]
struct Image<'a> {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: &'a str,
}

/// Builds the compact simple-signing payload for `repository` (the name without
/// tag or digest) at `digest`. Empty `annotations` give `"optional":null`, as
/// cosign writes when no `-a` is passed.
pub fn build(repository: &str, digest: &Digest, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let payload = Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: repository,
            },
            image: Image {
                docker_manifest_digest: digest.as_str(),
            },
            kind: SIMPLE_SIGNING_TYPE,
        },
        optional: if annotations.is_empty() {
            None
        } else {
            Some(annotations)
        },
    };
    // Serialising plain strings and maps cannot fail; fall back to an empty
    // payload (which no verifier accepts) rather than panicking.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// The fields of a signed payload that verification reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleSigning {
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`, as written (not validated).
    pub manifest_digest: String,
    /// `critical.type`.
    pub kind: String,
    /// `optional`, values rendered as strings (non-string JSON values as JSON text).
    pub optional: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct RawPayload {
    critical: RawCritical,
    #[serde(default)]
    optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
struct RawCritical {
    identity: RawIdentity,
    image: RawImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct RawIdentity {
    #[serde(rename = "docker-reference", default)]
    docker_reference: String,
}

#[derive(Debug, Deserialize)]
struct RawImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Parses signed payload bytes; the error text says what is missing or wrong.
pub fn parse(bytes: &[u8]) -> Result<SimpleSigning, String> {
    let raw: RawPayload = serde_json::from_slice(bytes)
        .map_err(|err| format!("payload is not a simple-signing document: {err}"))?;
    Ok(SimpleSigning {
        docker_reference: raw.critical.identity.docker_reference,
        manifest_digest: raw.critical.image.docker_manifest_digest,
        kind: raw.critical.kind,
        optional: raw
            .optional
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, value_text(v)))
            .collect(),
    })
}

/// Annotation values are strings when cosign's `-a k=v` wrote them; other
/// JSON values (hand-made payloads) compare by their JSON text.
pub(crate) fn value_text(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Docker Hub has three spellings of its registry (cosign writes
/// `index.docker.io/…`); compare repositories with one of them. The host
/// compares case-insensitively (DNS does), the repository path exactly.
pub(crate) fn normalise_repository(name: &str) -> String {
    let name = match name.split_once('/') {
        Some((host, path)) => format!("{}/{path}", host.to_ascii_lowercase()),
        None => name.to_string(),
    };
    for alias in ["index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = name.strip_prefix(alias) {
            return format!("docker.io/{rest}");
        }
    }
    name
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const VECTOR: &[u8] =
        include_bytes!("../../../fixtures/cosign/signature-vector-1.payload.json");

    #[test]
    fn builds_exactly_what_cosign_wrote() {
        let digest = Digest::parse(
            "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b",
        )
        .unwrap();
        let built = build(
            "registry-testing.svc.lan/busybox",
            &digest,
            &BTreeMap::new(),
        );
        assert_eq!(
            String::from_utf8(built).unwrap(),
            std::str::from_utf8(VECTOR).unwrap()
        );
    }

    #[test]
    fn parses_the_cosign_vector() {
        let p = parse(VECTOR).unwrap();
        assert_eq!(p.docker_reference, "registry-testing.svc.lan/busybox");
        assert_eq!(
            p.manifest_digest,
            "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"
        );
        assert_eq!(p.kind, SIMPLE_SIGNING_TYPE);
        assert!(p.optional.is_empty());
    }

    #[test]
    fn annotations_round_trip_in_sorted_order() {
        let digest = Digest::sha256(b"x");
        let ann = BTreeMap::from([
            ("z".to_string(), "1".to_string()),
            ("env".to_string(), "prod".to_string()),
        ]);
        let built = build("localhost:5000/app", &digest, &ann);
        let text = String::from_utf8(built.clone()).unwrap();
        assert!(
            text.ends_with(r#""optional":{"env":"prod","z":"1"}}"#),
            "{text}"
        );
        assert_eq!(parse(&built).unwrap().optional, ann);
    }

    #[test]
    fn non_string_annotations_compare_as_json_text() {
        let p = parse(
            br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"d"},"type":"t"},"optional":{"n":1,"b":true}}"#,
        )
        .unwrap();
        assert_eq!(p.optional["n"], "1");
        assert_eq!(p.optional["b"], "true");
    }

    #[test]
    fn rejects_documents_without_critical_fields() {
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"critical":{"identity":{},"type":"t"}}"#).is_err());
    }

    #[test]
    fn docker_hub_aliases_compare_equal() {
        assert_eq!(
            normalise_repository("index.docker.io/library/nginx"),
            normalise_repository("docker.io/library/nginx")
        );
        assert_eq!(normalise_repository("ghcr.io/a/b"), "ghcr.io/a/b");
    }
}
