//! What imgate knows about Kubernetes objects, in one place: which kinds run
//! pods and where their pod spec is ([`WORKLOADS`]), which fields of a pod
//! spec name an image ([`IMAGE_FIELDS`]) or a pull secret, how `List`s nest,
//! and the object-name rules of the API.
//!
//! Everything that looks for images derives from these tables: `imgate pin`
//! (YAML spans), the admission engine (JSON pointers, [`pod_images`]) and the
//! webhook's sparse reader (which members of a review to keep). A field
//! missing here is an image nobody checks, so a new image-bearing field of
//! Kubernetes is one new row, and the tests walk every row through every
//! consumer.

mod json;
mod names;

pub use json::{pod_images, MalformedObject, PodImage};
pub use names::{is_dns1123_label, is_dns1123_subdomain, MAX_LABEL, MAX_SUBDOMAIN};

/// How an object relates to the pods that run its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCarrier {
    /// A Pod: its images are pulled as written, so they are pinned under
    /// `pinDigests: pods`.
    Pod,
    /// A controller or template with a pod template (Deployment, CronJob,
    /// PodTemplate, …): its pods are created later from it.
    Template,
}

/// A kind that carries a pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// The API groups that serve it (`""` is the core group).
    pub groups: &'static [&'static str],
    /// Members from the object to its pod spec; empty when the object is
    /// the spec itself (the legacy `EphemeralContainers` object).
    pub pod_spec: &'static [&'static str],
    /// Pod or template.
    pub carrier: PodCarrier,
    /// Only `ephemeralContainers` can change through this kind.
    pub ephemeral_only: bool,
}

const TEMPLATE: &[&str] = &["spec", "template", "spec"];
// `extensions` served these kinds before apps/v1; some clusters still list it.
const APPS: &[&str] = &["apps", "extensions"];

const fn template(kind: &'static str, groups: &'static [&'static str]) -> Workload {
    Workload {
        kind,
        groups,
        pod_spec: TEMPLATE,
        carrier: PodCarrier::Template,
        ephemeral_only: false,
    }
}

/// Every kind that carries a pod spec.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        kind: "Pod",
        groups: &[""],
        pod_spec: &["spec"],
        carrier: PodCarrier::Pod,
        ephemeral_only: false,
    },
    Workload {
        kind: "PodTemplate",
        groups: &[""],
        pod_spec: &["template", "spec"],
        carrier: PodCarrier::Template,
        ephemeral_only: false,
    },
    template("ReplicationController", &[""]),
    template("Deployment", APPS),
    template("ReplicaSet", APPS),
    template("StatefulSet", APPS),
    template("DaemonSet", APPS),
    template("Job", &["batch"]),
    Workload {
        kind: "CronJob",
        groups: &["batch"],
        pod_spec: &["spec", "jobTemplate", "spec", "template", "spec"],
        carrier: PodCarrier::Template,
        ephemeral_only: false,
    },
    // Kubernetes 1.16-1.22 sent the `pods/ephemeralcontainers` subresource
    // as an object of its own whose top level holds the list.
    Workload {
        kind: "EphemeralContainers",
        groups: &[""],
        pod_spec: &[],
        carrier: PodCarrier::Pod,
        ephemeral_only: true,
    },
];

/// The workload of `kind` in API group `group`; `None` for kinds that run no
/// pods (and for a known kind in a group that does not serve it, such as a
/// custom resource called `Deployment`).
pub fn workload(group: &str, kind: &str) -> Option<&'static Workload> {
    WORKLOADS
        .iter()
        .find(|w| w.kind == kind && w.groups.contains(&group))
}

/// The workload of an object written with `apiVersion` and `kind`.
pub fn workload_of(api_version: &str, kind: &str) -> Option<&'static Workload> {
    workload(group_of(api_version), kind)
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

impl Workload {
    /// The pod spec's JSON pointer, e.g. `/spec/template/spec`.
    pub fn pointer(&self) -> String {
        self.pod_spec.iter().map(|m| format!("/{m}")).collect()
    }

