//! The safety properties of a rendered install, checked object by object.

use std::collections::BTreeSet;
use std::process::Command;

use base64::Engine as _;
use serde_yaml::Value;

use super::{
    at, imgate_bin, ok, run, s, seq, strings, Rendered, ALWAYS_EXCLUDED, CONTAINER_ARGS, NAMESPACE,
};

/// A Kubernetes label selector (matchLabels and matchExpressions) applied to
/// `labels`, as the API server does. An absent selector selects everything.
pub(super) fn selects(selector: &Value, labels: &[(&str, &str)]) -> bool {
    let get = |key: &str| labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter().all(|(k, v)| {
                get(k.as_str().unwrap_or_default()) == Some(v.as_str().unwrap_or_default())
            })
        })
        .unwrap_or(true);
    let match_expressions = seq(selector, "matchExpressions").iter().all(|e| {
        let value = get(s(e, "key"));
        let values = strings(e, "values");
        let listed = value.is_some_and(|v| values.iter().any(|x| x == v));
        match s(e, "operator") {
            "In" => listed,
            "NotIn" => !listed,
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown selector operator {other:?}"),
        }
    });
    match_labels && match_expressions
}

fn pod_labels(deployment: &Value) -> Vec<(&str, &str)> {
    at(deployment, "spec.template.metadata.labels")
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?, v.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// How the overlay provisions the webhook's TLS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Tls {
    /// `components/self-managed-certs`: Secret from files, caBundle copied.
    SelfManaged,
    /// `components/cert-manager`: Certificate + CA injection.
    CertManager,
}

/// Every property the operator docs promise, checked on one render.
pub(super) fn check_install(
    r: &Rendered,
    failure_policy: &str,
    mode: &str,
    tls: Tls,
    pull_secrets: bool,
) {
    check_namespaces(r);
    for (kind, name, path) in [
        (
            "MutatingWebhookConfiguration",
            "mutate.imgate.dev",
            "/mutate",
        ),
        (
            "ValidatingWebhookConfiguration",
            "validate.imgate.dev",
            "/validate",
        ),
    ] {
        check_webhook(r, kind, name, path, failure_policy);
    }
    check_pods(r, pull_secrets);
    check_network_policy(r);
    match tls {
        Tls::SelfManaged => {
            for kind in [
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
            ] {
                let bundle = s(r.webhook(kind), "clientConfig.caBundle");
                assert!(!bundle.is_empty(), "{}: {kind} has a caBundle", r.name);
            }
        }
        Tls::CertManager => check_cert_manager(r),
    }
    check_policy(r, mode);
}

