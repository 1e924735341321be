//! AdmissionReview handling: `parse_review` never panics on an arbitrary
//! request body (the API server is trusted, but anything reaching the port
//! is not), `salvage_uid` neither, and for what parses, finding the images
//! of the object never panics and every site's pointer leads to exactly the
//! image it reports, so a JSONPatch built from it replaces that field.
//!
//! Beyond the review's own kind, the object is also searched as every kind
//! that runs pods (and as an old-style `EphemeralContainers` object): the
//! fuzzer then needs no matching `request.kind` to reach the walk.
#![no_main]

use imgate_webhook::images::{self, ImageSite};
use imgate_webhook::review::{parse_review, salvage_uid, AdmissionResponse};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const POD_KINDS: &[(&str, &str)] = &[
    ("", "Pod"),
    ("", "ReplicationController"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("extensions", "Deployment"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];

fn check_sites(object: &Value, sites: &[ImageSite]) {
    for site in sites {
        assert!(site.pointer.ends_with("/image"), "{}", site.pointer);
        assert_eq!(
            object.pointer(&site.pointer).and_then(Value::as_str),
            site.image.as_deref(),
            "pointer {} does not lead to the reported image",
            site.pointer
        );
        let _ = site.describe();
    }
}

fn walk(object: &Value, group: &str, kind: &str) {
    if kind == "EphemeralContainers" {
        check_sites(object, &images::legacy_ephemeral_sites(object));
    } else if let Some((pointer, carrier)) = images::pod_spec_pointer(group, kind) {
        for only_ephemeral in [false, true] {
            let sites = images::image_sites(object, pointer, carrier, only_ephemeral);
            check_sites(object, &sites);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let salvaged = salvage_uid(data);
    let review = match parse_review(data) {
        Ok(review) => review,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let Some(request) = &review.request else {
        panic!("parse_review accepted a review without a request");
    };
    assert!(!request.uid.trim().is_empty());
    assert_eq!(salvaged.as_deref(), Some(request.uid.as_str()));
    // The answer to a parsed review always serialises.
    let answer = AdmissionResponse::allow(&request.uid).into_review();
    assert!(serde_json::to_vec(&answer).is_ok());

    for object in [&request.object, &request.old_object].into_iter().flatten() {
        walk(object, &request.kind.group, &request.kind.kind);
        for (group, kind) in POD_KINDS {
            walk(object, group, kind);
        }
        walk(object, "", "EphemeralContainers");
        // Objects sent for validation carry their own apiVersion and kind.
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        walk(object, images::group_of(api_version), kind);
    }
});
