//! Scenario: every command that prints, run with its standard output closed
//! (`imgate … | head -1` once `head` has its line): exit 2 naming standard
//! output, never a panic (101) and never 0, since a `pipefail` pipeline must
//! not take a verdict nobody read for a pass. Each case first runs with
//! standard output open, to show it prints there.

// Tests: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imgate_keys::SigningKey;
use imgate_tests::{
    run_imgate, run_imgate_closed_stdout, ImageBuilder, PushWith, Registry, Variant,
};

use crate::common::Run;

const PASSWORD: &str = "closed stdout";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_standard_output_is_exit_2_never_a_panic() {
    let registry = Registry::start(Variant::Tls)
        .await
        .expect("registry starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (key, public) = (path("ci.key"), path("ci.pub"));
    let signer = SigningKey::generate();
    std::fs::write(&key, signer.to_cosign_pem(PASSWORD.as_bytes()).unwrap()).unwrap();
    std::fs::write(&public, signer.public_key().to_pem()).unwrap();
    let image = ImageBuilder::new("closed-stdout")
        .image()
        .push(&registry, "team/app", "v1", PushWith::Http)
        .await
        .expect("push");
    let host = registry.host();
    let policy = path("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "trustedRegistries: [\"{host}/team/**\"]\n\
             rules:\n  - name: ours\n    images: [\"{host}/team/**\"]\n    keys: [{{file: \"{public}\"}}]\n"
        ),
    )
    .unwrap();
    let manifest = path("pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: prod}}\n\
             spec:\n  containers:\n    - name: web\n      image: {}\n",
            image.reference
        ),
    )
    .unwrap();
    let predicate = path("predicate.json");
    std::fs::write(&predicate, r#"{"scanner": "closed-stdout"}"#).unwrap();
    let kyverno = imgate_tests::bin::workspace_root()
        .join("fixtures/kyverno/require-trusted-registries.yaml")
        .display()
        .to_string();
    let reference = image.reference.as_str();

    // (arguments, whether they reach the registry); in order, since verify
    // needs the signature that sign makes.
    let cases: &[(&[&str], bool)] = &[
        (&["sign", "--key", &key, reference], true),
        (
            &[
                "attest",
                "--key",
                &key,
                "--type",
                "vuln",
                "--predicate",
                &predicate,
                reference,
            ],
            true,
        ),
        (&["verify", "--key", &public, reference], true),
        (
            &["verify", "--key", &public, "--output", "json", reference],
            true,
        ),
        (&["verify", "--policy", &policy, reference], true),
        (
            &[
                "verify-attestation",
                "--key",
                &public,
                "--type",
                "vuln",
                reference,
            ],
            true,
        ),
        (&["resolve", reference], true),
        (&["pin", &manifest], true),
        (
            &["admit", "--policy", &policy, "--filename", &manifest],
            true,
        ),
        (&["keys", "public", "--key", &key], false),
        (&["policy", "check", &policy], false),
        (&["policy", "import", &kyverno], false),
        (&["completions", "bash"], false),
    ];
    let env = [("IMGATE_PASSWORD", PASSWORD)];
    for (args, remote) in cases {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if *remote {
            all.extend(registry.cli_args());
        }
        let open = Run::from_output(&run_imgate(&all, &env, None).expect("imgate runs"));
        assert!(
            matches!(open.code, 0 | 1) && !open.stdout.is_empty(),
            "{args:?} should answer on standard output: {open:?}"
        );
        let closed = Run::from_output(&run_imgate_closed_stdout(&all, &env).expect("imgate runs"));
        assert_eq!(
            closed.code, 2,
            "{args:?} with standard output closed: {closed:?}"
        );
        assert!(
            closed.stderr.contains("cannot write to standard output")
                && !closed.stderr.contains("panicked"),
            "{args:?}: {closed:?}"
        );
    }
}
