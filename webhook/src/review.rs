//! The `AdmissionReview` wire format (`admission.k8s.io/v1`), as the API
//! server sends and expects it.
//!
//! Parsing is strict about what the engine relies on (apiVersion, kind, a
//! request with a uid) and lenient about everything else: fields added by
//! newer API servers are ignored rather than refused, so an upgrade of the
//! cluster never turns into a webhook outage.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The only `apiVersion` this webhook speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The `kind` of a review.
pub const KIND: &str = "AdmissionReview";

/// Why a request body is not a usable `AdmissionReview`.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON, or its fields have the wrong types.
    // The parser's text is the whole message (no `#[source]`), so an error
    // chain prints it once.
    #[error("admission review is not valid JSON: {detail}")]
    NotJson {
        /// The parser's complaint (line and column included).
        detail: String,
    },
    /// The body is JSON but not an object.
    #[error("admission review must be a JSON object")]
    NotObject,
    /// `apiVersion` is missing or not `admission.k8s.io/v1`.
    #[error("admission review has apiVersion {found:?}, expected {API_VERSION:?}")]
    WrongApiVersion {
        /// What the body said (empty when missing).
        found: String,
    },
    /// `kind` is missing or not `AdmissionReview`.
    #[error("admission review has kind {found:?}, expected {KIND:?}")]
    WrongKind {
        /// What the body said (empty when missing).
        found: String,
    },
    /// No `request` field.
    #[error("admission review has no request")]
    MissingRequest,
    /// `request.uid` is missing or empty.
    #[error("admission review request has no uid")]
    MissingUid,
}

/// An `AdmissionReview` (request from the API server, or our response).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1`.
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// Present in what the API server sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
    /// Present in what we send back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AdmissionResponse>,
}

/// `group/version/kind` of an object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    /// Empty for the core group.
    #[serde(default)]
    pub group: String,
    /// e.g. `v1`.
    #[serde(default)]
    pub version: String,
    /// e.g. `Pod`.
    #[serde(default)]
    pub kind: String,
}

/// `group/version/resource` of an object.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupVersionResource {
    /// Empty for the core group.
    #[serde(default)]
    pub group: String,
    /// e.g. `v1`.
    #[serde(default)]
    pub version: String,
    /// e.g. `pods`.
    #[serde(default)]
    pub resource: String,
}

/// Who made the request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserInfo {
    /// User name, e.g. `system:serviceaccount:argocd:argocd-application-controller`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// User uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The request half of a review.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub uid: String,
    /// Kind of the object (`Pod`, `Deployment`, `EphemeralContainers`…).
    #[serde(default)]
    pub kind: GroupVersionKind,
    /// Resource (`pods`, `deployments`…).
    #[serde(default)]
    pub resource: GroupVersionResource,
    /// e.g. `ephemeralcontainers`, `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    /// Object name; may be empty on CREATE with `generateName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    #[serde(default)]
    pub operation: String,
    /// The requesting user.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The new object (absent on DELETE), only the members the engine
    /// reads (the `sparse` module).
    #[serde(
        default,
        deserialize_with = "crate::sparse::object",
        skip_serializing_if = "Option::is_none"
    )]
    pub object: Option<serde_json::Value>,
    /// The existing object (UPDATE, DELETE), read as sparsely.
    #[serde(
        default,
        deserialize_with = "crate::sparse::object",
        skip_serializing_if = "Option::is_none"
    )]
    pub old_object: Option<serde_json::Value>,
    /// Server-side dry run: must have no side effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// `metav1.Status` as used in a response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// HTTP-like code: 403 for a policy denial, 400 for an invalid review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Shown to the user by kubectl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable reason, e.g. `Forbidden`, `BadRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The response half of a review.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid, always echoed.
    pub uid: String,
    /// The verdict.
    pub allowed: bool,
    /// Why not (or extra detail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Base64 of the JSONPatch document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` when `patch` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Shown by kubectl as `Warning: …`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Recorded in the API server's audit log (keys are prefixed by the API server).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl AdmissionResponse {
    /// Allowed, untouched.
    pub fn allow(uid: &str) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            ..Default::default()
        }
    }

    /// A policy denial: 403 Forbidden with `message` for the user.
    pub fn deny(uid: &str, message: impl Into<String>) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: false,
            status: Some(Status {
                code: Some(403),
                message: Some(message.into()),
                reason: Some("Forbidden".to_string()),
            }),
            ..Default::default()
        }
    }

    /// A review we could not make sense of: 400 Bad Request (denied).
    pub fn invalid(uid: &str, message: impl Into<String>) -> Self {
        AdmissionResponse {
            uid: uid.to_string(),
            allowed: false,
            status: Some(Status {
                code: Some(400),
                message: Some(message.into()),
                reason: Some("BadRequest".to_string()),
            }),
            ..Default::default()
        }
    }

    /// Attaches a JSONPatch (serialised, base64) unless `ops` is empty.
    pub fn with_patch<T: Serialize>(mut self, ops: &[T]) -> Self {
        if ops.is_empty() {
            return self;
        }
        // Serialising plain structs of strings and JSON values cannot fail;
        // if it ever did, sending no patch is the safe side (validate still runs).
        if let Ok(bytes) = serde_json::to_vec(ops) {
            self.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            self.patch_type = Some("JSONPatch".to_string());
        }
        self
    }

    /// Wraps the response in a review of the right apiVersion and kind.
    pub fn into_review(self) -> AdmissionReview {
        AdmissionReview {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            request: None,
            response: Some(self),
        }
    }

    /// The decoded JSONPatch document, if any (for tests and `imgate admit`).
    pub fn decoded_patch(&self) -> Option<serde_json::Value> {
        let text = self.patch.as_deref()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The top level of a review, read in one pass that only skips over the
/// request: its checks come first, the request is then deserialised
/// straight into [`AdmissionRequest`] (no intermediate `Value` tree).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", default, borrow)]
    api_version: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    kind: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    request: Option<&'a serde_json::value::RawValue>,
}

