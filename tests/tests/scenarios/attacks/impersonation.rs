//! A tenant asking in another namespace's name: a review written by hand
//! (`namespace: victim`, `imagePullSecrets: [regcred]`) posted straight to
//! the admission port, to have imgate spend `victim`'s pull secrets on a
//! private image and give away its digest. The real binary runs "in a
//! cluster" against a fake Kubernetes API server (which records every
//! read) and a registry that demands credentials. Only a client holding a
//! certificate from `--client-ca`, as the API server does, may make
//! imgate read a pull secret; without client authentication,
//! `--kube-pull-secrets` needs an explicit, documented opt-in.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use imgate_tests::kubeapi::KubeApi;
use imgate_tests::pki::TestCa;
use imgate_tests::webhook::{generate_certs, pod, review, ClientIdentity, Webhook, WebhookOptions};
use imgate_tests::{block_on, ImageBuilder, PushWith, Registry, Variant};
use serde_json::Value;

struct Env {
    registry: Registry,
    api: KubeApi,
    dir: tempfile::TempDir,
    /// The private image, `host/team/private:v1`, and its digest.
    image: String,
    digest: String,
}

impl Env {
    async fn new() -> Env {
        let registry = Registry::start(Variant::BasicAuth).await.unwrap();
        let pushed = ImageBuilder::new("private")
            .image()
            .push(&registry, "team/private", "v1", PushWith::Http)
            .await
            .unwrap();
        let (user, password) = registry.credentials().unwrap();
        let api = KubeApi::start().await.unwrap();
        api.put(
            "/api/v1/namespaces/victim/serviceaccounts/default",
            serde_json::json!({"metadata": {"name": "default"}}),
        );
        api.put_pull_secret("victim", "regcred", registry.host(), user, password);
        let dir = tempfile::tempdir().unwrap();
        generate_certs(&dir.path().join("certs"), false).unwrap();
        let host = registry.host();
        std::fs::write(
            dir.path().join("policy.yaml"),
            format!(
                "mode: enforce\n\
                 trustedRegistries: [\"{host}/**\"]\n\
                 registries:\n  \"{host}\": {{caFile: {}}}\n\
                 rules:\n  - name: team\n    images: [\"{host}/team/**\"]\n    verify: none\n",
                registry.ca_file().unwrap().display()
            ),
        )
        .unwrap();
        Env {
            image: pushed.reference.clone(),
            digest: pushed.digest,
            registry,
            api,
            dir,
        }
    }

    fn options(&self, args: &[&str]) -> WebhookOptions {
        let mut options = WebhookOptions::new(
            &self.dir.path().join("policy.yaml"),
            &self.dir.path().join("certs"),
        )
        .args(["--reload-interval", "200ms"])
        .args(args.iter().copied());
        options.env = self.api.env();
        options
    }

    /// The review an attacker writes: a Pod in `victim` naming `victim`'s
    /// pull secret and the private image.
    fn forged_review(&self, uid: &str) -> Value {
        let mut object = pod("victim", &[self.image.as_str()]);
        object["spec"]["imagePullSecrets"] = serde_json::json!([{"name": "regcred"}]);
        review(uid, "victim", &object)
    }

    fn secret_reads(&self) -> usize {
        let secret = "/api/v1/namespaces/victim/secrets/regcred";
        self.api.hits().iter().filter(|p| *p == secret).count()
    }
}

/// A client CA in `dir/name.crt` and a certificate it issued for the API server.
fn client_ca(dir: &Path, name: &str) -> (PathBuf, ClientIdentity) {
    let ca = TestCa::new(name).unwrap();
    let file = dir.join(format!("{name}.crt"));
    std::fs::write(&file, ca.cert_pem()).unwrap();
    (file, identity(&ca))
}

fn identity(ca: &TestCa) -> ClientIdentity {
    let cert = ca.client_cert("kube-apiserver").unwrap();
    ClientIdentity {
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
    }
}

/// Posts the forged review; the answer's `response`, or the error.
async fn post(
    webhook: &Webhook,
    client: &reqwest::Client,
    review: &Value,
) -> Result<Value, String> {
    match webhook.post(client, "/mutate", review).await {
        Ok((200, body)) => Ok(body["response"].clone()),
        Ok((status, body)) => Err(format!("{status}: {body}")),
        Err(err) => Err(format!("{err:#}")),
    }
}

/// The image the response's JSONPatch pins the container to.
fn pinned_image(response: &Value) -> String {
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap_or_default())
        .unwrap();
    let ops: Value = serde_json::from_slice(&patch).unwrap();
    ops[0]["value"].as_str().unwrap_or_default().to_string()
}