fn check_namespaces(r: &Rendered) {
    const CLUSTER_SCOPED: [&str; 7] = [
        "Namespace",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    for o in &r.objects {
        let kind = s(o, "kind");
        let ns = s(o, "metadata.namespace");
        if CLUSTER_SCOPED.contains(&kind) {
            assert_eq!(ns, "", "{}: {kind} is cluster-scoped", r.name);
        } else {
            assert_eq!(
                ns,
                NAMESPACE,
                "{}: {kind} {}",
                r.name,
                s(o, "metadata.name")
            );
        }
    }
    let ns = r.one("Namespace", NAMESPACE);
    let enforce = at(ns, "metadata.labels")
        .get("pod-security.kubernetes.io/enforce")
        .and_then(Value::as_str);
    assert_eq!(enforce, Some("restricted"), "{}: Pod Security", r.name);
}

fn check_webhook(r: &Rendered, kind: &str, name: &str, path: &str, failure_policy: &str) {
    let hook = r.webhook(kind);
    let what = format!("{}: {kind} {name}", r.name);
    assert_eq!(s(hook, "name"), name, "{what}");
    assert_eq!(strings(hook, "admissionReviewVersions"), ["v1"], "{what}");
    assert_eq!(s(hook, "sideEffects"), "None", "{what}");
    assert_eq!(s(hook, "failurePolicy"), failure_policy, "{what}");
    let timeout = at(hook, "timeoutSeconds").as_u64();
    assert!(
        timeout.is_some_and(|t| (1..=10).contains(&t)),
        "{what}: timeoutSeconds {timeout:?} must be set and at most 10"
    );
    if kind == "MutatingWebhookConfiguration" {
        assert_eq!(s(hook, "reinvocationPolicy"), "IfNeeded", "{what}");
    }

    // Namespaces: never the critical ones, never a labelled opt-out, but an
    // ordinary namespace, or imgate would guard nothing.
    let ns_selector = at(hook, "namespaceSelector");
    for critical in ALWAYS_EXCLUDED {
        assert!(
            !selects(ns_selector, &[("kubernetes.io/metadata.name", critical)]),
            "{what}: namespace {critical} must never be sent to imgate"
        );
    }
    assert!(
        !selects(
            ns_selector,
            &[
                ("kubernetes.io/metadata.name", "team-a"),
                ("imgate.dev/ignore", "true")
            ]
        ),
        "{what}: a namespace labelled imgate.dev/ignore=true must be skipped"
    );
    assert!(
        selects(ns_selector, &[("kubernetes.io/metadata.name", "default")]),
        "{what}: ordinary namespaces must be selected"
    );
    // Objects: a workload author can label any object and its pod template,
    // so a per-object opt-out is only acceptable together with the policy
    // that restricts who may set the label (components/object-opt-out).
    let obj_selector = at(hook, "objectSelector");
    let restricted = r
        .all("ValidatingAdmissionPolicy")
        .iter()
        .any(|p| s(p, "metadata.name") == "imgate-restrict-opt-out");
    assert!(
        restricted || selects(obj_selector, &[("app", "x"), ("imgate.dev/ignore", "true")]),
        "{what}: objects labelled imgate.dev/ignore=true are skipped, but nothing \
         restricts who may set that label: any workload author could opt out"
    );
    assert!(
        selects(obj_selector, &[("app", "x")]),
        "{what}: objectSelector"
    );

    // Every kind imgate inspects, on create and update.
    let wanted = [
        ("", "pods"),
        ("", "pods/ephemeralcontainers"),
        ("", "replicationcontrollers"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    ];
    for (group, resource) in wanted {
        for op in ["CREATE", "UPDATE"] {
            let covered = seq(hook, "rules").iter().any(|rule| {
                let has = |field: &str, want: &str| {
                    strings(rule, field).iter().any(|x| x == want || x == "*")
                };
                has("apiGroups", group) && has("resources", resource) && has("operations", op)
            });
            assert!(covered, "{what}: no rule for {op} {group}/{resource}");
        }
    }

    // The API server reaches the pods: Service port → targetPort → container.
    assert!(
        at(hook, "clientConfig.url").is_null(),
        "{what}: use the Service"
    );
    assert_eq!(s(hook, "clientConfig.service.name"), "imgate", "{what}");
    assert_eq!(
        s(hook, "clientConfig.service.namespace"),
        NAMESPACE,
        "{what}"
    );
    assert_eq!(s(hook, "clientConfig.service.path"), path, "{what}");
    let port = at(hook, "clientConfig.service.port")
        .as_u64()
        .unwrap_or(443);
    let service = r.one("Service", "imgate");
    let service_port = seq(service, "spec.ports")
        .iter()
        .find(|p| at(p, "port").as_u64() == Some(port))
        .unwrap_or_else(|| panic!("{what}: Service imgate has no port {port}"));
    let deployment = r.deployment();
    let labels = pod_labels(deployment);
    let service_selects_pods = at(service, "spec.selector").as_mapping().is_some_and(|m| {
        !m.is_empty()
            && m.iter().all(|(k, v)| {
                labels
                    .iter()
                    .any(|(lk, lv)| Some(*lk) == k.as_str() && Some(*lv) == v.as_str())
            })
    });
    assert!(
        service_selects_pods,
        "{what}: Service imgate must select the Deployment's pods"
    );
    let target = container_port(deployment, at(service_port, "targetPort"));
    assert_eq!(
        target,
        Some(8443),
        "{what}: Service targetPort must reach the container's 8443"
    );

    // The caBundle (self-managed) is the CA the Secret carries.
    let bundle = s(hook, "clientConfig.caBundle");
    if !bundle.is_empty() {
        let secret = r.one("Secret", "imgate-tls");
        let ca_b64 = secret
            .get("data")
            .and_then(|d| d.get("ca.crt"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert_eq!(
            decode(bundle),
            decode(ca_b64),
            "{what}: caBundle is the Secret's ca.crt"
        );
    }
}

pub(super) fn decode(b64: &str) -> Vec<u8> {
    let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .expect("valid base64")
}

/// Resolves a port (number or name) to the imgate container's port number.
fn container_port(deployment: &Value, port: &Value) -> Option<u64> {
    let container = &seq(deployment, "spec.template.spec.containers")[0];
    let ports = seq(container, "ports");
    let found = match port {
        Value::Number(n) => ports
            .iter()
            .find(|p| at(p, "containerPort").as_u64() == n.as_u64()),
        Value::String(name) => ports.iter().find(|p| s(p, "name") == name),
        _ => None,
    };
    found.and_then(|p| at(p, "containerPort").as_u64())
}

fn check_pods(r: &Rendered, pull_secrets: bool) {
    let dep = r.deployment();
    let what = format!("{}: Deployment imgate", r.name);
    let replicas = at(dep, "spec.replicas").as_u64().unwrap_or(1);
    assert!(replicas >= 2, "{what}: {replicas} replicas");
    let labels = pod_labels(dep);
    let spread = seq(dep, "spec.template.spec.topologySpreadConstraints");
    assert!(!spread.is_empty(), "{what}: topology spread");
    for c in spread {
        assert!(
            selects(at(c, "labelSelector"), &labels),
            "{what}: spread selector"
        );
    }
    let pdb = r.one("PodDisruptionBudget", "imgate");
    let min = at(pdb, "spec.minAvailable").as_u64();
    assert_eq!(min, Some(1), "{}: PDB minAvailable", r.name);
    assert!(
        selects(at(pdb, "spec.selector"), &labels),
        "{}: PDB selects the pods",
        r.name
    );

    let pod = at(dep, "spec.template.spec");
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(at(pod, host).as_bool(), Some(true), "{what}: {host}");
    }
    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true),
        "{what}"
    );
    assert_eq!(
        at(pod, "securityContext.runAsUser").as_u64(),
        Some(65532),
        "{what}"
    );
    assert_eq!(
        s(pod, "securityContext.seccompProfile.type"),
        "RuntimeDefault",
        "{what}"
    );
    let sa = r.one("ServiceAccount", "imgate");
    assert_eq!(
        at(sa, "automountServiceAccountToken").as_bool(),
        Some(false),
        "{what}: SA token"
    );
    assert_eq!(s(pod, "serviceAccountName"), "imgate", "{what}");
    assert_eq!(
        at(pod, "automountServiceAccountToken").as_bool(),
        Some(pull_secrets),
        "{what}: an API token only with the pull-secrets component"
    );
    for v in seq(pod, "volumes") {
        assert!(at(v, "hostPath").is_null(), "{what}: hostPath volume");
    }

    let containers: Vec<&Value> = seq(pod, "containers")
        .iter()
        .chain(seq(pod, "initContainers"))
        .collect();
    assert_eq!(seq(pod, "containers").len(), 1, "{what}: one container");
    for c in &containers {
        let what = format!("{what} container {}", s(c, "name"));
        let sc = at(c, "securityContext");
        assert_eq!(
            at(sc, "readOnlyRootFilesystem").as_bool(),
            Some(true),
            "{what}"
        );
        assert_eq!(
            at(sc, "allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{what}"
        );
        assert_ne!(at(sc, "privileged").as_bool(), Some(true), "{what}");
        assert_ne!(at(sc, "runAsNonRoot").as_bool(), Some(false), "{what}");
        assert!(
            strings(sc, "capabilities.drop").iter().any(|c| c == "ALL"),
            "{what}: drop ALL"
        );
        assert!(
            seq(sc, "capabilities.add").is_empty(),
            "{what}: no capabilities added"
        );
        let seccomp = s(sc, "seccompProfile.type");
        assert!(
            seccomp.is_empty() || seccomp == "RuntimeDefault",
            "{what}: seccomp {seccomp}"
        );
        for res in ["requests.cpu", "requests.memory", "limits.memory"] {
            assert!(
                !at(c, &format!("resources.{res}")).is_null(),
                "{what}: resources.{res}"
            );
        }
    }

    let c = containers[0];
    let args = strings(c, "args");
    assert_eq!(args[..CONTAINER_ARGS.len()], CONTAINER_ARGS, "{what}: args");
    assert_eq!(
        args.iter().any(|a| a == "--kube-pull-secrets"),
        pull_secrets,
        "{what}: --kube-pull-secrets exactly with the pull-secrets component"
    );
    // The webhook would refuse to start; worse, it would be an oracle.
    if let Some(problem) = pull_secrets_unauthenticated(r) {
        panic!("{what}: {problem}");
    }
    // A client CA is a file the pod actually has.
    if let Some(path) = client_ca_path(r) {
        let (name, key) = mounted_config_map(r, &path)
            .unwrap_or_else(|| panic!("{what}: --client-ca {path} is not in a mounted ConfigMap"));
        let config_map = r.one("ConfigMap", &name);
        assert!(
            config_map.get("data").and_then(|d| d.get(&key)).is_some(),
            "{what}: ConfigMap {name} has no {key} for --client-ca"
        );
    }
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            s(c, &format!("{probe}.httpGet.path")),
            path,
            "{what}: {probe}"
        );
        let port = container_port(dep, at(c, &format!("{probe}.httpGet.port")));
        assert_eq!(port, Some(9090), "{what}: {probe} on :9090");
    }

    // Mounts: TLS Secret, policy ConfigMap (with the file --policy names),
    // keys ConfigMap; all read-only.
    let mount = |path: &str| {
        let m = seq(c, "volumeMounts")
            .iter()
            .find(|m| s(m, "mountPath") == path)
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {path}"));
        assert_eq!(
            at(m, "readOnly").as_bool(),
            Some(true),
            "{what}: {path} read-only"
        );
        assert!(
            at(m, "subPath").is_null(),
            "{what}: {path} by subPath never sees updates"
        );
        let name = s(m, "name");
        seq(pod, "volumes")
            .iter()
            .find(|v| s(v, "name") == name)
            .unwrap_or_else(|| panic!("{what}: no volume {name}"))
    };
    assert_eq!(
        s(mount("/etc/imgate/tls"), "secret.secretName"),
        "imgate-tls",
        "{what}"
    );
    assert_eq!(
        s(mount("/etc/imgate/policy"), "configMap.name"),
        "imgate-policy",
        "{what}"
    );
    assert_eq!(
        s(mount("/etc/imgate/keys"), "configMap.name"),
        "imgate-keys",
        "{what}"
    );
    r.one("ConfigMap", "imgate-keys");
    r.policy_text();
}

