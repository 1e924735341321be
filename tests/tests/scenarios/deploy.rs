//! Scenarios: deploy. Every overlay of `deploy/` is rendered with the real
//! `kubectl kustomize`, validated offline against the Kubernetes schemas
//! (`kubernetes-validate`, PyPI) and checked for the properties an operator
//! relies on not to lock themselves out of their cluster: the webhooks skip
//! kube-system and imgate-system, fail open or closed as the overlay says,
//! answer within the API server's timeout and reach the Service and
//! container port that actually serve them; the pods are hardened; the
//! shipped policy passes the real `imgate policy check`.
//!
//! Also here: the CLI reference in `docs/` is what `imgate --help` prints,
//! and the end-to-end cluster script (ignored: it needs kind or k3d).

// Test code throughout (helpers included): a failed expectation is the test
// failing, with the message saying which property broke.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod checks;
pub(crate) mod docs;
mod opt_out;
mod trust_root;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize as _;
use serde_yaml::Value;

use imgate_tests::bin::workspace_root;
use imgate_tests::imgate_bin;

use checks::{check_install, decode, selects, Tls};

/// Schemas of this Kubernetes version (shipped inside kubernetes-validate).
const KUBERNETES_VERSION: &str = "1.30.0";
const NAMESPACE: &str = "imgate-system";
/// Namespaces the webhooks must never select, whatever the overlay.
const ALWAYS_EXCLUDED: [&str; 2] = ["kube-system", "imgate-system"];
const CONTAINER_ARGS: [&str; 7] = [
    "webhook",
    "--policy",
    "/etc/imgate/policy/policy.yaml",
    "--tls-cert",
    "/etc/imgate/tls/tls.crt",
    "--tls-key",
    "/etc/imgate/tls/tls.key",
];

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A copy of `deploy/` in a temp dir with the self-managed certificate files
/// and the client CA in place (the repository keeps none: they hold a
/// private key, or belong to one installation).
pub(crate) struct DeployTree {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_ca_pem: String,
}

