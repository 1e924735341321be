//! Reading an AdmissionReview of a realistic object: a Deployment UPDATE as
//! the API server sends it (object and oldObject, each with managedFields,
//! labels, annotations, env, probes, volumes; about 13 KB in all), read by
//! the webhook's `parse_review`, which keeps only the members the engine
//! reads, beside a full `serde_json::Value` tree of the same body for scale.
//! `cargo bench -p imgate-tests --bench parse` (about 10 s).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

fn container(name: &str, image: &str) -> Value {
    let env: Vec<Value> = (0..12)
        .map(|n| json!({"name": format!("SETTING_{n}"), "value": format!("value-{n}")}))
        .collect();
    json!({
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["--port=8080", "--log-level=info"],
        "env": env,
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 5},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}, {"name": "data", "mountPath": "/var/lib/app"}],
        "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
    })
}

fn deployment(tag: &str) -> Value {
    let managed: Vec<Value> = ["kubectl-client-side-apply", "kube-controller-manager", "argocd-controller"]
        .iter()
        .map(|manager| json!({
            "manager": manager, "operation": "Update", "apiVersion": "apps/v1",
            "time": "2026-11-30T06:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}, "f:team": {}}},
                         "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}, "f:env": {}}}}}}}
        }))
        .collect();
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "shop", "namespace": "apps", "uid": "0f6a7c3e-5d1b-4b6e-9a51-3d2f0c8e7b21",
            "resourceVersion": "123456", "generation": 7,
            "labels": {"app": "shop", "team": "payments", "app.kubernetes.io/part-of": "store"},
            "annotations": {"deployment.kubernetes.io/revision": "7", "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}"},
            "managedFields": managed
        },
        "spec": {
            "replicas": 3, "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "shop"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "shop", "team": "payments"}, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "serviceAccountName": "shop",
                    "imagePullSecrets": [{"name": "regcred"}],
                    "initContainers": [container("migrate", &format!("registry.example.com/shop/migrate:{tag}"))],
                    "containers": [
                        container("app", &format!("registry.example.com/shop/app:{tag}")),
                        container("proxy", "registry.example.com/infra/proxy:1.4"),
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": "shop-config"}}, {"name": "data", "emptyDir": {}}],
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "shop"}}, "topologyKey": "kubernetes.io/hostname"}}]}},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"}],
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst", "restartPolicy": "Always"
                }
            }
        },
        "status": {"replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "observedGeneration": 7}
    })
}

fn review_body() -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "shop", "namespace": "apps", "operation": "UPDATE",
            "userInfo": {"username": "system:serviceaccount:argocd:argocd-application-controller", "uid": "1", "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": deployment("v2"),
            "oldObject": deployment("v1"),
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"}
        }
    }))
}

fn bench_parse(c: &mut Criterion) {
    let body = match review_body() {
        Ok(body) => body,
        Err(err) => {
            eprintln!("parse bench: cannot build the review: {err}");
            return;
        }
    };
    println!("review body: {} bytes", body.len());
    // What is measured must still be what the engine reads.
    let image = imgate_webhook::review::parse_review(&body)
        .ok()
        .and_then(|review| review.request)
        .and_then(|request| request.object)
        .and_then(|object| {
            object
                .pointer("/spec/template/spec/containers/0/image")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    if image.as_deref() != Some("registry.example.com/shop/app:v2") {
        eprintln!("parse bench: the parsed review lost the image: {image:?}");
        return;
    }
    c.bench_function("parse_review (sparse object)", |b| {
        b.iter(|| imgate_webhook::review::parse_review(black_box(&body)))
    });
    c.bench_function("serde_json::Value of the same body", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&body)))
    });
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
