//! AdmissionReview handling: `parse_review` never panics on an arbitrary
//! request body (the API server is trusted, but anything reaching the port
//! is not), `salvage_uid` neither, and for what parses, finding the images
//! of the object never panics and every site's pointer leads to exactly the
//! image it reports, so a JSONPatch built from it replaces that field.
//!
//! The object is searched as every kind of core's workload table (whatever
//! the review's own kind): the fuzzer then needs no matching `request.kind`
//! to reach the walk.
#![no_main]

use imgate_core::workload::{self, PodImage, WORKLOADS};
use imgate_webhook::review::{parse_review, salvage_uid, AdmissionResponse};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_images(object: &Value, images: &[PodImage]) {
    for image in images {
        assert!(
            image.pointer.ends_with(&image.field.image.join("/")),
            "{}",
            image.pointer
        );
        assert_eq!(
            object.pointer(&image.pointer).and_then(Value::as_str),
            image.image.as_deref(),
            "pointer {} does not lead to the reported image",
            image.pointer
        );
        let _ = image.describe();
    }
}

fn walk(object: &Value, workload: &workload::Workload) {
    for only_ephemeral in [false, true] {
        match workload::pod_images(object, workload, only_ephemeral) {
            Ok(images) => check_images(object, &images),
            Err(err) => {
                let _ = err.to_string();
            }
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
        // Every kind that runs pods: the fuzzer then needs no matching
        // `request.kind` to reach the walk.
        for kind in WORKLOADS {
            walk(object, kind);
        }
    }
});
