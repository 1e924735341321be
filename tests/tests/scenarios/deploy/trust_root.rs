//! `components/trust-root-refresh`: the CronJob that refreshes the Sigstore
//! trusted root keeps its TUF state on a persistent volume (the rollback
//! protection of `imgate trust-root update` needs that memory), runs the
//! webhook's own image, hardened, with no API token and only DNS and HTTPS
//! out; the webhook mounts the same volume read-only; the job's arguments
//! are ones the real binary accepts.

use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml::Value;

use super::checks::{check_install, selects, Tls};
use super::{at, imgate_bin, ok, s, seq, strings, DeployTree};

const CLAIM: &str = "imgate-trust-root";

#[test]
fn trust_root_refresh_keeps_its_tuf_state_on_the_volume_the_webhook_reads() {
    let tree = DeployTree::new();
    let overlay = tree.overlay(
        "trust-root",
        "resources: [../enforce]\ncomponents: [../../components/trust-root-refresh]\n",
    );
    let r = tree.render(&overlay);
    check_install(&r, "Fail", "enforce", Tls::SelfManaged, false);

    let claim = r.one("PersistentVolumeClaim", CLAIM);
    assert!(!seq(claim, "spec.accessModes").is_empty());
    let cron = r.one("CronJob", "imgate-trust-root");
    assert_eq!(s(cron, "spec.concurrencyPolicy"), "Forbid");
    let pod = at(cron, "spec.jobTemplate.spec.template.spec");
    let containers = seq(pod, "containers");
    assert_eq!(containers.len(), 1);
    let job = &containers[0];
    let webhook_pod = at(r.deployment(), "spec.template.spec");
    let webhook = &seq(webhook_pod, "containers")[0];
    assert_eq!(s(job, "image"), s(webhook, "image"), "the webhook's image");

    // Where the job writes, and where the webhook reads: the same claim.
    let job_dir = mount_of(pod, job);
    let webhook_dir = mount_of(webhook_pod, webhook);
    assert_eq!(job_dir.0, webhook_dir.0);
    assert!(!job_dir.1, "the job writes its volume");
    assert!(webhook_dir.1, "the webhook mounts it read-only");
    let args = strings(job, "args");
    let flag = |name: &str| -> String {
        let i = args.iter().position(|a| a == name);
        i.and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("the job passes {name}: {args:?}"))
            .clone()
    };
    for name in ["--out", "--tuf-state"] {
        let path = flag(name);
        assert!(
            path.starts_with(&format!("{}/", job_dir.0)),
            "{name} {path} is on the persistent volume {}",
            job_dir.0
        );
    }
    // The real binary accepts exactly these arguments.
    ok(Command::new(imgate_bin()).args(&args).arg("--help"));

    // Hardened like the webhook, and with no API access.
    assert_eq!(
        at(pod, "automountServiceAccountToken").as_bool(),
        Some(false)
    );
    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    assert_eq!(
        s(pod, "securityContext.seccompProfile.type"),
        "RuntimeDefault"
    );
    let sc = at(job, "securityContext");
    assert_eq!(at(sc, "readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(at(sc, "allowPrivilegeEscalation").as_bool(), Some(false));
    assert!(strings(sc, "capabilities.drop").iter().any(|c| c == "ALL"));

    // Nothing in, DNS and HTTPS out.
    let np = r.one("NetworkPolicy", "imgate-trust-root");
    let labels: Vec<(&str, &str)> = at(cron, "spec.jobTemplate.spec.template.metadata.labels")
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?, v.as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    assert!(selects(at(np, "spec.podSelector"), &labels));
    assert!(!selects(
        at(np, "spec.podSelector"),
        &[("app.kubernetes.io/name", "imgate")]
    ));
    assert!(seq(np, "spec.ingress").is_empty());
    let egress: BTreeSet<(String, u64)> = seq(np, "spec.egress")
        .iter()
        .flat_map(|rule| seq(rule, "ports"))
        .map(|p| {
            (
                s(p, "protocol").to_string(),
                at(p, "port").as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeSet<(String, u64)> = [("UDP", 53), ("TCP", 53), ("TCP", 443)]
        .map(|(p, n)| (p.to_string(), n))
        .into();
    assert_eq!(egress, want);
}

/// The mount path of the claim in `container` of `pod`, and whether it is
/// read-only (the volume's or the mount's flag).
fn mount_of(pod: &Value, container: &Value) -> (String, bool) {
    let volume = seq(pod, "volumes")
        .iter()
        .find(|v| s(v, "persistentVolumeClaim.claimName") == CLAIM)
        .unwrap_or_else(|| panic!("a volume of claim {CLAIM}"));
    let name = s(volume, "name");
    let mount = seq(container, "volumeMounts")
        .iter()
        .find(|m| s(m, "name") == name)
        .unwrap_or_else(|| panic!("a mount of volume {name}"));
    let read_only = at(mount, "readOnly").as_bool() == Some(true)
        || at(volume, "persistentVolumeClaim.readOnly").as_bool() == Some(true);
    (s(mount, "mountPath").to_string(), read_only)
}
