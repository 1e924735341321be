//! Every (workload kind, image field) row of core's tables reaches the
//! engine's checks: an untrusted image anywhere is denied, a signed one is
//! pinned at exactly its field, and an object whose shape hides its images
//! is denied, never skipped.

use imgate_core::workload::{example_object, WORKLOADS};

use super::*;

/// A review of `object` as the API server sends it for `kind` in `group`.
fn review_of(
    group: &str,
    kind: &str,
    object: Value,
    sub_resource: Option<&str>,
) -> AdmissionReview {
    let mut review = fixture("pod-signed.json");
    let request = review.request.as_mut().unwrap();
    request.kind.group = group.to_string();
    request.kind.kind = kind.to_string();
    request.sub_resource = sub_resource.map(str::to_string);
    request.object = Some(object);
    review
}

#[tokio::test]
async fn every_workload_and_image_field_is_checked_and_pinned() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("pinDigests: all\n", backend.clone());
    for workload in WORKLOADS {
        let group = workload.groups[0];
        for field in workload.image_fields(false) {
            let what = format!("{} {}", workload.kind, field.list);
            // Untrusted: denied before any registry call, naming the field.
            let object = example_object(workload, field, "evil.example/malware:latest");
            let calls = backend.calls();
            let out = answer(
                &engine,
                review_of(group, workload.kind, object, None),
                Endpoint::Mutate,
            )
            .await;
            let response = out.response.unwrap();
            assert!(!response.allowed, "{what}: {response:?}");
            let message = message(&response);
            assert!(
                message.contains(&format!("{} \"x\"", field.noun)),
                "{what}: {message}"
            );
            assert!(
                message.contains("not in trustedRegistries"),
                "{what}: {message}"
            );
            assert_eq!(backend.calls(), calls, "{what}");

            // Signed: allowed and pinned at exactly the field.
            let signed = format!("{REGISTRY}/imgate/signed:v1");
            let object = example_object(workload, field, &signed);
            let request = review_of(group, workload.kind, object, None);
            let out = answer(&engine, request.clone(), Endpoint::Mutate).await;
            let response = out.response.unwrap();
            assert!(response.allowed, "{what}: {response:?}");
            let pinned = patched(&request, &response);
            let found: Vec<&Value> = [pinned.pointer(&format!(
                "{}/{}/0/{}",
                workload.pointer(),
                field.list,
                field.image.join("/")
            ))]
            .into_iter()
            .flatten()
            .collect();
            assert_eq!(found, vec![&Value::String(signed_pinned())], "{what}");
        }
    }
}

#[tokio::test]
async fn image_volumes_count_in_the_cap_and_the_decision() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("limits: {maxImagesPerObject: 1}\n", backend.clone());
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "web", "image": signed_pinned()}],
                 "volumes": [{"name": "models", "image": {"reference": format!("{REGISTRY}/imgate/models:v1")}}]}});
    let decision = admit(&engine, &pod, Endpoint::Mutate).await;
    assert!(!decision.allowed);
    assert!(
        decision.reasons[0].contains("2 distinct images"),
        "{decision:?}"
    );
    assert_eq!(backend.calls(), 0);

    let engine = make("", backend.clone());
    let decision = admit(&engine, &pod, Endpoint::Mutate).await;
    assert!(!decision.allowed, "{decision:?}");
    assert_eq!(decision.images.len(), 2);
    assert_eq!(
        decision.images[1].pointer,
        "/spec/volumes/0/image/reference"
    );
    assert_eq!(decision.images[1].site, "image volume \"models\"");
    assert!(
        decision.reasons[0].contains("no signatures"),
        "{decision:?}"
    );
}

#[tokio::test]
async fn objects_hiding_their_images_are_denied_never_skipped() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    for (group, kind, object, expected) in [
        (
            "",
            "Pod",
            serde_json::json!({"spec": {"containers": "evil.example/x:1"}}),
            "/spec/containers is a string, not a list",
        ),
        (
            "",
            "Pod",
            serde_json::json!({"spec": {"volumes": [{"name": "v", "image": "evil.example/x:1"}]}}),
            "image volume \"v\": has no image",
        ),
        (
            "apps",
            "Deployment",
            serde_json::json!({"spec": {"template": {"spec": [1]}}}),
            "/spec/template/spec is a list, not an object",
        ),
        (
            "batch",
            "CronJob",
            serde_json::json!({"spec": {}}),
            "/spec/jobTemplate is missing, not an object",
        ),
        (
            "",
            "PodTemplate",
            serde_json::json!({"template": {"spec": {"initContainers": [{"name": "i", "image": 7}]}}}),
            "init container \"i\": has no image",
        ),
    ] {
        let response = answer(
            &engine,
            review_of(group, kind, object, None),
            Endpoint::Mutate,
        )
        .await
        .response
        .unwrap();
        assert!(!response.allowed, "{kind}: {response:?}");
        assert!(
            message(&response).contains(expected),
            "{kind}: {}",
            message(&response)
        );
    }
    assert_eq!(backend.calls(), 0);
}

#[tokio::test]
async fn the_ephemeral_subresource_checks_only_ephemeral_containers() {
    let backend = FakeBackend::new(Health::Up);
    let engine = make("", backend.clone());
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "old", "image": "unchecked.example/x:1"}],
                 "ephemeralContainers": [{"name": "debug", "image": "evil.example/shell:1"}]}});
    let response = answer(
        &engine,
        review_of("", "Pod", pod, Some("ephemeralcontainers")),
        Endpoint::Mutate,
    )
    .await
    .response
    .unwrap();
    assert!(!response.allowed);
    let message = message(&response);
    assert!(
        message.contains("ephemeral container \"debug\""),
        "{message}"
    );
    assert!(!message.contains("unchecked.example"), "{message}");
}

#[tokio::test]
async fn unknown_operations_are_invalid() {
    let engine = make("", FakeBackend::new(Health::Up));
    let mut review = fixture("pod-signed.json");
    review.request.as_mut().unwrap().operation = "PATCH".into();
    let response = answer(&engine, review, Endpoint::Mutate)
        .await
        .response
        .unwrap();
    assert!(!response.allowed);
    assert_eq!(response.status.as_ref().unwrap().code, Some(400));
    assert!(message(&response).contains("operation \"PATCH\""));
}
