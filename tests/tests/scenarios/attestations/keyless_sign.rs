//! `imgate attest` without a key, against the harness's private Sigstore
//! (OIDC issuer, Fulcio, Rekor v1, timestamp authority) on loopback: a
//! keyless attestation in both formats, verified by identity with a log
//! entry required, and refused for another identity.

use imgate_tests::sigstore_services::{PrivateSigstore, TokenSpec};

use super::*;

const EMAIL: &str = "release@imgate.test";

#[rstest::rstest]
#[case::legacy("legacy")]
#[case::bundle("bundle")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_attestation_verifies_by_identity(#[case] format: &str) {
    let ctx = Ctx::new(Variant::Http).await;
    let sigstore = PrivateSigstore::start().await.unwrap();
    let image = ctx
        .push(&format!("keyless-attest-{format}"), "team/app")
        .await;
    let predicate = ctx.write(
        "provenance.json",
        &provenance("https://github.com/example/app", "refs/heads/main"),
    );
    let (config, root) = (sigstore.signing_config_path(), sigstore.trusted_root_path());
    let (config, root) = (config.to_str().unwrap(), root.to_str().unwrap());
    let token = sigstore.token(&TokenSpec::email(EMAIL)).unwrap();
    let mut args: Vec<String> = [
        "attest",
        "--type",
        "slsaprovenance1",
        "--predicate",
        &predicate,
        "--format",
        format,
        "--signing-config",
        config,
        "--trusted-root",
        root,
        "--allow-http",
        "127.0.0.1",
        "--sigstore-timeout",
        "10s",
        &image.reference,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(ctx.registry.cli_args());
    let env = [
        ("SIGSTORE_ID_TOKEN", token.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", ""),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", ""),
    ];
    let run = Run::from_output(&run_imgate(&args, &env, None).expect("imgate runs"));
    assert_eq!(run.code, 0, "keyless attest {format}: {run:?}");
    assert_eq!(run.stdout.trim(), image.pinned());

    let issuer = sigstore.issuer();
    let check = |identity: &str| -> Vec<String> {
        [
            "--type",
            PROVENANCE,
            "--tlog",
            "required",
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer",
            &issuer,
            "--trusted-root",
            root,
            &image.reference,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = check(EMAIL);
    let ok = ctx.assert_verified(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let statement = &ok["statements"][0];
    assert_eq!(statement["source"]["store"], format);
    assert_eq!(statement["signer"]["kind"], "keyless");
    assert_eq!(statement["signer"]["identity"], EMAIL);
    let args = check("intruder@imgate.test");
    ctx.assert_denied(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &format!("certificate identity \"{EMAIL}\" does not match"),
    );
}
