// Tests: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn answer(uid: &str, allowed: bool, message: &str) -> Result<(u16, Bytes), String> {
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": allowed, "status": {"message": message}}
    });
    Ok((200, Bytes::from(body.to_string())))
}

#[test]
fn judges_decisions_faults_and_transport() {
    let fast = Duration::from_millis(5);
    let limit = Duration::from_secs(4);
    let judged = |kind, answer| judge(kind, answer, fast, limit).0;
    assert_eq!(
        judged(Kind::Cached, answer("cached", true, "")),
        Verdict::Expected
    );
    assert_eq!(
        judged(Kind::Unsigned, answer("unsigned", false, "no signature")),
        Verdict::Expected
    );
    // Fail-open on an unsigned image is the worst answer there is.
    assert_eq!(
        judged(Kind::Unsigned, answer("unsigned", true, "")),
        Verdict::Unexpected
    );
    assert_eq!(
        judged(
            Kind::New,
            answer(
                "new",
                false,
                "cannot check: fetching signatures (onRegistryError: deny)"
            )
        ),
        Verdict::FailClosed
    );
    assert_eq!(
        judged(Kind::New, answer("new", false, "no signature matched")),
        Verdict::Unexpected
    );
    assert_eq!(
        judged(Kind::Cached, answer("other", true, "")),
        Verdict::Unexpected
    );
    assert_eq!(
        judged(Kind::Malformed, Ok((400, Bytes::from_static(b"bad")))),
        Verdict::Expected
    );
    assert_eq!(
        judged(Kind::Malformed, answer("x", true, "")),
        Verdict::Unexpected
    );
    assert_eq!(
        judged(Kind::Cached, Ok((503, Bytes::new()))),
        Verdict::Unexpected
    );
    assert_eq!(
        judged(Kind::Cached, Err("reset".into())),
        Verdict::Unexpected
    );
    let late = judge(Kind::Cached, answer("cached", true, ""), limit * 2, limit).0;
    assert_eq!(late, Verdict::Unexpected);
}

#[test]
fn reads_a_metric_sample() {
    let text = "# HELP x\nimgate_tls_reloads_total{result=\"success\"} 3\nimgate_tls_reloads_total{result=\"failure\"} 1\n";
    assert_eq!(
        metric(text, "imgate_tls_reloads_total{result=\"success\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(text, "imgate_policy_reloads_total{result=\"success\"}"),
        None
    );
}
