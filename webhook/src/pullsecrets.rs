//! Registry credentials from Kubernetes pull secrets: the pod's
//! `spec.imagePullSecrets` and its service account's, read through the
//! Kubernetes API (the `kube` module) with the webhook's own service account
//! (the same secrets the kubelet would use to pull), parsed from
//! `kubernetes.io/dockerconfigjson` or the legacy `kubernetes.io/dockercfg`
//! by core's docker config parser, so `auth`, `username`/`password`,
//! identity tokens and Docker Hub's host aliases mean what they mean in a
//! `config.json`.
//!
//! The engine asks for one registry's credentials only when it is about to
//! call that registry. A missing or unreadable secret is not fatal (the
//! kubelet ignores them too); it only means fewer credentials, and the
//! registry will say so. Secret contents are never logged.

use std::collections::BTreeMap;

use base64::Engine as _;
use imgate_core::registry::{parse_auths, Credentials};
use imgate_core::workload::{PULL_SECRETS, SERVICE_ACCOUNT};
use serde_json::Value;

use crate::admission::PullSecrets;
use crate::kube::{api_path, checked, KubeClient, KubeError};

/// Pull secrets read for one pod, at most: its own first, then its service
/// account's. Each is a Kubernetes API read inside the review's deadline,
/// and both lists are written by the tenant; the kubelet sets no limit, but
/// pods name one or two.
pub const MAX_PULL_SECRETS: usize = 16;

/// Errors reading pull secrets.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    /// Reading from the Kubernetes API failed, or a name was invalid.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The secret is not a docker config or is malformed.
    #[error("{what} is not a usable pull secret: {detail}")]
    Parse {
        /// The secret.
        what: String,
        /// What is wrong (never the contents).
        detail: String,
    },
}

/// Parses a Secret object as returned by the API (`data` values base64).
pub fn parse_secret(
    what: &str,
    secret: &Value,
) -> Result<BTreeMap<String, Credentials>, PullSecretError> {
    let err = |detail: String| PullSecretError::Parse {
        what: what.to_string(),
        detail,
    };
    let kind = secret.get("type").and_then(Value::as_str).unwrap_or("");
    let (field, legacy) = match kind {
        "kubernetes.io/dockerconfigjson" => (".dockerconfigjson", false),
        "kubernetes.io/dockercfg" => (".dockercfg", true),
        other => {
            return Err(err(format!(
                "type is {other:?}, not kubernetes.io/dockerconfigjson"
            )))
        }
    };
    let data = secret
        .get("data")
        .and_then(|d| d.get(field))
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("no data.{field}")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| err(format!("data.{field} is not base64")))?;
    parse_auths(&bytes, legacy).map_err(|detail| err(format!("data.{field}: {detail}")))
}

/// The pull secret names and service account of a pod spec.
pub fn pull_secret_refs(pod_spec: &Value) -> (Vec<String>, String) {
    let names = pod_spec
        .get(PULL_SECRETS)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let account = SERVICE_ACCOUNT
        .iter()
        .find_map(|field| pod_spec.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    (names, account)
}

/// The pull secrets a pod would use: its own `imagePullSecrets` and those
/// of its service account, in `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPullSecrets {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's own `imagePullSecrets` names, in order.
    pub secrets: Vec<String>,
    /// Its service account (`default` when unset; `None` when its name is
    /// invalid and so not read).
    pub service_account: Option<String>,
}

impl PodPullSecrets {
    /// The references of the pod spec `spec` in `namespace` (found by the
    /// kind's row of [`imgate_core::workload::WORKLOADS`]), and warnings
    /// about references that are skipped. A name that is not a valid object
    /// name (`../../victim/secrets/regcred`) is skipped and never read; `None`
    /// when the namespace itself is missing or invalid.
    pub fn from_pod_spec(namespace: &str, spec: &Value) -> (Option<PodPullSecrets>, Vec<String>) {
        let skip = |err: KubeError| format!("imgate: not reading pull secrets: {err}");
        if namespace.is_empty() {
            return (None, Vec::new());
        }
        if let Err(err) = checked("namespace", namespace) {
            return (None, vec![skip(err)]);
        }
        let (mut names, account) = pull_secret_refs(spec);
        let mut warnings = Vec::new();
        if names.len() > MAX_PULL_SECRETS {
            warnings.push(format!(
                "imgate: reading only the first {MAX_PULL_SECRETS} of the pod's {} pull secrets",
                names.len()
            ));
            names.truncate(MAX_PULL_SECRETS);
        }
        let mut secrets = Vec::new();
        for name in names {
            match checked("secret", &name) {
                Ok(_) => secrets.push(name),
                Err(err) => warnings.push(skip(err)),
            }
        }
        let service_account = match checked("serviceaccount", &account) {
            Ok(_) => Some(account),
            Err(err) => {
                warnings.push(skip(err));
                None
            }
        };
        let pod = PodPullSecrets {
            namespace: namespace.to_string(),
            secrets,
            service_account,
        };
        (Some(pod), warnings)
    }
}

