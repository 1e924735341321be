//! Scenarios: the real `imgate webhook` binary over real TLS (certificates
//! from `imgate webhook certs`), in front of the real registry behind a
//! counting proxy. AdmissionReviews are posted the way the API server posts
//! them, returned JSONPatches are applied with `json-patch` and the result
//! checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use imgate_core::reference::ImageRef;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{sign, SignOptions};
use imgate_keys::SigningKey;
use imgate_tests::webhook::{generate_certs, pod, review, Webhook, WebhookOptions, SERVICE_NAME};
use imgate_tests::{
    block_on, run_imgate, CountingProxy, ImageBuilder, ProxyMode, PushWith, Registry, Variant,
};
use serde_json::Value;

/// A registry behind a counting proxy, a signing key, certificates.
struct Env {
    registry: Registry,
    proxy: CountingProxy,
    key: SigningKey,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let registry = Registry::start(Variant::Http).await.unwrap();
        let proxy = CountingProxy::start(&registry).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        std::fs::write(dir.path().join("cosign.pub"), key.public_key().to_pem()).unwrap();
        generate_certs(&dir.path().join("certs"), false).unwrap();
        Env {
            registry,
            proxy,
            key,
            dir,
        }
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Pushes a distinct image as `repo:tag`; returns `PROXY/repo:tag` and its digest.
    async fn push(&self, repo: &str, tag: &str) -> (String, String) {
        let pushed = ImageBuilder::new(&format!("{repo}:{tag}"))
            .image()
            .push(&self.registry, repo, tag, PushWith::Http)
            .await
            .unwrap();
        (format!("{}/{repo}:{tag}", self.proxy.host()), pushed.digest)
    }

    /// Pushes and signs (through the proxy, so the signed identity is the
    /// name the webhook sees); the proxy's counter is reset afterwards.
    async fn push_signed(&self, repo: &str, tag: &str) -> (String, String) {
        let (reference, digest) = self.push(repo, tag).await;
        let client = RegistryClient::new(self.proxy.client_config()).unwrap();
        let image = ImageRef::parse(&format!("{reference}@{digest}")).unwrap();
        sign(&client, &image, &self.key, &SignOptions::default())
            .await
            .unwrap();
        self.proxy.reset();
        (reference, digest)
    }

    fn policy_text(&self, mode: &str, on_error: &str) -> String {
        let proxy = self.proxy.host();
        format!(
            "mode: {mode}\n\
             onRegistryError: {on_error}\n\
             namespaces:\n  exclude: [kube-system, imgate-system]\n\
             trustedRegistries: [\"{proxy}/team/**\"]\n\
             registries:\n  \"{proxy}\": {{http: true}}\n\
             rules:\n  - name: team\n    images: [\"{proxy}/team/**\"]\n    keys: [{{file: cosign.pub}}]\n"
        )
    }

    /// Writes `name` atomically (a rename, as a ConfigMap update would).
    fn write_policy(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    fn start(&self, policy: &Path, args: &[&str]) -> Webhook {
        Webhook::start(&WebhookOptions::new(policy, &self.certs()).args(args.iter().copied()))
            .unwrap()
    }
}

/// The response of a 200 answer, checked to echo `uid`.
fn response(status: u16, body: &Value, uid: &str) -> Value {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{body}");
    assert_eq!(body["response"]["uid"], uid, "{body}");
    body["response"].clone()
}

/// Applies the response's JSONPatch (if any) to `object`.
fn patched(object: &Value, response: &Value) -> Value {
    let mut object = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut object, &ops).unwrap();
    }
    object
}

fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn webhook_admits_signed_pins_digests_and_denies_the_rest() {
    block_on(async {
        let env = Env::new().await;
        let (signed, digest) = env.push_signed("team/app", "v1").await;
        let (unsigned, _) = env.push("team/unsigned", "v1").await;
        let (untrusted, _) = env.push("other/app", "v1").await;
        let policy = env.write_policy("policy.yaml", &env.policy_text("enforce", "deny"));
        let webhook = env.start(&policy, &[]);
        let client = webhook.client(false).unwrap();

        assert_eq!(webhook.get_side("/healthz").await.unwrap().0, 200);
        assert_eq!(webhook.get_side("/readyz").await.unwrap().0, 200);

        // Signed and trusted: allowed, and the tag is pinned to the verified digest.
        let object = pod("apps", &[&signed]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("s1", "apps", &object))
            .await
            .unwrap();
        let answer = response(status, &body, "s1");
        assert_eq!(answer["allowed"], true, "{answer}");
        let result = patched(&object, &answer);
        assert_eq!(
            result["spec"]["containers"][0]["image"],
            format!("{signed}@{digest}")
        );
        assert!(env.proxy.count() > 0, "the signature was never fetched");

        // The pinned object passes /validate untouched; the unpinned one does not.
        let (status, body) = webhook
            .post(&client, "/validate", &review("s2", "apps", &result))
            .await
            .unwrap();
        let answer = response(status, &body, "s2");
        assert_eq!(answer["allowed"], true, "{answer}");
        assert!(answer.get("patch").is_none(), "{answer}");
        let (status, body) = webhook
            .post(&client, "/validate", &review("s3", "apps", &object))
            .await
            .unwrap();
        assert_eq!(response(status, &body, "s3")["allowed"], false, "{body}");

        // Unsigned: denied, naming the container and the image.
        let object = pod("apps", &[&signed, &unsigned]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("u1", "apps", &object))
            .await
            .unwrap();
        let answer = response(status, &body, "u1");
        assert_eq!(answer["allowed"], false, "{answer}");
        assert_eq!(answer["status"]["code"], 403);
        let text = message(&answer);
        assert!(
            text.contains("team/unsigned") && text.contains("c1"),
            "{text}"
        );

        // Untrusted registry path: denied without a single registry request.
        env.proxy.reset();
        let object = pod("apps", &[&untrusted]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("t1", "apps", &object))
            .await
            .unwrap();
        let answer = response(status, &body, "t1");
        assert_eq!(answer["allowed"], false, "{answer}");
        assert!(message(&answer).contains("other/app"), "{answer}");
        assert_eq!(env.proxy.count(), 0, "{:?}", env.proxy.requests());

        // Excluded namespace: allowed untouched, no registry request.
        let object = pod("kube-system", &[&unsigned]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("x1", "kube-system", &object))
            .await
            .unwrap();
        let answer = response(status, &body, "x1");
        assert_eq!(answer["allowed"], true, "{answer}");
        assert_eq!(patched(&object, &answer), object);
        assert_eq!(env.proxy.count(), 0, "{:?}", env.proxy.requests());

        // The decisions were counted.
        let (status, metrics) = webhook.get_side("/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert!(
            metrics.contains("imgate_admission_decisions_total{result=\"denied\""),
            "{metrics}"
        );
        assert!(
            metrics.contains("imgate_admission_decisions_total{result=\"allowed\""),
            "{metrics}"
        );
    });
}

#[test]
fn webhook_audit_mode_allows_with_warnings() {
    block_on(async {
        let env = Env::new().await;
        let (unsigned, digest) = env.push("team/unsigned", "v1").await;
        let policy = env.write_policy("policy.yaml", &env.policy_text("audit", "deny"));
        let webhook = env.start(&policy, &[]);
        let client = webhook.client(false).unwrap();
        let object = pod("apps", &[&unsigned]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("a1", "apps", &object))
            .await
            .unwrap();
        let answer = response(status, &body, "a1");
        assert_eq!(answer["allowed"], true, "{answer}");
        let warnings = answer["warnings"].as_array().unwrap();
        let all = serde_json::to_string(warnings).unwrap();
        assert!(all.contains("team/unsigned"), "{all}");
        // Audit mode never changes objects.
        assert_eq!(patched(&object, &answer), object);
        assert!(
            all.contains(&digest) || !answer["auditAnnotations"].is_null(),
            "{answer}"
        );
    });
}