/// Without client authentication the webhook refuses to start with
/// `--kube-pull-secrets`, naming both ways out; with
/// `--allow-unauthenticated-pull-secrets` it starts, says what that
/// means, and does what the operator accepted.
#[test]
fn pull_secrets_without_client_authentication_need_an_explicit_opt_in() {
    block_on(async {
        let env = Env::new().await;
        let err = Webhook::start(&env.options(&["--kube-pull-secrets"])).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("exit status: 2"), "{err}");
        assert!(
            err.contains("--client-ca") && err.contains("--allow-unauthenticated-pull-secrets"),
            "{err}"
        );
        assert_eq!(env.api.hits(), Vec::<String>::new());

        let webhook = Webhook::start(&env.options(&[
            "--kube-pull-secrets",
            "--allow-unauthenticated-pull-secrets",
        ]))
        .unwrap();
        assert!(
            webhook.logs().contains("another namespace's pull secrets"),
            "{}",
            webhook.logs()
        );
        let answer = post(
            &webhook,
            &webhook.client(true).unwrap(),
            &env.forged_review("opted-in"),
        )
        .await
        .unwrap();
        assert_eq!(answer["allowed"], true, "{answer}");
        assert!(pinned_image(&answer).ends_with(&env.digest), "{answer}");
        assert!(env.secret_reads() >= 1, "{:?}", env.api.hits());
    });
}

/// With `--client-ca`, a client without a certificate, or with one from
/// another CA, never gets a review in: no pull secret is read, no registry
/// is asked, nothing about the image comes back. The API server's
/// certificate gets the same review answered with the victim's
/// credentials. A rotated client CA takes over without a restart.
#[test]
fn only_the_api_servers_certificate_may_spend_a_namespaces_pull_secrets() {
    block_on(async {
        let env = Env::new().await;
        let (ca_file, api_server) = client_ca(env.dir.path(), "apiserver-client-ca");
        let ca_arg = ca_file.display().to_string();
        let webhook =
            Webhook::start(&env.options(&["--kube-pull-secrets", "--client-ca", ca_arg.as_str()]))
                .unwrap();
        let forged = env.forged_review("forged");

        // No certificate, then a certificate from a CA of the attacker's.
        let anonymous = post(&webhook, &webhook.client(true).unwrap(), &forged).await;
        assert!(anonymous.is_err(), "{anonymous:?}");
        let (_, stranger) = client_ca(env.dir.path(), "attacker-ca");
        let foreign = post(&webhook, &webhook.client_as(&stranger).unwrap(), &forged).await;
        assert!(foreign.is_err(), "{foreign:?}");
        assert_eq!(
            env.api.hits(),
            Vec::<String>::new(),
            "no API reads for them"
        );
        let refused = webhook
            .metric("imgate_admission_connections_refused_total{reason=\"client_certificate\"}")
            .await
            .unwrap();
        assert_eq!(refused, 2.0);
        assert!(
            !webhook.logs().contains("admission decision"),
            "{}",
            webhook.logs()
        );

        // The API server: the same review, answered with victim's secret.
        let answer = post(&webhook, &webhook.client_as(&api_server).unwrap(), &forged)
            .await
            .unwrap();
        assert_eq!(answer["allowed"], true, "{answer}");
        assert!(pinned_image(&answer).ends_with(&env.digest), "{answer}");
        assert!(env.secret_reads() >= 1, "{:?}", env.api.hits());

        // Rotation: the file now names a new CA; after the reload the old
        // certificate is refused and the new one accepted.
        let next = TestCa::new("apiserver-client-ca-2").unwrap();
        std::fs::write(&ca_file, next.cert_pem()).unwrap();
        assert!(
            webhook.wait_for_log("tls certificate reloaded", Duration::from_secs(10)),
            "{}",
            webhook.logs()
        );
        let old = post(
            &webhook,
            &webhook.client_as(&api_server).unwrap(),
            &env.forged_review("old"),
        )
        .await;
        assert!(old.is_err(), "{old:?}");
        let new = post(
            &webhook,
            &webhook.client_as(&identity(&next)).unwrap(),
            &env.forged_review("new"),
        )
        .await
        .unwrap();
        assert_eq!(new["uid"], "new", "{new}");
        drop(env.registry);
    });
}

/// The plain-HTTP side port serves health and metrics only: a review
/// posted there is not answered, and reads nothing.
#[test]
fn the_metrics_port_serves_no_reviews() {
    block_on(async {
        let env = Env::new().await;
        let webhook = Webhook::start(&env.options(&[
            "--kube-pull-secrets",
            "--allow-unauthenticated-pull-secrets",
        ]))
        .unwrap();
        let client = reqwest::Client::new();
        for path in ["/mutate", "/validate", "/"] {
            let response = client
                .post(webhook.metrics_url(path))
                .json(&env.forged_review("side"))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert!(matches!(status, 404 | 405), "{path}: {status} {body}");
            assert!(!body.contains("\"uid\""), "{path}: {body}");
        }
        assert_eq!(env.api.hits(), Vec::<String>::new());
        assert!(
            !webhook.logs().contains("admission decision"),
            "{}",
            webhook.logs()
        );
        let (status, _) = webhook.get_side("/healthz").await.unwrap();
        assert_eq!(status, 200);
    });
}
