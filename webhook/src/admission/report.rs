//! How the engine reports a decision: the object's verdict assembled from
//! its images' verdicts under the policy's mode, the AdmissionReview answer
//! to the API server, the metrics and the one-line audit record.

use std::time::{Duration, Instant};

use imgate_core::policy::{Mode, OnRegistryError, Policy};
use serde_json::Value;

use super::{
    Admission, CheckError, Endpoint, Engine, ImageDecision, ObjectDecision, PatchOp,
    WOULD_DENY_ANNOTATION,
};
use crate::metrics::Metrics;
use crate::review::{AdmissionRequest, AdmissionResponse, AdmissionReview};

/// Answers an API server's review that `arrived` at the server: the
/// request becomes an [`Admission`] for [`Engine::decide`], the decision an
/// AdmissionResponse that echoes the uid, always. Policy denials are
/// `allowed: false` with a 403 status; a request the engine cannot use is
/// `invalid` (400). Writes the decision log line and the latency metric.
pub async fn answer_review(
    engine: &Engine,
    review: AdmissionReview,
    endpoint: Endpoint,
    arrived: Instant,
) -> AdmissionReview {
    let Some(request) = review.request else {
        return AdmissionResponse::invalid("", "admission review has no request").into_review();
    };
    let policy = engine.policy();
    let decision = match Admission::from_request(&request, endpoint, arrived) {
        Ok(admission) => engine.decide_under(&policy, &admission).await,
        Err(message) => Err(message),
    };
    let response = match &decision {
        Err(message) => AdmissionResponse::invalid(&request.uid, message.clone()),
        Ok(decision) => to_response(&request.uid, &policy, decision),
    };
    let latency = arrived.elapsed();
    engine
        .metrics()
        .observe_review(endpoint.as_str(), latency.as_secs_f64());
    log_decision(&request, &response, decision.as_ref().ok(), latency);
    response.into_review()
}

/// Turns per-image verdicts into the object's decision under the policy's mode.
pub(super) fn assemble(
    policy: &Policy,
    endpoint: Endpoint,
    images: Vec<ImageDecision>,
) -> ObjectDecision {
    let audit = policy.mode == Mode::Audit;
    let mut decision = ObjectDecision {
        allowed: true,
        ..Default::default()
    };
    for image in &images {
        match (&image.reason, image.allowed) {
            (Some(reason), false) if audit => decision
                .warnings
                .push(format!("imgate audit: would deny: {reason}")),
            (Some(reason), false) => {
                decision.allowed = false;
                decision.reasons.push(reason.clone());
            }
            (Some(reason), true) => decision.warnings.push(format!("imgate: {reason}")),
            (None, _) => {}
        }
        if let (true, Some(pinned)) = (image.allowed, &image.pinned) {
            if audit {
                decision.warnings.push(format!(
                    "imgate audit: would pin {} to {pinned}",
                    image.site
                ));
            } else if endpoint == Endpoint::Mutate {
                decision.patch.push(PatchOp {
                    op: "replace".to_string(),
                    path: image.pointer.clone(),
                    value: Value::String(pinned.clone()),
                });
            }
        }
    }
    if !decision.allowed {
        // A denied object is not stored, so a patch would be noise.
        decision.patch.clear();
    }
    decision.images = images;
    decision
}

/// The registry work failed. Only an outage is up to `onRegistryError`;
/// any other failure (404, refused credentials, a lying registry, a bad
/// configuration) denies whatever the policy says, naming the cause.
pub(super) fn registry_failure(
    mut decision: ImageDecision,
    policy: &Policy,
    who: &str,
    written: &str,
    rule: &str,
    err: CheckError,
) -> ImageDecision {
    let cause = err.chain();
    let fail_open = policy.on_registry_error == OnRegistryError::Allow;
    decision.registry_error = true;
    decision.allowed = fail_open && err.is_unavailable();
    decision.reason = Some(match (decision.allowed, fail_open) {
        (true, _) => format!(
            "{who}: image {written:?}: rule {rule:?}: cannot check ({cause}); allowed by onRegistryError: allow"
        ),
        (false, true) => format!(
            "{who}: image {written:?}: rule {rule:?}: cannot check: {cause} (not an outage, so onRegistryError: allow does not apply)"
        ),
        (false, false) => format!(
            "{who}: image {written:?}: rule {rule:?}: cannot check: {cause} (onRegistryError: deny)"
        ),
    });
    decision
}