#[test]
fn webhook_answers_within_the_deadline_when_the_registry_hangs() {
    block_on(async {
        let env = Env::new().await;
        let (signed_a, _) = env.push_signed("team/app", "a").await;
        let (signed_b, _) = env.push_signed("team/app", "b").await;
        let deny = env.write_policy("deny.yaml", &env.policy_text("enforce", "deny"));
        let allow = env.write_policy("allow.yaml", &env.policy_text("enforce", "allow"));
        let deny_hook = env.start(&deny, &["--deadline", "2s"]);
        let allow_hook = env.start(&allow, &["--deadline", "2s"]);
        env.proxy.set_mode(ProxyMode::Hang);

        for (webhook, image, allowed) in [
            (&deny_hook, &signed_a, false),
            (&allow_hook, &signed_b, true),
        ] {
            let client = webhook.client(false).unwrap();
            let object = pod("apps", &[image]);
            let started = Instant::now();
            let (status, body) = webhook
                .post(&client, "/mutate", &review("h1", "apps", &object))
                .await
                .unwrap();
            let took = started.elapsed();
            let answer = response(status, &body, "h1");
            assert!(took < Duration::from_secs(4), "answered after {took:?}");
            // It waited for the registry: at least one request timeout,
            // which is half the deadline (1 s) here.
            assert!(
                took >= Duration::from_millis(900),
                "answered after only {took:?}: did it wait for the registry?"
            );
            assert_eq!(answer["allowed"], allowed, "{answer}");
            if allowed {
                assert!(
                    !answer["warnings"]
                        .as_array()
                        .map(Vec::is_empty)
                        .unwrap_or(true),
                    "{answer}"
                );
                // Fail-open never pins a digest it could not verify.
                assert_eq!(patched(&object, &answer), object);
            }
        }
        env.proxy.set_mode(ProxyMode::Pass);
    });
}

#[test]
fn webhook_refuses_a_bad_policy_or_certificate_at_start() {
    let dir = tempfile::tempdir().unwrap();
    generate_certs(&dir.path().join("certs"), false).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "mode: enforce\nonRegistryError: sometimes\n").unwrap();
    let cert = dir.path().join("certs/tls.crt").display().to_string();
    let key = dir.path().join("certs/tls.key").display().to_string();
    let policy = bad.display().to_string();
    let listen = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    let mut args = vec![
        "webhook",
        "--policy",
        policy.as_str(),
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    args.extend(listen);
    let out = run_imgate(&args, &[], None).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("onRegistryError"), "{stderr}");

    // Through the environment twins, with a key that is not a key.
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "mode: audit\ntrustedRegistries: [\"registry.example.com/**\"]\nrules:\n  - name: any\n    images: [\"registry.example.com/**\"]\n    verify: none\n",
    )
    .unwrap();
    let good = good.display().to_string();
    let ca = dir.path().join("certs/ca.crt").display().to_string();
    let out = run_imgate(
        ["webhook"],
        &[
            ("IMGATE_POLICY", good.as_str()),
            ("IMGATE_TLS_CERT", cert.as_str()),
            ("IMGATE_TLS_KEY", ca.as_str()),
            ("IMGATE_LISTEN", "127.0.0.1:0"),
            ("IMGATE_METRICS_LISTEN", "127.0.0.1:0"),
        ],
        None,
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ca.crt"), "{stderr}");
}

#[test]
fn webhook_keeps_the_old_policy_when_a_reload_is_broken() {
    block_on(async {
        let env = Env::new().await;
        let (unsigned, _) = env.push("team/unsigned", "v1").await;
        let policy = env.write_policy("policy.yaml", &env.policy_text("enforce", "deny"));
        let webhook = env.start(&policy, &["--reload-interval", "200ms"]);
        let client = webhook.client(false).unwrap();
        let object = pod("apps", &[&unsigned]);
        let ask = |uid: &'static str| {
            let (webhook, client, object) = (&webhook, &client, &object);
            async move {
                let (status, body) = webhook
                    .post(client, "/mutate", &review(uid, "apps", object))
                    .await
                    .unwrap();
                response(status, &body, uid)
            }
        };
        assert_eq!(ask("r1").await["allowed"], false);

        // A broken policy (a rule naming a key file that does not exist).
        let broken = env
            .policy_text("audit", "deny")
            .replace("cosign.pub", "missing.pub");
        env.write_policy("policy.yaml", &broken);
        assert!(
            webhook.wait_for_log("new policy refused", Duration::from_secs(10)),
            "{}",
            webhook.logs()
        );
        let answer = ask("r2").await;
        assert_eq!(
            answer["allowed"], false,
            "the broken audit policy took effect: {answer}"
        );
        assert_eq!(webhook.get_side("/readyz").await.unwrap().0, 200);
        let (_, metrics) = webhook.get_side("/metrics").await.unwrap();
        assert!(
            metrics.contains("imgate_policy_reloads_total{result=\"failure\"} 1"),
            "{metrics}"
        );

        // A valid new policy does take effect.
        env.write_policy("policy.yaml", &env.policy_text("audit", "deny"));
        assert!(
            webhook.wait_for_log("policy reloaded", Duration::from_secs(10)),
            "{}",
            webhook.logs()
        );
        let answer = ask("r3").await;
        assert_eq!(answer["allowed"], true, "{answer}");
        assert!(
            !answer["warnings"].as_array().unwrap().is_empty(),
            "{answer}"
        );
    });
}