impl DeployTree {
    pub(crate) fn new() -> DeployTree {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_dir(&workspace_root().join("deploy"), &dir.path().join("deploy"));
        let ca = imgate_tests::pki::TestCa::new("imgate deploy test CA").expect("CA");
        let leaf = ca.server_cert().expect("serving cert");
        let certs = dir
            .path()
            .join("deploy/components/self-managed-certs/certs");
        std::fs::write(certs.join("ca.crt"), ca.cert_pem()).expect("ca.crt");
        std::fs::write(certs.join("tls.crt"), &leaf.cert_pem).expect("tls.crt");
        std::fs::write(certs.join("tls.key"), &leaf.key_pem).expect("tls.key");
        let client_ca = imgate_tests::pki::TestCa::new("imgate deploy test client CA").expect("CA");
        let client_ca_dir = dir.path().join("deploy/components/client-auth/client-ca");
        std::fs::write(client_ca_dir.join("ca.crt"), client_ca.cert_pem()).expect("ca.crt");
        DeployTree {
            dir,
            ca_pem: ca.cert_pem(),
            client_ca_pem: client_ca.cert_pem(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("deploy").join(rel)
    }

    /// Writes an operator's own overlay (`overlays/<name>`) and returns its path.
    pub(crate) fn overlay(&self, name: &str, kustomization: &str) -> String {
        let dir = self.path(&format!("overlays/{name}"));
        std::fs::create_dir_all(&dir).expect("overlay dir");
        std::fs::write(dir.join("kustomization.yaml"), kustomization).expect("kustomization");
        format!("overlays/{name}")
    }

    /// `kubectl kustomize`, then schema validation; returns the objects.
    pub(crate) fn render(&self, rel: &str) -> Rendered {
        let text = ok(kubectl().arg("kustomize").arg(self.path(rel)));
        let file = self
            .dir
            .path()
            .join(format!("{}.yaml", rel.replace('/', "_")));
        std::fs::write(&file, &text).expect("write render");
        validate_schemas(&file, rel);
        let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
            .filter(|v| !v.is_null())
            .collect();
        assert!(!objects.is_empty(), "{rel} rendered nothing");
        Rendered {
            name: rel.to_string(),
            objects,
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Strict validation against the schemas kubernetes-validate ships. Kinds it
/// has no schema for (cert-manager's CRDs) are only allowed from
/// cert-manager.io; their fields are checked by hand below.
fn validate_schemas(file: &Path, rel: &str) {
    let python = imgate_tests::bin::python();
    let out = Command::new(&python)
        .args(["-m", "kubernetes_validate"])
        .args(["--strict", "-k", KUBERNETES_VERSION, "--quiet"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (IMGATE_PYTHON): {e}; run scripts/install-deps.sh --with-python",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("ERROR") && !stdout.contains("FATAL"),
        "{rel}: kubernetes-validate ({} -m kubernetes_validate) failed ({}):\n{stdout}\n{}\n\
         (it is installed by scripts/install-deps.sh --with-python)",
        python.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in stdout.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            line.contains("api version cert-manager.io/v1"),
            "{rel}: no schema checked: {line}"
        );
    }
}

/// The oldest kubectl whose built-in kustomize renders `deploy/` (components
/// need kustomize v4+; kubectl 1.27 ships v5).
const KUBECTL_MIN_MINOR: u64 = 27;

/// `kubectl` from PATH, checked once to be new enough: a missing or old one
/// fails the rendering tests with a message that says so, not with an
/// obscure kustomize error.
fn kubectl() -> Command {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let out = Command::new("kubectl")
            .args(["version", "--client", "-o", "json"])
            .output()
            .map_err(|e| {
                format!(
                    "kubectl is needed to render deploy/ and cannot be run ({e}); \
                     install kubectl 1.{KUBECTL_MIN_MINOR} or newer"
                )
            })?;
        let version: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "`kubectl version --client -o json` printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let field = |name: &str| {
            version["clientVersion"][name]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches('+')
                .parse::<u64>()
                .unwrap_or(0)
        };
        let (major, minor) = (field("major"), field("minor"));
        if major > 1 || (major == 1 && minor >= KUBECTL_MIN_MINOR) {
            Ok(())
        } else {
            Err(format!(
                "kubectl {major}.{minor} is too old to render deploy/ (kustomize components); \
                 install kubectl 1.{KUBECTL_MIN_MINOR} or newer"
            ))
        }
    });
    if let Err(message) = checked {
        panic!("{message}");
    }
    Command::new("kubectl")
}

/// Looks up a dotted path (`spec.template.spec`) in a YAML value.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .unwrap_or(&Value::Null)
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn strings(v: &Value, path: &str) -> Vec<String> {
    seq(v, path)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

pub(crate) struct Rendered {
    name: String,
    pub(crate) objects: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| s(o, "kind") == kind)
            .collect()
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<_> = self
            .all(kind)
            .into_iter()
            .filter(|o| s(o, "metadata.name") == name)
            .collect();
        assert_eq!(found.len(), 1, "{}: expected one {kind} {name}", self.name);
        found[0]
    }

    /// The single webhook of configuration `kind` (Mutating/Validating).
    fn webhook(&self, kind: &str) -> &Value {
        let config = self.one(kind, "imgate");
        let hooks = seq(config, "webhooks");
        assert_eq!(hooks.len(), 1, "{}: {kind} has one webhook", self.name);
        &hooks[0]
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment", "imgate")
    }

    fn policy_text(&self) -> String {
        let cm = self.one("ConfigMap", "imgate-policy");
        cm.get("data")
            .and_then(|d| d.get("policy.yaml"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: imgate-policy has no policy.yaml", self.name))
            .to_string()
    }
}

#[rstest::rstest]
#[case::audit("overlays/audit", "Ignore", "audit", Tls::SelfManaged)]
#[case::enforce("overlays/enforce", "Fail", "enforce", Tls::SelfManaged)]
#[case::cert_manager("overlays/cert-manager", "Ignore", "audit", Tls::CertManager)]
fn overlay_renders_validates_and_is_safe(
    #[case] overlay: &str,
    #[case] failure_policy: &str,
    #[case] mode: &str,
    #[case] tls: Tls,
) {
    let tree = DeployTree::new();
    let rendered = tree.render(overlay);
    check_install(&rendered, failure_policy, mode, tls, false);
    if tls == Tls::SelfManaged {
        let secret = rendered.one("Secret", "imgate-tls");
        assert_eq!(s(secret, "type"), "kubernetes.io/tls");
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let bundle = s(rendered.webhook(kind), "clientConfig.caBundle");
            assert_eq!(
                decode(bundle),
                tree.ca_pem.as_bytes(),
                "{overlay}: {kind} caBundle"
            );
        }
    }
}

#[test]
fn cert_manager_with_enforce_component() {
    // What docs/rollout.md tells cert-manager users to write.
    let tree = DeployTree::new();
    let overlay = tree.overlay(
        "cm-enforce",
        "resources: [../../base]\n\
         components: [../../components/cert-manager, ../../components/enforce]\n",
    );
    check_install(
        &tree.render(&overlay),
        "Fail",
        "enforce",
        Tls::CertManager,
        false,
    );
}

#[test]
fn pull_secrets_component_grants_get_only() {
    let tree = DeployTree::new();
    let overlay = tree.overlay(
        "pull-secrets",
        "resources: [../enforce]\n\
         components: [../../components/client-auth, ../../components/pull-secrets]\n",
    );
    let r = tree.render(&overlay);
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, true);
    let role = r.one("ClusterRole", "imgate-pull-secrets");
    let rules = seq(role, "rules");
    assert_eq!(rules.len(), 1, "one rule");
    assert_eq!(strings(&rules[0], "apiGroups"), [""]);
    assert_eq!(
        strings(&rules[0], "verbs"),
        ["get"],
        "get only: no list, no watch"
    );
    let resources: BTreeSet<String> = strings(&rules[0], "resources").into_iter().collect();
    assert_eq!(
        resources,
        ["namespaces", "secrets", "serviceaccounts"]
            .map(String::from)
            .into()
    );
    let binding = r.one("ClusterRoleBinding", "imgate-pull-secrets");
    assert_eq!(s(binding, "roleRef.name"), "imgate-pull-secrets");
    let subjects = seq(binding, "subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(s(&subjects[0], "kind"), "ServiceAccount");
    assert_eq!(s(&subjects[0], "name"), "imgate");
    assert_eq!(s(&subjects[0], "namespace"), NAMESPACE);
}

/// Pull secrets without client authentication make the admission port an
/// oracle for every namespace's credentials: the webhook refuses to start
/// so, and the install check catches the render before anyone applies it.
#[test]
fn pull_secrets_without_client_auth_are_caught() {
    let tree = DeployTree::new();
    let overlay = tree.overlay(
        "pull-secrets-alone",
        "resources: [../enforce]\ncomponents: [../../components/pull-secrets]\n",
    );
    let r = tree.render(&overlay);
    assert_eq!(
        checks::pull_secrets_unauthenticated(&r),
        Some("--kube-pull-secrets without --client-ca or --allow-unauthenticated-pull-secrets"),
    );
    let guarded = tree.overlay(
        "pull-secrets-guarded",
        "resources: [../enforce]\n\
         components: [../../components/client-auth, ../../components/pull-secrets]\n",
    );
    assert_eq!(
        checks::pull_secrets_unauthenticated(&tree.render(&guarded)),
        None
    );
}

/// `components/client-auth`: the pods get `--client-ca` naming the mounted
/// ConfigMap's `ca.crt`, which is the operator's client CA, and the real
/// binary accepts the flag the manifests pass.
#[test]
fn client_auth_component_mounts_the_client_ca() {
    let tree = DeployTree::new();
    let overlay = tree.overlay(
        "client-auth",
        "resources: [../enforce]\ncomponents: [../../components/client-auth]\n",
    );
    let r = tree.render(&overlay);
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, false);
    let path = checks::client_ca_path(&r).expect("--client-ca in the container args");
    let (config_map, key) = checks::mounted_config_map(&r, &path).expect("a mounted ConfigMap");
    assert_eq!(
        (config_map.as_str(), key.as_str()),
        ("imgate-client-ca", "ca.crt")
    );
    let data = r.one("ConfigMap", "imgate-client-ca");
    assert_eq!(
        data.get("data")
            .and_then(|d| d.get("ca.crt"))
            .and_then(Value::as_str),
        Some(tree.client_ca_pem.as_str())
    );
    let help = ok(Command::new(imgate_bin()).args(["webhook", "--help"]));
    assert!(help.contains("--client-ca <FILE>"), "{help}");
}

/// `components/local-apiserver`: the pods run on control-plane nodes and
/// the NetworkPolicy admits no source to 8443 (only the node itself, which
/// a NetworkPolicy cannot block, reaches it).
#[test]
fn local_apiserver_component_closes_8443_to_pods() {
    let tree = DeployTree::new();
    let overlay = tree.overlay(
        "local-apiserver",
        "resources: [../enforce]\ncomponents: [../../components/local-apiserver]\n",
    );
    let r = tree.render(&overlay);
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, false);
    let np = r.one("NetworkPolicy", "imgate");
    let open: Vec<u64> = seq(np, "spec.ingress")
        .iter()
        .flat_map(|rule| {
            seq(rule, "ports")
                .iter()
                .filter_map(|p| at(p, "port").as_u64())
        })
        .collect();
    assert_eq!(open, [9090], "ingress to the metrics port only");
    assert!(
        checks::pinned_to_control_plane(&r),
        "pods on control-plane nodes"
    );
}