/// An object naming `count` distinct images, more than the policy's cap:
/// denied (or, in audit mode, reported) without checking any.
pub(super) fn too_many_images(policy: &Policy, count: usize) -> ObjectDecision {
    object_denial(
        policy,
        format!(
            "object has {count} distinct images, more than limits.maxImagesPerObject ({}) allows; none was checked",
            policy.limits.max_images_per_object
        ),
    )
}

/// The whole object denied for `reason` (in audit mode, reported).
pub(super) fn object_denial(policy: &Policy, reason: String) -> ObjectDecision {
    match policy.mode {
        Mode::Enforce => ObjectDecision {
            allowed: false,
            reasons: vec![reason],
            ..Default::default()
        },
        Mode::Audit => ObjectDecision {
            allowed: true,
            warnings: vec![format!("imgate audit: would deny: {reason}")],
            ..Default::default()
        },
    }
}

pub(super) fn to_response(
    uid: &str,
    policy: &Policy,
    decision: &ObjectDecision,
) -> AdmissionResponse {
    let mut response = if decision.allowed {
        AdmissionResponse::allow(uid).with_patch(&decision.patch)
    } else {
        AdmissionResponse::deny(uid, decision.reasons.join("; "))
    };
    response.warnings = decision.warnings.clone();
    if policy.mode == Mode::Audit {
        let would_deny = decision.would_deny();
        if !would_deny.is_empty() {
            response
                .audit_annotations
                .insert(WOULD_DENY_ANNOTATION.to_string(), would_deny.join("; "));
        }
    }
    response
}

pub(super) fn count(metrics: &Metrics, policy: &Policy, decision: Option<&ObjectDecision>) {
    let Some(decision) = decision else { return };
    if decision.skipped.is_some() {
        metrics.decision("skipped", "");
    }
    for image in &decision.images {
        let result = match (image.allowed, policy.mode) {
            (true, _) => "allowed",
            (false, Mode::Audit) => "audit_denied",
            (false, Mode::Enforce) => "denied",
        };
        metrics.decision(result, image.rule.as_deref().unwrap_or_default());
    }
}

/// The audit record: one line per review, inside the review's span (opened
/// by the server's handler with the request's uid, endpoint, kind,
/// namespace and operation). Never includes credentials.
pub(super) fn log_decision(
    request: &AdmissionRequest,
    response: &AdmissionResponse,
    decision: Option<&ObjectDecision>,
    latency: Duration,
) {
    let join = |f: &dyn Fn(&ImageDecision) -> Option<String>| -> String {
        decision
            .map(|d| d.images.iter().filter_map(f).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    let name = request
        .name
        .as_deref()
        .or_else(|| {
            let metadata = request.object.as_ref()?.get("metadata")?;
            metadata
                .get("name")
                .or_else(|| metadata.get("generateName"))
                .and_then(Value::as_str)
        })
        .unwrap_or_default();
    let reason: std::borrow::Cow<'_, str> = match (decision, &response.status) {
        (_, Some(status)) => status.message.as_deref().unwrap_or_default().into(),
        (Some(d), None) => match &d.skipped {
            Some(skipped) => skipped.as_str().into(),
            None => d.warnings.join("; ").into(),
        },
        (None, None) => "".into(),
    };
    tracing::info!(
        target: "imgate::decision",
        user = request.user_info.username.as_deref().unwrap_or_default(),
        name = %name,
        dry_run = request.dry_run.unwrap_or(false),
        site = %join(&|i| Some(i.site.clone())),
        image = %join(&|i| i.image.clone()),
        digest = %join(&|i| i.digest.as_ref().map(ToString::to_string)),
        rule = %join(&|i| i.rule.clone()),
        allowed = response.allowed,
        patched = response.patch.is_some(),
        reason = %reason,
        // Microseconds are enough, and spare the reader float noise
        // (`0.11372299999999999`).
        latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3,
        "admission decision"
    );
}