/// A rotated key file (the policy itself unchanged) is picked up by the
/// reload loop: an image signed by the new key goes from denied to admitted.
#[test]
fn webhook_reloads_a_rotated_key_file_named_by_the_policy() {
    block_on(async {
        let env = Env::new().await;
        let (reference, digest) = env.push("team/rotated", "v1").await;
        let next = SigningKey::generate();
        let client = RegistryClient::new(env.proxy.client_config()).unwrap();
        let image = ImageRef::parse(&format!("{reference}@{digest}")).unwrap();
        sign(&client, &image, &next, &SignOptions::default())
            .await
            .unwrap();
        let policy = env.write_policy("policy.yaml", &env.policy_text("enforce", "deny"));
        let webhook = env.start(&policy, &["--reload-interval", "200ms"]);
        let http = webhook.client(false).unwrap();
        let object = pod("apps", &[&reference]);
        let (status, body) = webhook
            .post(&http, "/mutate", &review("k1", "apps", &object))
            .await
            .unwrap();
        assert_eq!(response(status, &body, "k1")["allowed"], false, "{body}");

        env.write_policy("cosign.pub", &next.public_key().to_pem());
        assert!(
            webhook.wait_for_log("policy reloaded", Duration::from_secs(10)),
            "{}",
            webhook.logs()
        );
        let (status, body) = webhook
            .post(&http, "/mutate", &review("k2", "apps", &object))
            .await
            .unwrap();
        assert_eq!(response(status, &body, "k2")["allowed"], true, "{body}");
    });
}

/// A client reaching the webhook by its service name, trusting only `cas`,
/// opening a new connection (new TLS handshake) for every request.
fn client_trusting(webhook: &Webhook, cas: &[&Path]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve(SERVICE_NAME, webhook.admission)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    for ca in cas {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
        );
    }
    builder.build().unwrap()
}