impl KubeClient {
    /// The names of the pull secrets of service account `namespace/name`.
    pub async fn service_account_pull_secrets(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<String>, PullSecretError> {
        let what = format!("serviceaccount {namespace}/{name}");
        let path = api_path(namespace, Some(("serviceaccounts", name)))?;
        let sa = self.get(&what, &path).await?;
        Ok(pull_secret_refs(&serde_json::json!({
            PULL_SECRETS: sa.get(PULL_SECRETS).cloned().unwrap_or(Value::Null)
        }))
        .0)
    }

    /// The credentials in secret `namespace/name`.
    pub async fn secret_credentials(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Credentials>, PullSecretError> {
        let what = format!("secret {namespace}/{name}");
        let path = api_path(namespace, Some(("secrets", name)))?;
        let secret = self.get(&what, &path).await?;
        parse_secret(&what, &secret)
    }

    /// Every credential the kubelet would use for `pod`: its own pull
    /// secrets first (they win over the service account's for the same
    /// registry, as in the kubelet). Failures are logged (names only) and
    /// skipped.
    pub async fn credentials_for(&self, pod: &PodPullSecrets) -> BTreeMap<String, Credentials> {
        let namespace = pod.namespace.as_str();
        let listed = match &pod.service_account {
            Some(account) => self.service_account_pull_secrets(namespace, account).await,
            None => Ok(Vec::new()),
        };
        let account = listed.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot read the service account's pull secrets");
            Vec::new()
        });
        let names = secret_names(&pod.secrets, account);
        let mut out = BTreeMap::new();
        for name in names {
            match self.secret_credentials(namespace, &name).await {
                Ok(creds) => {
                    for (host, c) in creds {
                        out.entry(host).or_insert(c);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "skipping a pull secret"),
            }
        }
        out
    }
}

/// The pod's own secret names, then its service account's not already
/// named, at most [`MAX_PULL_SECRETS`] in all.
fn secret_names(own: &[String], account: Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = own.iter().take(MAX_PULL_SECRETS).cloned().collect();
    for name in account {
        if names.len() >= MAX_PULL_SECRETS {
            break;
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

impl PullSecrets for KubeClient {
    fn credentials<'a>(
        &'a self,
        pod: &'a PodPullSecrets,
    ) -> futures::future::BoxFuture<'a, BTreeMap<String, Credentials>> {
        Box::pin(self.credentials_for(pod))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn pull_secrets_are_bounded_per_pod() {
        let many: Vec<Value> = (0..100)
            .map(|i| serde_json::json!({"name": format!("s{i}")}))
            .collect();
        let spec = serde_json::json!({"imagePullSecrets": many});
        let (pod, warnings) = PodPullSecrets::from_pod_spec("apps", &spec);
        let pod = pod.unwrap();
        assert_eq!(pod.secrets.len(), MAX_PULL_SECRETS);
        assert_eq!(pod.secrets[0], "s0");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("first 16 of the pod's 100")),
            "{warnings:?}"
        );

        // The service account's fill what is left, without repeats.
        let own = vec!["a".to_string(), "b".to_string()];
        let account: Vec<String> = ["b", "c"]
            .iter()
            .map(|s| s.to_string())
            .chain((0..100).map(|i| format!("sa{i}")))
            .collect();
        let names = secret_names(&own, account);
        assert_eq!(names.len(), MAX_PULL_SECRETS);
        assert_eq!(&names[..4], ["a", "b", "c", "sa0"]);
    }

    #[test]
    fn parses_dockerconfigjson_and_dockercfg() {
        let config = format!(
            r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "ghcr.io":{{"username":"u","password":"p"}},
                "registry.hub.docker.com":{{"identitytoken":"hub-tok"}},
                "reg.example:5000":{{"identitytoken":"tok"}},
                "quay.io":{{"auth":"{}","username":"other","password":"x"}},
                "empty.example":{{}}
            }}}}"#,
            b64("alice:s3:cret"),
            b64("carol:pw:1")
        );
        let secret = serde_json::json!({
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(&config)}
        });
        let creds = parse_secret("secret ns/x", &secret).unwrap();
        assert_eq!(creds.len(), 4);
        // `auth` wins over username/password, and only the first ':'
        // splits: passwords may contain colons.
        assert_eq!(creds["quay.io"].username, "carol");
        assert_eq!(creds["quay.io"].password, "pw:1");
        // Docker Hub's aliases are one registry, as in a config.json; the
        // later key (in sorted order) wins.
        assert_eq!(creds["docker.io"].username, "<token>");
        assert_eq!(creds["docker.io"].password, "hub-tok");
        assert_eq!(creds["ghcr.io"].password, "p");
        assert_eq!(creds["reg.example:5000"].username, "<token>");

        let legacy = serde_json::json!({
            "type": "kubernetes.io/dockercfg",
            "data": {".dockercfg": b64(&format!(r#"{{"quay.io":{{"auth":"{}","email":"x@y"}}}}"#, b64("bob:pw")))}
        });
        let creds = parse_secret("secret ns/y", &legacy).unwrap();
        assert_eq!(creds["quay.io"].username, "bob");
    }

    #[rstest]
    #[case(serde_json::json!({"type": "Opaque", "data": {}}), "not kubernetes.io/dockerconfigjson")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {}}), "no data..dockerconfigjson")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "!!"}}), "not base64")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64("{secret-stuff")}}), "not valid JSON")]
    #[case(serde_json::json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(r#"{"auths":{"h":{"auth":"c2VjcmV0LXN0dWZm"}}}"#)}}), "not base64 of user:password")]
    fn bad_secrets_are_named_without_contents(#[case] secret: Value, #[case] expected: &str) {
        let err = parse_secret("secret ns/bad", &secret)
            .unwrap_err()
            .to_string();
        assert!(err.contains("secret ns/bad"), "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("secret-stuff"), "{err}");
    }

    #[test]
    fn finds_the_references_in_every_kinds_pod_spec() {
        let spec_of = |group: &str, kind: &str, object: &Value| -> Value {
            let workload = imgate_core::workload::workload(group, kind).unwrap();
            object.pointer(&workload.pointer()).unwrap().clone()
        };
        let pod =
            serde_json::json!({"spec": {"imagePullSecrets": [{"name": "a"}], "containers": []}});
        let deploy =
            serde_json::json!({"spec": {"template": {"spec": {"serviceAccountName": "builder"}}}});
        let cron = serde_json::json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"imagePullSecrets": [{"name": "b"}, {"name": ""}]}}}}}});
        assert_eq!(
            pull_secret_refs(&spec_of("", "Pod", &pod)),
            (vec!["a".into()], "default".into())
        );
        assert_eq!(
            pull_secret_refs(&spec_of("apps", "Deployment", &deploy)),
            (vec![], "builder".into())
        );
        assert_eq!(
            pull_secret_refs(&spec_of("batch", "CronJob", &cron)),
            (vec!["b".into()], "default".into())
        );
    }

    use crate::kube::fake_api::fake_api;
    use std::collections::HashMap;
    use std::time::Duration;

    fn dockerconfig(host: &str, user: &str) -> Value {
        serde_json::json!({
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(&format!(r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#, b64(&format!("{user}:pw"))))}
        })
    }

    #[tokio::test]
    async fn reads_pod_and_service_account_secrets_from_the_api() {
        let mut objects = HashMap::new();
        objects.insert(
            "/api/v1/namespaces/apps/serviceaccounts/builder".to_string(),
            serde_json::json!({"imagePullSecrets": [{"name": "sa-secret"}, {"name": "missing"}]}),
        );
        objects.insert(
            "/api/v1/namespaces/apps/secrets/pod-secret".to_string(),
            dockerconfig("reg.example", "pod-user"),
        );
        objects.insert(
            "/api/v1/namespaces/apps/secrets/sa-secret".to_string(),
            serde_json::json!({
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": b64(&format!(
                    r#"{{"auths":{{"reg.example":{{"auth":"{}"}},"other.example":{{"auth":"{}"}}}}}}"#,
                    b64("sa-user:pw"), b64("sa-other:pw")))}
            }),
        );
        let (base, hits) = fake_api(objects).await;
        let client = KubeClient::new(&base, "t0ken".into(), None, Duration::from_secs(2)).unwrap();
        let spec = serde_json::json!({"serviceAccountName": "builder", "imagePullSecrets": [{"name": "pod-secret"}]});
        let pod = PodPullSecrets::from_pod_spec("apps", &spec).0.unwrap();
        let creds = client.credentials_for(&pod).await;
        // The pod's own secret wins for the same registry; the missing one is skipped.
        assert_eq!(creds["reg.example"].username, "pod-user");
        assert_eq!(creds["other.example"].username, "sa-other");
        assert_eq!(creds.len(), 2);
        let first = hits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(first, 4);
        // A second pod of the rollout is served from the cache (except the
        // 404, which is retried).
        let again = client.credentials_for(&pod).await;
        assert_eq!(again, creds);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), first + 1);

        // A wrong token: nothing, no panic.
        let bad = KubeClient::new(&base, "nope".into(), None, Duration::from_secs(2)).unwrap();
        let err = bad
            .secret_credentials("apps", "pod-secret")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                PullSecretError::Kube(KubeError::Status { status: 401, .. })
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn names_cannot_climb_out_of_the_pods_namespace() {
        let mut objects = HashMap::new();
        objects.insert(
            "/api/v1/namespaces/victim/secrets/regcred".to_string(),
            dockerconfig("reg.example", "victim-user"),
        );
        objects.insert(
            "/api/v1/namespaces/victim/serviceaccounts/builder".to_string(),
            serde_json::json!({"imagePullSecrets": [{"name": "regcred"}]}),
        );
        objects.insert(
            "/api/v1/namespaces/attacker/serviceaccounts/default".to_string(),
            serde_json::json!({"imagePullSecrets": [{"name": "../../victim/secrets/regcred"}]}),
        );
        let (base, hits) = fake_api(objects).await;
        let client = KubeClient::new(&base, "t0ken".into(), None, Duration::from_secs(2)).unwrap();
        for spec in [
            serde_json::json!({"imagePullSecrets": [{"name": "../../victim/secrets/regcred"}]}),
            serde_json::json!({"imagePullSecrets": [{"name": "%2e%2e/%2e%2e/victim/secrets/regcred"}]}),
            serde_json::json!({"serviceAccountName": "../../victim/serviceaccounts/builder"}),
            // Named by the service account rather than the pod.
            serde_json::json!({}),
        ] {
            let (pod, warnings) = PodPullSecrets::from_pod_spec("attacker", &spec);
            let pod = pod.unwrap();
            let creds = client.credentials_for(&pod).await;
            assert!(creds.is_empty(), "{spec}: read {creds:?}");
            if spec != serde_json::json!({}) {
                assert_eq!(warnings.len(), 1, "{spec}: {warnings:?}");
                assert!(warnings[0].contains("victim"), "{warnings:?}");
                assert!(warnings[0].contains("DNS-1123"), "{warnings:?}");
            }
        }
        // A namespace that is not a DNS-1123 label is not used at all.
        let (pod, warnings) = PodPullSecrets::from_pod_spec(
            "../victim",
            &serde_json::json!({"imagePullSecrets": [{"name": "regcred"}]}),
        );
        assert!(pod.is_none());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        // Only the attacker's own service account was ever read.
        assert!(hits.load(std::sync::atomic::Ordering::SeqCst) <= 4);
        let err = client
            .secret_credentials("victim", "../regcred")
            .await
            .unwrap_err();
        assert!(
            matches!(err, PullSecretError::Kube(KubeError::InvalidName { .. })),
            "{err}"
        );
    }
}