/// The container's arguments.
fn container_args(r: &Rendered) -> Vec<String> {
    strings(
        &seq(r.deployment(), "spec.template.spec.containers")[0],
        "args",
    )
}

/// The file `--client-ca` names, if the container is given one.
pub(super) fn client_ca_path(r: &Rendered) -> Option<String> {
    let args = container_args(r);
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--client-ca=")
            .map(str::to_string)
            .or_else(|| {
                (a == "--client-ca")
                    .then(|| args.get(i + 1).cloned())
                    .flatten()
            })
    })
}

/// Why the render reads pull secrets for any client, if it does.
pub(super) fn pull_secrets_unauthenticated(r: &Rendered) -> Option<&'static str> {
    let args = container_args(r);
    let pull_secrets = args.iter().any(|a| a == "--kube-pull-secrets");
    let opted_in = args
        .iter()
        .any(|a| a == "--allow-unauthenticated-pull-secrets");
    (pull_secrets && client_ca_path(r).is_none() && !opted_in).then_some(
        "--kube-pull-secrets without --client-ca or --allow-unauthenticated-pull-secrets",
    )
}

/// The ConfigMap and key mounted at `path` in the imgate container.
pub(super) fn mounted_config_map(r: &Rendered, path: &str) -> Option<(String, String)> {
    let pod = at(r.deployment(), "spec.template.spec");
    let container = &seq(pod, "containers")[0];
    let (dir, file) = path.rsplit_once('/')?;
    let mount = seq(container, "volumeMounts")
        .iter()
        .find(|m| s(m, "mountPath").trim_end_matches('/') == dir)?;
    let volume = seq(pod, "volumes")
        .iter()
        .find(|v| s(v, "name") == s(mount, "name"))?;
    let name = at(volume, "configMap.name").as_str()?;
    Some((name.to_string(), file.to_string()))
}