/// Swaps `link` to point at `target` atomically, as the kubelet updates a
/// mounted Secret (a new directory, then one rename of a symlink).
fn swap_symlink(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[test]
fn webhook_reloads_a_rotated_certificate_without_losing_a_request() {
    block_on(async {
        let env = Env::new().await;
        let (signed, _) = env.push_signed("team/app", "v1").await;
        let root = env.dir.path().join("mounted");
        let (v1, v2) = (root.join("v1"), root.join("v2"));
        generate_certs(&v1, false).unwrap();
        generate_certs(&v2, false).unwrap();
        let current = root.join("current");
        swap_symlink(&current, &v1);
        let policy = env.write_policy("policy.yaml", &env.policy_text("enforce", "deny"));
        let webhook = Webhook::start(
            &WebhookOptions::new(&policy, &current).args(["--reload-interval", "200ms"]),
        )
        .unwrap();

        // During the rotation the caBundle holds both CAs, as an operator's would.
        let both = client_trusting(&webhook, &[&v1.join("ca.crt"), &v2.join("ca.crt")]);
        let request = review("rot", "apps", &pod("apps", &[&signed]));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let url = webhook.url("/mutate");
        let mut loops = Vec::new();
        for _ in 0..2 {
            let (stop, ok, failed, both, request, url) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                both.clone(),
                request.clone(),
                url.clone(),
            );
            loops.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let result = both.post(&url).json(&request).send().await;
                    let good = match result {
                        Ok(r) if r.status() == 200 => {
                            let body: Value = r.json().await.unwrap_or_default();
                            body["response"]["allowed"] == true
                        }
                        _ => false,
                    };
                    let counter = if good { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        swap_symlink(&current, &v2);
        assert!(
            webhook.wait_for_log("tls certificate reloaded", Duration::from_secs(10)),
            "{}",
            webhook.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        for task in loops {
            task.await.unwrap();
        }
        let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
        assert_eq!(
            failed, 0,
            "{failed} requests failed during the rotation ({ok} succeeded)"
        );
        assert!(ok >= 10, "only {ok} requests went through");

        // New connections see the new certificate: only the new CA works now.
        let new_only = client_trusting(&webhook, &[&v2.join("ca.crt")]);
        let (status, body) = webhook.post(&new_only, "/mutate", &request).await.unwrap();
        assert_eq!(response(status, &body, "rot")["allowed"], true);
        let old_only = client_trusting(&webhook, &[&v1.join("ca.crt")]);
        assert!(webhook.post(&old_only, "/mutate", &request).await.is_err());
        let (_, metrics) = webhook.get_side("/metrics").await.unwrap();
        assert!(
            metrics.contains("imgate_tls_reloads_total{result=\"success\"} 1"),
            "{metrics}"
        );
    });
}

#[test]
fn webhook_drains_in_flight_reviews_on_sigterm() {
    block_on(async {
        let env = Env::new().await;
        let (signed, _) = env.push_signed("team/app", "v1").await;
        let policy = env.write_policy("policy.yaml", &env.policy_text("enforce", "deny"));
        let mut webhook = env.start(&policy, &[]);
        let client = webhook.client(false).unwrap();
        // A slow registry keeps the review in flight when SIGTERM arrives.
        env.proxy
            .set_mode(ProxyMode::Delay(Duration::from_millis(400)));
        let request = review("d1", "apps", &pod("apps", &[&signed]));
        let url = webhook.url("/mutate");
        let in_flight = {
            let (client, request) = (client.clone(), request.clone());
            tokio::spawn(async move { client.post(&url).json(&request).send().await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        webhook.signal("TERM").unwrap();
        let answer = in_flight
            .await
            .unwrap()
            .expect("the in-flight review was cut off");
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(response(200, &body, "d1")["allowed"], true, "{body}");
        let status = webhook.wait_exit(Duration::from_secs(25)).unwrap();
        assert_eq!(status.code(), Some(0), "{}", webhook.logs());
        assert!(
            webhook.logs().contains("SIGTERM received"),
            "{}",
            webhook.logs()
        );
        // Nothing listens any more.
        assert!(webhook
            .post(&webhook.client(true).unwrap(), "/mutate", &request)
            .await
            .is_err());
        env.proxy.set_mode(ProxyMode::Pass);
    });
}

#[test]
fn webhook_survives_malformed_bodies_over_tls() {
    block_on(async {
        let env = Env::new().await;
        let policy = env.write_policy("policy.yaml", &env.policy_text("enforce", "deny"));
        let webhook = env.start(&policy, &[]);
        let client = webhook.client(false).unwrap();
        let send = |body: Vec<u8>| {
            let (client, url) = (client.clone(), webhook.url("/mutate"));
            async move {
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        let (status, text) = send(b"<xml/>".to_vec()).await;
        assert_eq!(status, 400);
        assert!(text.contains("not valid JSON"), "{text}");
        let (status, text) =
            send(br#"{"apiVersion":"v1","kind":"AdmissionReview","request":{}}"#.to_vec()).await;
        assert_eq!(status, 400);
        assert!(text.contains("apiVersion"), "{text}");
        let mut big = b"{\"x\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
        big.extend_from_slice(b"\"}");
        let (status, text) = send(big).await;
        assert_eq!(status, 413, "{text}");
        // Still serving, and still healthy.
        let object = pod("kube-system", &["anything:1"]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("ok", "kube-system", &object))
            .await
            .unwrap();
        assert_eq!(response(status, &body, "ok")["allowed"], true);
        assert_eq!(webhook.get_side("/healthz").await.unwrap().0, 200);
    });
}

#[test]
fn webhook_certs_kustomize_output_renders_with_kubectl() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = run_imgate(
        [
            "webhook",
            "certs",
            "--format",
            "kustomize",
            "--out-dir",
            certs.to_str().unwrap(),
        ],
        &[],
        None,
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let hook = |kind: &str, name: &str| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: imgate\nwebhooks:\n  - name: {name}\n    admissionReviewVersions: [v1]\n    sideEffects: None\n    clientConfig:\n      service: {{name: imgate, namespace: imgate-system, path: /x, port: 443}}\n"
        )
    };
    std::fs::write(
        base.join("webhooks.yaml"),
        format!(
            "{}---\n{}",
            hook("MutatingWebhookConfiguration", "mutate.imgate.dev"),
            hook("ValidatingWebhookConfiguration", "validate.imgate.dev")
        ),
    )
    .unwrap();
    std::fs::write(
        base.join("kustomization.yaml"),
        "resources: [webhooks.yaml]\ncomponents: [../certs]\n",
    )
    .unwrap();
    let rendered = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&base)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let ca = std::fs::read_to_string(certs.join("secret.yaml")).unwrap();
    let bundle = ca
        .lines()
        .find_map(|l| l.trim().strip_prefix("ca.crt: "))
        .unwrap()
        .to_string();
    assert_eq!(
        text.matches(&format!("caBundle: {bundle}")).count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("kind: Secret") && text.contains("type: kubernetes.io/tls"),
        "{text}"
    );
    // The patch kept the rest of each webhook.
    assert_eq!(text.matches("sideEffects: None").count(), 2, "{text}");
}

#[test]
fn webhook_shares_one_verification_among_100_concurrent_reviews() {
    block_on(async {
        let env = Env::new().await;
        let (baseline, _) = env.push_signed("team/app", "baseline").await;
        let (rollout, digest) = env.push_signed("team/app", "rollout").await;
        let policy = env.write_policy("policy.yaml", &env.policy_text("enforce", "deny"));
        let webhook = env.start(&policy, &[]);
        let client = webhook.client(false).unwrap();

        // What one review of a new image costs.
        env.proxy.reset();
        let object = pod("apps", &[&baseline]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("b", "apps", &object))
            .await
            .unwrap();
        assert_eq!(response(status, &body, "b")["allowed"], true);
        let one = env.proxy.count();
        assert!(one > 0);

        // A rollout: 100 pods of another new image at once.
        env.proxy.reset();
        let object = pod("apps", &[&rollout]);
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (client, url, request) = (
                client.clone(),
                webhook.url("/mutate"),
                review(&format!("p{i}"), "apps", &object),
            );
            tasks.push(tokio::spawn(async move {
                let answer: Value = client
                    .post(url)
                    .json(&request)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                answer
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            let answer = task.await.unwrap();
            let answer = response(200, &answer, &format!("p{i}"));
            assert_eq!(answer["allowed"], true, "{answer}");
            let result = patched(&object, &answer);
            assert_eq!(
                result["spec"]["containers"][0]["image"],
                format!("{rollout}@{digest}")
            );
        }
        // After the first review imgate knows this registry has no referrers
        // API and no longer asks for it: one request fewer, never more.
        assert!(
            (one - 1..=one).contains(&env.proxy.count()),
            "100 concurrent reviews cost {} registry requests, one review costs {one}: {:?}",
            env.proxy.count(),
            env.proxy.requests()
        );
    });
}

#[test]
fn webhook_denies_a_missing_tag_even_under_on_registry_error_allow() {
    block_on(async {
        let env = Env::new().await;
        let (signed, _) = env.push_signed("team/app", "v1").await;
        let policy = env.write_policy("allow.yaml", &env.policy_text("enforce", "allow"));
        let webhook = env.start(&policy, &["--deadline", "2s"]);
        let client = webhook.client(false).unwrap();
        // A 404 is the registry's answer about the image, not an outage.
        let missing = signed.replace(":v1", ":no-such-tag");
        let object = pod("apps", &[&missing]);
        let (status, body) = webhook
            .post(&client, "/mutate", &review("m1", "apps", &object))
            .await
            .unwrap();
        let answer = response(status, &body, "m1");
        assert_eq!(answer["allowed"], false, "{answer}");
        let text = message(&answer);
        assert!(text.contains("no-such-tag"), "{text}");
        assert!(text.contains("not found"), "{text}");
        assert!(
            text.contains("onRegistryError: allow does not apply"),
            "{text}"
        );
        // An outage still fails open, as the policy asks.
        env.proxy.set_mode(ProxyMode::Hang);
        let (status, body) = webhook
            .post(
                &client,
                "/mutate",
                &review("m2", "apps", &pod("apps", &[&signed])),
            )
            .await
            .unwrap();
        let answer = response(status, &body, "m2");
        assert_eq!(answer["allowed"], true, "{answer}");
        env.proxy.set_mode(ProxyMode::Pass);
    });
}