/// A top-level string field, or empty when it is missing or not a string.
fn text(raw: Option<&serde_json::value::RawValue>) -> String {
    raw.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .unwrap_or_default()
}

fn not_json(err: serde_json::Error) -> ReviewError {
    ReviewError::NotJson {
        detail: err.to_string(),
    }
}

/// Parses a request body strictly enough for the engine to rely on it:
/// apiVersion `admission.k8s.io/v1`, kind `AdmissionReview`, a request with a
/// non-empty uid. Unknown fields are ignored.
pub fn parse_review(body: &[u8]) -> Result<AdmissionReview, ReviewError> {
    // Valid JSON that is not an object gets its own message (and a derived
    // struct would otherwise accept an array too).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(not_json)?;
        return Err(ReviewError::NotObject);
    }
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(not_json)?;
    let api_version = text(envelope.api_version);
    if api_version != API_VERSION {
        return Err(ReviewError::WrongApiVersion { found: api_version });
    }
    let kind = text(envelope.kind);
    if kind != KIND {
        return Err(ReviewError::WrongKind { found: kind });
    }
    let request = match envelope.request {
        None => return Err(ReviewError::MissingRequest),
        Some(raw) if raw.get() == "null" => return Err(ReviewError::MissingRequest),
        Some(raw) => serde_json::from_str::<AdmissionRequest>(raw.get()).map_err(not_json)?,
    };
    if request.uid.trim().is_empty() {
        return Err(ReviewError::MissingUid);
    }
    Ok(AdmissionReview {
        api_version,
        kind,
        request: Some(request),
        response: None,
    })
}

/// The uid of a body that failed [`parse_review`], if one can be found, so an
/// `invalid` response can still echo it.
pub fn salvage_uid(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .get("request")?
        .get("uid")?
        .as_str()
        .filter(|uid| !uid.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn parses_a_pod_review_and_ignores_unknown_fields() {
        let review = parse_review(&body(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "alice", "groups": ["system:authenticated"], "extra": {"x": ["y"]}},
                "object": {"kind": "Pod", "spec": {"containers": []}},
                "dryRun": true,
                "options": {"kind": "CreateOptions"},
                "somethingNew": 1
            }
        })))
        .unwrap();
        let request = review.request.unwrap();
        assert_eq!(request.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(request.kind.kind, "Pod");
        assert_eq!(request.namespace.as_deref(), Some("default"));
        assert_eq!(request.user_info.username.as_deref(), Some("alice"));
        assert_eq!(request.dry_run, Some(true));
        assert!(request.object.is_some());
    }

    #[test]
    fn refuses_what_the_engine_cannot_rely_on() {
        assert!(matches!(
            parse_review(b"not json"),
            Err(ReviewError::NotJson { .. })
        ));
        assert!(matches!(parse_review(b"[1]"), Err(ReviewError::NotObject)));
        assert!(matches!(
            parse_review(b"\"x\""),
            Err(ReviewError::NotObject)
        ));
        assert!(matches!(
            parse_review(b"{\"apiVersion\": 1"),
            Err(ReviewError::NotJson { .. })
        ));
        // Not a string: reported as the wrong apiVersion, not a type error.
        assert!(matches!(
            parse_review(&body(serde_json::json!({"apiVersion": 1, "kind": "AdmissionReview", "request": {"uid": "a"}}))),
            Err(ReviewError::WrongApiVersion { found }) if found.is_empty()
        ));
        assert!(matches!(
            parse_review(&body(
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": null})
            )),
            Err(ReviewError::MissingRequest)
        ));
        assert!(matches!(
            parse_review(&body(serde_json::json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "a"}}))),
            Err(ReviewError::WrongApiVersion { found }) if found == "admission.k8s.io/v1beta1"
        ));
        assert!(matches!(
            parse_review(&body(
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod", "request": {"uid": "a"}})
            )),
            Err(ReviewError::WrongKind { .. })
        ));
        assert!(matches!(
            parse_review(&body(
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
            )),
            Err(ReviewError::MissingRequest)
        ));
        assert!(matches!(
            parse_review(&body(
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}})
            )),
            Err(ReviewError::MissingUid)
        ));
        assert!(matches!(
            parse_review(&body(
                serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 5}})
            )),
            Err(ReviewError::NotJson { .. })
        ));
    }

    #[test]
    fn salvages_the_uid_of_a_bad_review() {
        let bad = body(serde_json::json!({"apiVersion": "v0", "request": {"uid": "abc"}}));
        assert_eq!(salvage_uid(&bad).as_deref(), Some("abc"));
        assert_eq!(salvage_uid(b"nope"), None);
    }

    #[test]
    fn response_serialises_as_the_api_server_expects() {
        let response = AdmissionResponse::allow("u1")
            .with_patch(&[serde_json::json!({"op": "replace", "path": "/a", "value": 1})])
            .into_review();
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(json["kind"], "AdmissionReview");
        assert_eq!(json["response"]["uid"], "u1");
        assert_eq!(json["response"]["allowed"], true);
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        assert!(json.get("request").is_none());
        let patch = response.response.unwrap().decoded_patch().unwrap();
        assert_eq!(patch[0]["path"], "/a");

        let denied = serde_json::to_value(AdmissionResponse::deny("u2", "no")).unwrap();
        assert_eq!(denied["status"]["code"], 403);
        assert_eq!(denied["status"]["message"], "no");
        assert!(denied.get("patch").is_none());
        assert!(denied.get("warnings").is_none());
    }
}