/// The pods may only run on control-plane nodes (required node affinity).
pub(super) fn pinned_to_control_plane(r: &Rendered) -> bool {
    let terms = seq(
        r.deployment(),
        "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
    );
    !terms.is_empty()
        && terms.iter().all(|term| {
            seq(term, "matchExpressions").iter().any(|e| {
                s(e, "key") == "node-role.kubernetes.io/control-plane"
                    && s(e, "operator") == "Exists"
            })
        })
}

fn check_network_policy(r: &Rendered) {
    let np = r.one("NetworkPolicy", "imgate");
    let what = format!("{}: NetworkPolicy imgate", r.name);
    assert!(
        selects(at(np, "spec.podSelector"), &pod_labels(r.deployment())),
        "{what}: selects the pods"
    );
    let types = strings(np, "spec.policyTypes");
    assert!(types.iter().any(|t| t == "Ingress") && types.iter().any(|t| t == "Egress"));
    let ports = |rules: &[Value]| -> BTreeSet<(String, u64)> {
        rules
            .iter()
            .flat_map(|rule| {
                let ports = seq(rule, "ports");
                // A rule without ports opens every port: never wanted here.
                assert!(!ports.is_empty(), "{what}: a rule without ports");
                ports.iter().map(|p| {
                    let proto = at(p, "protocol").as_str().unwrap_or("TCP").to_string();
                    (proto, at(p, "port").as_u64().expect("numeric port"))
                })
            })
            .collect()
    };
    let ingress = ports(seq(np, "spec.ingress"));
    let allowed: BTreeSet<_> = [("TCP".to_string(), 8443), ("TCP".to_string(), 9090)].into();
    assert!(
        ingress.is_subset(&allowed) && ingress.contains(&("TCP".to_string(), 9090)),
        "{what}: ingress only to 8443 and 9090: {ingress:?}"
    );
    // The API server must reach 8443: through the policy, or from the node
    // the pod runs on (which no policy blocks) when the pods run where the
    // API server does.
    assert!(
        ingress.contains(&("TCP".to_string(), 8443)) || pinned_to_control_plane(r),
        "{what}: nothing admits the API server to 8443"
    );
    let egress = ports(seq(np, "spec.egress"));
    for need in [("UDP", 53), ("TCP", 53), ("TCP", 443)] {
        assert!(
            egress.contains(&(need.0.to_string(), need.1)),
            "{what}: egress {need:?}"
        );
    }
}

