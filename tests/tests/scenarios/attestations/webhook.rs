//! The webhook gates on attestations: the real binary over TLS admits an
//! image by a provenance condition and, after a policy reload that names
//! another repository, denies the same image from the cached evidence
//! (no registry request), naming the attestation, the condition and the
//! value it saw, in the answer and in the decision line.

use std::path::Path;
use std::time::{Duration, Instant};

use imgate_tests::webhook::{generate_certs, pod, review, Webhook, WebhookOptions};

use super::*;

fn policy(registry: &str, public: &str, repository: &str) -> String {
    format!(
        r#"trustedRegistries: ["{registry}/**"]
registries: {{"{registry}": {{http: true}}}}
rules:
  - name: ours
    images: ["{registry}/**"]
    keys: [{{file: {public}}}]
    attestations:
      - name: provenance
        predicateType: slsaprovenance1
        conditions:
          - expression: predicate.buildDefinition.externalParameters.workflow.repository == '{repository}'
            message: built from our repository
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_admits_by_provenance_and_denies_from_cache_after_a_reload() {
    let ctx = Ctx::new(Variant::Http).await;
    let (key, public, _) = ctx.keys("ci");
    let pushed = ctx.push("webhook-provenance", "team/app").await;
    let tagged = format!("{}/team/app:v1", ctx.registry.host());
    let pinned = format!("{tagged}@{}", pushed.digest);
    let signed = ctx.run("sign", &["--key", &key, &pinned]);
    assert_eq!(signed.code, 0, "{signed:?}");
    ctx.attest(
        &key,
        "slsaprovenance1",
        &provenance("https://github.com/example/app", "refs/heads/main"),
        "legacy",
        &pinned,
    );
    let policy_path = ctx.path("policy.yaml");
    let ours = policy(
        ctx.registry.host(),
        &public,
        "https://github.com/example/app",
    );
    std::fs::write(&policy_path, &ours).unwrap();
    let certs = ctx.dir.path().join("certs");
    generate_certs(&certs, false).unwrap();
    let webhook = Webhook::start(&WebhookOptions::new(Path::new(&policy_path), &certs).args([
        "--reload-interval",
        "200ms",
        "--deadline",
        "5s",
    ]))
    .unwrap();
    let client = webhook.client(false).unwrap();
    let object = pod("apps", &[&tagged]);

    let started = Instant::now();
    let (status, body) = webhook
        .post(&client, "/mutate", &review("p1", "apps", &object))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    let requests = webhook
        .metric("imgate_registry_requests_total")
        .await
        .unwrap();
    assert!(requests > 0.0);

    // The same rule with a condition naming another repository: the rule's
    // fingerprint (and so the cache key) is unchanged, the answer is not.
    std::fs::write(
        &policy_path,
        policy(ctx.registry.host(), &public, "https://github.com/evil/app"),
    )
    .unwrap();
    assert!(
        webhook.wait_for_log("policy reloaded", Duration::from_secs(10)),
        "{}",
        webhook.logs()
    );
    let (_, body) = webhook
        .post(&client, "/mutate", &review("p2", "apps", &object))
        .await
        .unwrap();
    assert_eq!(body["response"]["allowed"], false, "{body}");
    let message = body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("attestation \"provenance\"")
            && message.contains("built from our repository")
            && message.contains("https://github.com/example/app"),
        "{message}"
    );
    assert_eq!(
        webhook
            .metric("imgate_registry_requests_total")
            .await
            .unwrap(),
        requests,
        "the evidence was cached: no registry request"
    );
    // The decision line names the attestation and the condition.
    assert!(
        webhook.wait_for_log(
            "attestation \\\"provenance\\\": condition",
            Duration::from_secs(5)
        ),
        "{}",
        webhook.logs()
    );
}
