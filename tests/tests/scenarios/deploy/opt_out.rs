//! The opt-out label `imgate.dev/ignore=true`. A workload author can put it
//! on any object and on any pod template, so no shipped overlay offers a
//! per-object opt-out; `components/object-opt-out` adds one only together
//! with the ValidatingAdmissionPolicy that restricts who may set the label,
//! and that policy's CEL is evaluated here (cel-python, PyPI) against sample
//! objects for every place a pod's labels can come from.

use std::collections::BTreeSet;

use serde_json::{json, Value as Json};
use serde_yaml::Value;

use super::checks::{check_install, selects, Tls};
use super::{ok, s, seq, strings, DeployTree, Rendered};
use imgate_tests::bin::{python, workspace_root};

const LABEL: (&str, &str) = ("imgate.dev/ignore", "true");
const KINDS: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// What a workload author can do without any namespace rights: label the
/// object, and (for controllers) its pod template. Neither may switch off
/// imgate in an overlay as shipped.
#[rstest::rstest]
#[case::audit("overlays/audit")]
#[case::enforce("overlays/enforce")]
#[case::cert_manager("overlays/cert-manager")]
fn shipped_overlays_offer_no_per_object_opt_out(#[case] overlay: &str) {
    let tree = DeployTree::new();
    let r = tree.render(overlay);
    for kind in KINDS {
        let hook = r.webhook(kind);
        assert!(
            hook.get("objectSelector").is_none(),
            "{overlay}: {kind} has an objectSelector: {:?}",
            hook.get("objectSelector")
        );
        // The namespace label stays the break-glass (needs namespace rights).
        assert!(!selects(
            &hook["namespaceSelector"],
            &[("kubernetes.io/metadata.name", "team-a"), LABEL]
        ));
    }
    assert!(
        r.all("ValidatingAdmissionPolicy").is_empty(),
        "{overlay}: nothing to restrict, so no policy"
    );
}

fn with_object_opt_out(tree: &DeployTree) -> Rendered {
    let overlay = tree.overlay(
        "object-opt-out",
        "resources: [../enforce]\ncomponents: [../../components/object-opt-out]\n",
    );
    tree.render(&overlay)
}

/// The explicit component: the webhooks skip labelled objects, and the
/// restriction covers every resource the webhooks inspect (an uncovered kind
/// would be a free bypass) plus Namespaces, looks at every place a pod's
/// labels come from, and denies.
#[test]
fn object_opt_out_component_brings_its_restriction() {
    let tree = DeployTree::new();
    let r = with_object_opt_out(&tree);
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, false);
    for kind in KINDS {
        let selector = &r.webhook(kind)["objectSelector"];
        assert!(!selects(selector, &[("app", "x"), LABEL]), "{kind}");
        assert!(selects(selector, &[("app", "x")]), "{kind}");
    }
    let vap = r.one("ValidatingAdmissionPolicy", "imgate-restrict-opt-out");
    assert_eq!(s(vap, "spec.failurePolicy"), "Fail");
    let covered: BTreeSet<(String, String)> = seq(vap, "spec.matchConstraints.resourceRules")
        .iter()
        .flat_map(|rule| {
            let groups = strings(rule, "apiGroups");
            let resources = strings(rule, "resources");
            groups.into_iter().flat_map(move |g| {
                resources
                    .clone()
                    .into_iter()
                    .map(move |res| (g.clone(), res))
            })
        })
        .collect();
    for kind in KINDS {
        for rule in seq(r.webhook(kind), "rules") {
            assert_eq!(strings(rule, "operations"), ["CREATE", "UPDATE"]);
            for group in strings(rule, "apiGroups") {
                for resource in strings(rule, "resources") {
                    // Subresource requests carry the parent object's labels.
                    let parent = resource.split('/').next().unwrap_or_default().to_string();
                    assert!(
                        covered.contains(&(group.clone(), parent.clone())),
                        "{kind}: {group}/{parent} is not covered by the opt-out restriction"
                    );
                }
            }
        }
    }
    assert!(covered.contains(&(String::new(), "namespaces".to_string())));
    for rule in seq(vap, "spec.matchConstraints.resourceRules") {
        assert_eq!(strings(rule, "operations"), ["CREATE", "UPDATE"]);
    }
    let expressions: String = seq(vap, "spec.variables")
        .iter()
        .map(|v| s(v, "expression").to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for path in [
        "object.metadata.labels",
        "object.spec.template.metadata.labels",
        "object.spec.jobTemplate.spec.template.metadata.labels",
    ] {
        assert!(expressions.contains(path), "the restriction reads {path}");
    }
    let binding = r.one(
        "ValidatingAdmissionPolicyBinding",
        "imgate-restrict-opt-out",
    );
    assert_eq!(s(binding, "spec.policyName"), "imgate-restrict-opt-out");
    assert_eq!(strings(binding, "spec.validationActions"), ["Deny"]);
}

fn user(name: &str, groups: &[&str]) -> Json {
    json!({"userInfo": {"username": name, "groups": groups}})
}

fn labels(set: bool) -> Json {
    if set {
        json!({"app": "x", "imgate.dev/ignore": "true"})
    } else {
        json!({"app": "x"})
    }
}

/// A workload of `kind` with the label (or not) on the object and on the
/// place its pod template lives.
fn workload(kind: &str, on_object: bool, on_template: bool) -> Json {
    let template = json!({
        "metadata": {"labels": labels(on_template)},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}
    });
    let spec = match kind {
        "Pod" => template["spec"].clone(),
        "CronJob" => json!({"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}),
        _ => json!({"template": template}),
    };
    json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": "w", "namespace": "team-a", "labels": labels(on_object)},
        "spec": spec,
    })
}