/// The shipped policy is in the overlay's mode and passes the real
/// `imgate policy check`; a broken copy of it does not (so the check bites).
/// The pod's mounts are recreated in a temp dir (`/etc/imgate/` → temp), so
/// key files the policy names are read from the rendered imgate-keys.
fn check_policy(r: &Rendered, mode: &str) {
    let text = r.policy_text();
    let parsed: Value = serde_yaml::from_str(&text).expect("policy.yaml is YAML");
    assert_eq!(s(&parsed, "mode"), mode, "{}: policy mode", r.name);
    let dir = tempfile::tempdir().expect("temp dir");
    let etc = dir.path().join("etc-imgate");
    std::fs::create_dir_all(etc.join("policy")).expect("mkdir");
    std::fs::create_dir_all(etc.join("keys")).expect("mkdir");
    let keys = r.one("ConfigMap", "imgate-keys");
    if let Some(data) = keys.get("data").and_then(Value::as_mapping) {
        for (name, value) in data {
            let (Some(name), Some(value)) = (name.as_str(), value.as_str()) else {
                continue;
            };
            std::fs::write(etc.join("keys").join(name), value).expect("write key");
        }
    }
    let mounted = text.replace("/etc/imgate/", &format!("{}/", etc.display()));
    let file = etc.join("policy/policy.yaml");
    std::fs::write(&file, &mounted).expect("write policy");
    ok(Command::new(imgate_bin())
        .args(["policy", "check"])
        .arg(&file));
    let broken = etc.join("policy/broken.yaml");
    std::fs::write(&broken, format!("{mounted}\nnoSuchField: true\n")).expect("write policy");
    let out = run(Command::new(imgate_bin())
        .args(["policy", "check"])
        .arg(&broken));
    assert!(
        !out.status.success(),
        "{}: policy check accepted an unknown field",
        r.name
    );
}