#[test]
fn extra_critical_namespaces_patch_keeps_the_defaults() {
    // The patch docs/operations.md gives for more critical namespaces.
    let tree = DeployTree::new();
    let patch = |kind: &str| {
        format!(
            "  - target:\n      kind: {kind}\n      name: imgate\n    patch: |-\n\
             \x20     - op: add\n        path: /webhooks/0/namespaceSelector/matchExpressions/0/values/-\n\
             \x20       value: longhorn-system\n"
        )
    };
    let overlay = tree.overlay(
        "critical",
        &format!(
            "resources: [../enforce]\npatches:\n{}{}",
            patch("MutatingWebhookConfiguration"),
            patch("ValidatingWebhookConfiguration")
        ),
    );
    let r = tree.render(&overlay);
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, false);
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let selector = at(r.webhook(kind), "namespaceSelector");
        assert!(!selects(
            selector,
            &[("kubernetes.io/metadata.name", "longhorn-system")]
        ));
    }
}

/// The real `imgate webhook certs`, in both formats, feeds the overlays: the
/// rendered caBundle is the CA that signed the serving certificate, and the
/// certificate names the Service.
#[test]
fn imgate_webhook_certs_output_deploys() {
    let tree = DeployTree::new();
    let certs = tree.path("components/self-managed-certs/certs");
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::remove_file(certs.join(f)).expect("remove test cert");
    }
    ok(Command::new(imgate_bin())
        .args(["webhook", "certs", "--out-dir"])
        .arg(&certs));
    ok(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(certs.join("ca.crt"))
        .arg(certs.join("tls.crt")));
    let san = ok(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(certs.join("tls.crt")));
    assert!(san.contains("DNS:imgate.imgate-system.svc"), "SANs: {san}");
    let ca_pem = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
    let r = tree.render("overlays/audit");
    check_install(&r, "Ignore", "audit", Tls::SelfManaged, false);
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            decode(s(r.webhook(kind), "clientConfig.caBundle")),
            ca_pem,
            "{kind}"
        );
    }

    // --format kustomize: a component of its own, used instead of
    // components/self-managed-certs.
    let own = tree.path("overlays/mine/imgate-certs");
    ok(Command::new(imgate_bin())
        .args(["webhook", "certs", "--format", "kustomize", "--out-dir"])
        .arg(&own));
    let overlay = tree.overlay(
        "mine",
        "resources: [../../base]\ncomponents: [imgate-certs, ../../components/enforce]\n",
    );
    let r = tree.render(&overlay);
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, false);
    let secret = r.one("Secret", "imgate-tls");
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        let value = secret.get("data").and_then(|d| d.get(key));
        assert!(value.is_some(), "kustomize Secret has {key}");
    }
    assert!(!s(
        r.webhook("MutatingWebhookConfiguration"),
        "clientConfig.caBundle"
    )
    .is_empty());
}