/// Runs `tests/tests/scenarios/deploy/vap_eval.py` on the rendered policy.
fn evaluate(policy: &Value, cases: &[(&str, Json, Json, Json)]) -> Vec<Json> {
    let input = json!({
        "policy": serde_json::to_value(policy).expect("policy as JSON"),
        "cases": cases
            .iter()
            .map(|(name, request, object, old)| {
                let mut request = request.clone();
                request["operation"] = json!(if old.is_null() { "CREATE" } else { "UPDATE" });
                json!({"name": name, "request": request, "object": object, "oldObject": old})
            })
            .collect::<Vec<_>>(),
    });
    let script = workspace_root().join("tests/tests/scenarios/deploy/vap_eval.py");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cases.json");
    std::fs::write(&file, input.to_string()).expect("write cases");
    let stdin = std::fs::File::open(&file).expect("open cases");
    let out = ok(std::process::Command::new(python())
        .arg(&script)
        .stdin(stdin));
    let results: Vec<Json> = serde_json::from_str(&out).expect("evaluator prints JSON");
    assert_eq!(results.len(), cases.len());
    results
}

/// The restriction's CEL, evaluated against sample requests: a workload
/// author may not add the label on the object, the pod template of any
/// controller, or a CronJob's job template; the break-glass group may; what
/// is already there may stay; controllers may stamp out labelled templates.
#[test]
fn restrict_opt_out_cel_denies_every_label_source() {
    let tree = DeployTree::new();
    let r = with_object_opt_out(&tree);
    let vap = r.one("ValidatingAdmissionPolicy", "imgate-restrict-opt-out");
    let author = user("alice", &["team-a", "system:authenticated"]);
    let glass = user("bob", &["imgate:break-glass", "system:authenticated"]);
    let controller = user(
        "system:serviceaccount:kube-system:replicaset-controller",
        &[],
    );
    let none = Json::Null;
    let templated = [
        "Deployment",
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "ReplicationController",
        "CronJob",
    ];
    let mut cases: Vec<(String, Json, Json, Json, bool)> = vec![
        (
            "pod, no label".into(),
            author.clone(),
            workload("Pod", false, false),
            none.clone(),
            true,
        ),
        (
            "pod labelled".into(),
            author.clone(),
            workload("Pod", true, false),
            none.clone(),
            false,
        ),
        (
            "pod labelled by break-glass".into(),
            glass.clone(),
            workload("Pod", true, false),
            none.clone(),
            true,
        ),
        (
            "pod labelled by a controller".into(),
            controller.clone(),
            workload("Pod", true, false),
            none.clone(),
            true,
        ),
        (
            "label added to a running pod".into(),
            author.clone(),
            workload("Pod", true, false),
            workload("Pod", false, false),
            false,
        ),
        (
            "labelled pod keeps its label (set image)".into(),
            author.clone(),
            workload("Pod", true, false),
            workload("Pod", true, false),
            true,
        ),
        (
            "pod without any labels".into(),
            author.clone(),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}),
            none.clone(),
            true,
        ),
        (
            "label value other than true".into(),
            author.clone(),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"imgate.dev/ignore": "false"}}, "spec": {}}),
            none.clone(),
            true,
        ),
        (
            "namespace labelled".into(),
            author.clone(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": labels(true)}, "spec": {}}),
            none.clone(),
            false,
        ),
        (
            "replication controller without a template".into(),
            author.clone(),
            json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"}, "spec": {"replicas": 0}}),
            none.clone(),
            true,
        ),
        (
            "deployment template without metadata".into(),
            author.clone(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {}}}}),
            none.clone(),
            true,
        ),
    ];
    for kind in templated {
        cases.extend([
            (
                format!("{kind}: no label"),
                author.clone(),
                workload(kind, false, false),
                none.clone(),
                true,
            ),
            (
                format!("{kind}: label on the object"),
                author.clone(),
                workload(kind, true, false),
                none.clone(),
                false,
            ),
            (
                format!("{kind}: label on the pod template"),
                author.clone(),
                workload(kind, false, true),
                none.clone(),
                false,
            ),
            (
                format!("{kind}: template label by break-glass"),
                glass.clone(),
                workload(kind, false, true),
                none.clone(),
                true,
            ),
            (
                format!("{kind}: template label added on update"),
                author.clone(),
                workload(kind, false, true),
                workload(kind, false, false),
                false,
            ),
            (
                format!("{kind}: object label allowed before, template label added now"),
                author.clone(),
                workload(kind, true, true),
                workload(kind, true, false),
                false,
            ),
            (
                format!("{kind}: allowed template label kept on update"),
                author.clone(),
                workload(kind, false, true),
                workload(kind, false, true),
                true,
            ),
        ]);
    }
    let input: Vec<(&str, Json, Json, Json)> = cases
        .iter()
        .map(|(name, req, obj, old, _)| (name.as_str(), req.clone(), obj.clone(), old.clone()))
        .collect();
    let results = evaluate(vap, &input);
    let mut wrong = Vec::new();
    for ((name, .., allowed), result) in cases.iter().zip(&results) {
        assert_eq!(result["name"], json!(name));
        // Every decision comes from the validation, never from an error in
        // an expression (which would deny everything under failurePolicy Fail).
        assert!(
            result["error"].is_null(),
            "{name}: CEL error {}",
            result["error"]
        );
        if result["allowed"] != json!(allowed) {
            wrong.push(format!("{name}: expected allowed={allowed}, got {result}"));
        }
    }
    assert!(wrong.is_empty(), "wrong decisions:\n{}", wrong.join("\n"));
}
