//! What the engine decides on: an [`Admission`], built from an API server's
//! AdmissionRequest or from a manifest (`imgate admit`, `verify --policy`).

use std::fmt;
use std::time::Instant;

use imgate_core::workload::{self, PodImage};
use serde_json::Value;

use super::Endpoint;
use crate::review::AdmissionRequest;

/// The operation being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// An object is created.
    Create,
    /// An object is changed: only new or changed images count.
    Update,
    /// An object is deleted: it runs no image.
    Delete,
    /// A connection (exec, attach, port-forward): it runs no image.
    Connect,
}

impl Operation {
    /// Parses the AdmissionRequest's `operation`.
    pub fn parse(operation: &str) -> Option<Operation> {
        match operation {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    /// As the API server writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object to decide on, and how it is being admitted.
#[derive(Debug, Clone)]
pub struct Admission<'a> {
    /// What is being done to the object.
    pub operation: Operation,
    /// The subresource (`ephemeralcontainers`, `status`, …), if any.
    pub sub_resource: Option<&'a str>,
    /// The object's namespace; empty for cluster-scoped objects.
    pub namespace: &'a str,
    /// The kind's API group (`""` for the core group).
    pub group: &'a str,
    /// The kind, e.g. `Deployment`.
    pub kind: &'a str,
    /// The object (absent on DELETE).
    pub object: Option<&'a Value>,
    /// The object before an UPDATE.
    pub old_object: Option<&'a Value>,
    /// Which endpoint is asking.
    pub endpoint: Endpoint,
    /// When the request arrived: the deadline counts from here, so time
    /// spent reading the body is not granted twice.
    pub arrived: Instant,
    /// Whether the decision is counted in the metrics (not for dry runs).
    pub counted: bool,
}

impl<'a> Admission<'a> {
    /// The admission an API server's request asks for; `Err` names what
    /// makes the request unusable.
    pub fn from_request(
        request: &'a AdmissionRequest,
        endpoint: Endpoint,
        arrived: Instant,
    ) -> Result<Admission<'a>, String> {
        let operation = Operation::parse(&request.operation).ok_or_else(|| {
            format!(
                "admission request has operation {:?}, expected CREATE, UPDATE, DELETE or CONNECT",
                request.operation
            )
        })?;
        Ok(Admission {
            operation,
            sub_resource: request.sub_resource.as_deref().filter(|s| !s.is_empty()),
            namespace: request.namespace.as_deref().unwrap_or_default(),
            group: &request.kind.group,
            kind: &request.kind.kind,
            object: request.object.as_ref(),
            old_object: request.old_object.as_ref(),
            endpoint,
            arrived,
            counted: request.dry_run != Some(true),
        })
    }

    /// A manifest created in `namespace` (its own `metadata.namespace`
    /// wins), as `imgate admit` and `verify --policy` judge it: the kind and
    /// group from its `kind` and `apiVersion`, arriving now.
    pub fn manifest(object: &'a Value, namespace: &'a str, endpoint: Endpoint) -> Admission<'a> {
        let text = |member: &str| object.get(member).and_then(Value::as_str);
        Admission {
            operation: Operation::Create,
            sub_resource: None,
            namespace: object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace),
            group: workload::group_of(text("apiVersion").unwrap_or_default()),
            kind: text("kind").unwrap_or_default(),
            object: Some(object),
            old_object: None,
            endpoint,
            arrived: Instant::now(),
            counted: true,
        }
    }

    /// Why nothing here can run an image, if so.
    pub(super) fn skipped(&self) -> Option<String> {
        match (self.operation, self.sub_resource) {
            (Operation::Delete | Operation::Connect, _) => {
                Some(format!("{} runs no image", self.operation))
            }
            (_, None | Some("ephemeralcontainers")) => None,
            (_, Some(other)) => Some(format!("subresource {other} runs no image")),
        }
    }

    /// Whether only ephemeral containers can change (the
    /// `pods/ephemeralcontainers` subresource).
    pub(super) fn only_ephemeral(&self) -> bool {
        self.sub_resource == Some("ephemeralcontainers")
    }

    /// The images that count: on UPDATE, only new or changed ones. An
    /// image the object already had was judged when it was set; judging it
    /// again would block unrelated edits (labels, scale) of objects admitted
    /// under an older policy, and patching it would restart a running
    /// container.
    pub(super) fn changed(&self, images: Vec<PodImage>) -> Vec<PodImage> {
        match (self.operation, self.old_object) {
            (Operation::Update, Some(old)) => images
                .into_iter()
                .filter(|image| {
                    image.image.is_none()
                        || old.pointer(&image.pointer).and_then(Value::as_str)
                            != image.image.as_deref()
                })
                .collect(),
            _ => images,
        }
    }
}