fn check_cert_manager(r: &Rendered) {
    let tls_secret = seq(r.deployment(), "spec.template.spec.volumes")
        .iter()
        .find_map(|v| at(v, "secret.secretName").as_str())
        .expect("a Secret volume");
    let serving: Vec<&Value> = r
        .all("Certificate")
        .into_iter()
        .filter(|c| s(c, "spec.secretName") == tls_secret)
        .collect();
    assert_eq!(
        serving.len(),
        1,
        "{}: one Certificate writes {tls_secret}",
        r.name
    );
    let cert = serving[0];
    assert!(
        strings(cert, "spec.dnsNames")
            .iter()
            .any(|d| d == "imgate.imgate-system.svc"),
        "{}: serving cert names the Service",
        r.name
    );
    let expected = format!("{NAMESPACE}/{}", s(cert, "metadata.name"));
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = r.one(kind, "imgate");
        let inject = at(config, "metadata.annotations")
            .get("cert-manager.io/inject-ca-from")
            .and_then(Value::as_str);
        assert_eq!(
            inject,
            Some(expected.as_str()),
            "{}: {kind} CA injection",
            r.name
        );
        // Renewing imgate's certificate must never depend on imgate admitting
        // cert-manager's own pods.
        let hook = r.webhook(kind);
        assert!(
            !selects(
                at(hook, "namespaceSelector"),
                &[("kubernetes.io/metadata.name", "cert-manager")]
            ),
            "{}: {kind} must skip the cert-manager namespace",
            r.name
        );
    }
    // The issuer chain resolves within the render: serving ← CA issuer ←
    // CA certificate ← self-signed issuer.
    let issuer = r.one("Issuer", s(cert, "spec.issuerRef.name"));
    let ca_secret = s(issuer, "spec.ca.secretName");
    let ca_cert = r
        .all("Certificate")
        .into_iter()
        .find(|c| s(c, "spec.secretName") == ca_secret)
        .expect("a Certificate makes the CA secret");
    assert_eq!(
        at(ca_cert, "spec.isCA").as_bool(),
        Some(true),
        "{}: CA",
        r.name
    );
    let root = r.one("Issuer", s(ca_cert, "spec.issuerRef.name"));
    assert!(
        at(root, "spec.selfSigned").is_mapping(),
        "{}: self-signed root",
        r.name
    );
}