/// The image runs as the same non-root user the manifests require, with no
/// shell and the webhook as its default command (the image scenario holds
/// the rest of the final stage against the image buildah builds).
#[test]
fn dockerfile_final_stage_is_scratch_nonroot() {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    let fin = &lines[last_from..];
    assert_eq!(fin[0], "FROM scratch", "final stage");
    assert!(
        !fin.iter().any(|l| l.starts_with("RUN ")),
        "no RUN in the final stage (no shell)"
    );
    assert!(fin.contains(&"USER 65532:65532"), "USER 65532");
    assert!(fin.contains(&r#"ENTRYPOINT ["/imgate"]"#), "ENTRYPOINT");
    assert!(fin.contains(&r#"CMD ["webhook"]"#), "CMD");
    let build = &lines[..last_from];
    assert!(
        build.iter().any(|l| l.contains("--locked")),
        "builds from Cargo.lock"
    );
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        ".dockerignore skips target/"
    );
    for needed in ["Cargo.lock", "scripts"] {
        assert!(
            !ignore.lines().any(|l| l.trim() == needed),
            "{needed} is needed"
        );
    }
}

/// The real-cluster end-to-end run (docs/operations.md "End-to-end test").
#[test]
#[ignore = "needs a Kubernetes cluster"]
fn e2e_cluster_script() {
    let root = workspace_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/e2e-cluster.sh"))
        .env("IMGATE_BIN", imgate_bin())
        .current_dir(&root)
        .status()
        .expect("running scripts/e2e-cluster.sh");
    assert!(status.success(), "scripts/e2e-cluster.sh failed: {status}");
}
