use serde_json::{json, Value};

use super::*;

#[test]
fn every_workload_and_every_image_field_is_found() {
    for workload in WORKLOADS {
        for field in workload.image_fields(false) {
            let object = example_object(workload, field, "registry.example/app:1");
            let found_by_kind = workload_of(
                object["apiVersion"].as_str().unwrap(),
                object["kind"].as_str().unwrap(),
            );
            assert_eq!(found_by_kind, Some(workload));
            let images = pod_images(&object, workload, false).unwrap();
            assert_eq!(images.len(), 1, "{} {}", workload.kind, field.list);
            let image = &images[0];
            assert_eq!(image.image.as_deref(), Some("registry.example/app:1"));
            assert_eq!(image.field, field);
            assert_eq!(image.owner, "x");
            assert_eq!(image.carrier, workload.carrier);
            assert_eq!(
                object.pointer(&image.pointer).and_then(Value::as_str),
                Some("registry.example/app:1"),
                "{}",
                image.pointer
            );
            assert!(image.pointer.starts_with(&workload.pointer()));
        }
    }
}

/// Written by hand from the Kubernetes 1.35 API, independently of the
/// tables: a new image-bearing field belongs here and in [`IMAGE_FIELDS`].
#[test]
fn a_pod_with_every_kind_of_image_field_yields_all_of_them() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {
            "initContainers": [{"name": "setup", "image": "i:1"}],
            "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "models", "image": {"reference": "evil.example/malware:latest", "pullPolicy": "Always"}},
                {"name": "tmp", "emptyDir": {}}
            ]
        }
    });
    let workload = workload("", "Pod").unwrap();
    let images = pod_images(&pod, workload, false).unwrap();
    let found: Vec<(&str, Option<&str>, String)> = images
        .iter()
        .map(|i| (i.pointer.as_str(), i.image.as_deref(), i.describe()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "/spec/initContainers/0/image",
                Some("i:1"),
                "init container \"setup\"".to_string()
            ),
            (
                "/spec/containers/0/image",
                Some("a:1"),
                "container \"a\"".to_string()
            ),
            (
                "/spec/containers/1/image",
                Some("b:1"),
                "container \"b\"".to_string()
            ),
            (
                "/spec/ephemeralContainers/0/image",
                Some("busybox"),
                "ephemeral container \"debug\"".to_string()
            ),
            (
                "/spec/volumes/1/image/reference",
                Some("evil.example/malware:latest"),
                "image volume \"models\"".to_string()
            ),
        ]
    );
    // The subresource can change ephemeral containers only.
    let ephemeral = pod_images(&pod, workload, true).unwrap();
    assert_eq!(ephemeral.len(), 1);
    assert_eq!(ephemeral[0].pointer, "/spec/ephemeralContainers/0/image");
}

#[test]
fn kinds_groups_and_lists() {
    assert_eq!(workload("", "ConfigMap"), None);
    assert_eq!(workload("example.com", "Deployment"), None);
    assert_eq!(workload("", "Deployment"), None);
    assert_eq!(
        workload("extensions", "Deployment").unwrap().kind,
        "Deployment"
    );
    assert_eq!(
        workload("", "PodTemplate").unwrap().pointer(),
        "/template/spec"
    );
    assert_eq!(
        workload("batch", "CronJob").unwrap().pointer(),
        "/spec/jobTemplate/spec/template/spec"
    );
    assert_eq!(group_of("apps/v1"), "apps");
    assert_eq!(group_of("v1"), "");
    assert!(is_list_kind("List") && is_list_kind("PodList"));
    assert!(!is_list_kind("Pod"));
    let legacy = workload("", "EphemeralContainers").unwrap();
    let object = json!({"kind": "EphemeralContainers", "ephemeralContainers": [{"name": "d", "image": "busybox"}],
        "containers": [{"name": "ignored", "image": "not-changeable:1"}]});
    let images = pod_images(&object, legacy, false).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].pointer, "/ephemeralContainers/0/image");
}

#[test]
fn missing_or_mistyped_images_are_reported_not_skipped() {
    let pod = workload("", "Pod").unwrap();
    let object = json!({"spec": {"containers": [{"image": 5}, {"name": "x"}],
        "volumes": [{"name": "v", "image": "evil:1"}, {"name": "w", "image": {"pullPolicy": "Always"}}]}});
    let images = pod_images(&object, pod, false).unwrap();
    assert_eq!(images.len(), 4);
    assert_eq!(images[0].owner, "#0");
    assert!(images.iter().all(|i| i.image.is_none()), "{images:?}");
    assert_eq!(images[2].pointer, "/spec/volumes/0/image/reference");

    // Nulls are absent lists, as Kubernetes reads them.
    let nulls = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}], "initContainers": null, "volumes": null}});
    assert_eq!(pod_images(&nulls, pod, false).unwrap().len(), 1);
}

#[test]
fn malformed_objects_are_errors() {
    let deployment = workload("apps", "Deployment").unwrap();
    for (object, pointer, found, expected) in [
        (json!("x"), "the object", "a string", "an object"),
        (
            json!({"spec": {}}),
            "/spec/template",
            "missing",
            "an object",
        ),
        (
            json!({"spec": {"template": {"spec": "x"}}}),
            "/spec/template/spec",
            "a string",
            "an object",
        ),
        (
            json!({"spec": {"template": {"spec": {"containers": "evil:1"}}}}),
            "/spec/template/spec/containers",
            "a string",
            "a list",
        ),
        (
            json!({"spec": {"template": {"spec": {"volumes": {"image": {"reference": "evil:1"}}}}}}),
            "/spec/template/spec/volumes",
            "an object",
            "a list",
        ),
        (
            json!({"spec": {"template": {"spec": {"initContainers": ["evil:1"]}}}}),
            "/spec/template/spec/initContainers/0",
            "a string",
            "an object",
        ),
    ] {
        let err = pod_images(&object, deployment, false).unwrap_err();
        assert_eq!(err.pointer, pointer, "{object}");
        assert_eq!(err.found, found, "{object}");
        assert_eq!(err.expected, expected, "{object}");
        assert!(err.to_string().contains(pointer));
    }
}