    /// The image fields that count for this kind; with `only_ephemeral`
    /// (the `pods/ephemeralcontainers` subresource), just ephemeral
    /// containers, the only thing it can change.
    pub fn image_fields(&self, only_ephemeral: bool) -> impl Iterator<Item = &'static ImageField> {
        let ephemeral = self.ephemeral_only || only_ephemeral;
        IMAGE_FIELDS
            .iter()
            .filter(move |f| !ephemeral || f.list == EPHEMERAL_CONTAINERS)
    }
}

/// A list in a pod spec whose elements name images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageField {
    /// The pod spec member holding the list, e.g. `volumes`.
    pub list: &'static str,
    /// Members from a list element to the image string, e.g.
    /// `["image", "reference"]`.
    pub image: &'static [&'static str],
    /// Whether every element must name an image (containers) or only those
    /// with the first member of [`ImageField::image`] (volumes: only image
    /// volumes have `image`).
    pub every_element: bool,
    /// What to call an element in messages: `init container`, `image volume`.
    pub noun: &'static str,
}

const EPHEMERAL_CONTAINERS: &str = "ephemeralContainers";

/// Every member of a pod spec that names an image. A container without an
/// image, or an image field of the wrong type, is denied by the engine, never
/// skipped.
pub const IMAGE_FIELDS: &[ImageField] = &[
    ImageField {
        list: "initContainers",
        image: &["image"],
        every_element: true,
        noun: "init container",
    },
    ImageField {
        list: "containers",
        image: &["image"],
        every_element: true,
        noun: "container",
    },
    ImageField {
        list: EPHEMERAL_CONTAINERS,
        image: &["image"],
        every_element: true,
        noun: "ephemeral container",
    },
    // Image volumes (`spec.volumes[].image.reference`, on by default since
    // Kubernetes 1.35): an OCI image or artifact mounted into the Pod, whose
    // files the containers can execute.
    ImageField {
        list: "volumes",
        image: &["image", "reference"],
        every_element: false,
        noun: "image volume",
    },
];

/// The pod spec member listing the pod's own pull secrets.
pub const PULL_SECRETS: &str = "imagePullSecrets";
/// The pod spec members naming its service account, the current one first
/// (`serviceAccount` is its deprecated alias).
pub const SERVICE_ACCOUNT: &[&str] = &["serviceAccountName", "serviceAccount"];

/// Whether objects of `kind` are lists whose `items` are objects (`List`,
/// `PodList`, `DeploymentList`, …).
pub fn is_list_kind(kind: &str) -> bool {
    kind.ends_with("List")
}

/// How deep `List`s may nest inside each other before the rest is refused.
pub const MAX_LIST_DEPTH: usize = 16;

/// The smallest object of `workload` with one element of `field` naming
/// `image` (an element named `x`). Every consumer of the tables must find
/// the image in it; the tests walk every (workload, field) row with it.
pub fn example_object(workload: &Workload, field: &ImageField, image: &str) -> serde_json::Value {
    use serde_json::{json, Value};
    let mut element = Value::String(image.to_string());
    for member in field.image.iter().rev() {
        element = json!({ *member: element });
    }
    if let Value::Object(map) = &mut element {
        map.insert("name".to_string(), json!("x"));
    }
    let mut spec = json!({ field.list: [element] });
    for member in workload.pod_spec.iter().rev() {
        spec = json!({ *member: spec });
    }
    let group = workload.groups.first().copied().unwrap_or_default();
    let api_version = match group {
        "" => "v1".to_string(),
        group => format!("{group}/v1"),
    };
    if let Value::Object(map) = &mut spec {
        map.insert("apiVersion".to_string(), json!(api_version));
        map.insert("kind".to_string(), json!(workload.kind));
        map.insert("metadata".to_string(), json!({"name": "example"}));
    }
    spec
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
