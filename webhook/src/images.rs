//! Where images live in Kubernetes objects: which kinds run pods, where their
//! pod spec is, and every container image in it with its JSON pointer (so a
//! patch can replace exactly that field).
//!
//! Every container list counts (`containers`, `initContainers`,
//! `ephemeralContainers`): an image left out of any of them is a bypass.

use serde_json::Value;

/// How an object relates to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCarrier {
    /// A Pod: its images are pulled as written, so they are pinned under `pinDigests: pods`.
    Pod,
    /// A controller with a pod template (Deployment, CronJob, …).
    Template,
}

/// The container list an image is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerList {
    /// `containers`.
    Containers,
    /// `initContainers`.
    InitContainers,
    /// `ephemeralContainers` (debug containers added to a running Pod).
    EphemeralContainers,
}

impl ContainerList {
    /// The field name in the pod spec.
    pub fn field(self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
            ContainerList::EphemeralContainers => "ephemeralContainers",
        }
    }

    /// What to call a container of this list in messages.
    pub fn noun(self) -> &'static str {
        match self {
            ContainerList::Containers => "container",
            ContainerList::InitContainers => "init container",
            ContainerList::EphemeralContainers => "ephemeral container",
        }
    }
}

/// One image field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSite {
    /// JSON pointer to the `image` field, e.g. `/spec/template/spec/initContainers/0/image`.
    pub pointer: String,
    /// Container name (`#<index>` when it has none).
    pub container: String,
    /// Which list it is in.
    pub list: ContainerList,
    /// The image as written; `None` when the field is missing or not a string.
    pub image: Option<String>,
    /// Pod or template.
    pub carrier: PodCarrier,
}

impl ImageSite {
    /// `init container "setup"`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {:?}", self.list.noun(), self.container)
    }
}

/// The JSON pointer of the pod spec of a kind in `group`, and whether it is a
/// Pod or a template; `None` for kinds that do not run pods.
pub fn pod_spec_pointer(group: &str, kind: &str) -> Option<(&'static str, PodCarrier)> {
    match (group, kind) {
        ("", "Pod") => Some(("/spec", PodCarrier::Pod)),
        ("", "ReplicationController") => Some(("/spec/template/spec", PodCarrier::Template)),
        // `extensions` served these kinds before apps/v1; some clusters still list it.
        ("apps" | "extensions", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            Some(("/spec/template/spec", PodCarrier::Template))
        }
        ("batch", "Job") => Some(("/spec/template/spec", PodCarrier::Template)),
        ("batch", "CronJob") => {
            Some(("/spec/jobTemplate/spec/template/spec", PodCarrier::Template))
        }
        _ => None,
    }
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Every image site of `object`'s pod spec at `spec_pointer`. With
/// `only_ephemeral`, just the ephemeral containers (the
/// `pods/ephemeralcontainers` subresource can change nothing else).
pub fn image_sites(
    object: &Value,
    spec_pointer: &str,
    carrier: PodCarrier,
    only_ephemeral: bool,
) -> Vec<ImageSite> {
    let Some(spec) = object.pointer(spec_pointer) else {
        return Vec::new();
    };
    let lists: &[ContainerList] = if only_ephemeral {
        &[ContainerList::EphemeralContainers]
    } else {
        &[
            ContainerList::InitContainers,
            ContainerList::Containers,
            ContainerList::EphemeralContainers,
        ]
    };
    let mut sites = Vec::new();
    for &list in lists {
        let Some(containers) = spec.get(list.field()).and_then(Value::as_array) else {
            continue;
        };
        for (index, container) in containers.iter().enumerate() {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{index}"), str::to_string);
            sites.push(ImageSite {
                pointer: format!("{spec_pointer}/{}/{index}/image", list.field()),
                container: name,
                list,
                image: container
                    .get("image")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                carrier,
            });
        }
    }
    sites
}

/// The sites of an old-style `EphemeralContainers` object (Kubernetes
/// 1.16–1.22 sent the subresource as its own kind).
pub fn legacy_ephemeral_sites(object: &Value) -> Vec<ImageSite> {
    image_sites(object, "", PodCarrier::Pod, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(sites: &[ImageSite]) -> Vec<(&str, Option<&str>)> {
        sites
            .iter()
            .map(|s| (s.pointer.as_str(), s.image.as_deref()))
            .collect()
    }

    fn spec() -> Value {
        json!({
            "initContainers": [{"name": "init", "image": "i:1"}],
            "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
        })
    }

    #[test]
    fn pod_sites_cover_every_container_list() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": spec()});
        let (pointer, carrier) = pod_spec_pointer("", "Pod").unwrap();
        let sites = image_sites(&pod, pointer, carrier, false);
        assert_eq!(
            pointers(&sites),
            vec![
                ("/spec/initContainers/0/image", Some("i:1")),
                ("/spec/containers/0/image", Some("a:1")),
                ("/spec/containers/1/image", Some("b:1")),
                ("/spec/ephemeralContainers/0/image", Some("busybox")),
            ]
        );
        assert_eq!(sites[0].describe(), "init container \"init\"");
        assert!(sites.iter().all(|s| s.carrier == PodCarrier::Pod));
        for site in &sites {
            assert_eq!(
                pod.pointer(&site.pointer).and_then(Value::as_str),
                site.image.as_deref()
            );
        }
        let ephemeral = image_sites(&pod, pointer, carrier, true);
        assert_eq!(
            pointers(&ephemeral),
            vec![("/spec/ephemeralContainers/0/image", Some("busybox"))]
        );
    }

    #[test]
    fn every_controller_kind_has_its_template() {
        let template = json!({"spec": {"template": {"spec": spec()}}});
        for (api_version, kind) in [
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("batch/v1", "Job"),
            ("v1", "ReplicationController"),
        ] {
            let (pointer, carrier) = pod_spec_pointer(group_of(api_version), kind).unwrap();
            assert_eq!(carrier, PodCarrier::Template);
            let sites = image_sites(&template, pointer, carrier, false);
            assert_eq!(sites.len(), 4, "{kind}");
            assert_eq!(
                sites[0].pointer,
                "/spec/template/spec/initContainers/0/image"
            );
        }
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": spec()}}}}});
        let (pointer, carrier) = pod_spec_pointer("batch", "CronJob").unwrap();
        let sites = image_sites(&cron, pointer, carrier, false);
        assert_eq!(sites.len(), 4);
        assert_eq!(
            sites[2].pointer,
            "/spec/jobTemplate/spec/template/spec/containers/1/image"
        );
        assert_eq!(
            cron.pointer(&sites[2].pointer).and_then(Value::as_str),
            Some("b:1")
        );
    }

    #[test]
    fn other_kinds_and_groups_run_no_pods() {
        assert_eq!(pod_spec_pointer("", "ConfigMap"), None);
        assert_eq!(pod_spec_pointer("example.com", "Deployment"), None);
        assert_eq!(pod_spec_pointer("", "Deployment"), None);
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
    }

    #[test]
    fn missing_images_and_names_are_reported_not_skipped() {
        let pod = json!({"spec": {"containers": [{"image": 5}, {"name": "x"}]}});
        let sites = image_sites(&pod, "/spec", PodCarrier::Pod, false);
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].container, "#0");
        assert_eq!(sites[0].image, None);
        assert_eq!(sites[1].image, None);
        let legacy = json!({"kind": "EphemeralContainers", "ephemeralContainers": [{"name": "d", "image": "busybox"}]});
        assert_eq!(
            pointers(&legacy_ephemeral_sites(&legacy)),
            vec![("/ephemeralContainers/0/image", Some("busybox"))]
        );
    }
}
