//! The admission webhook (the real binary over TLS) admits what `imgate
//! sign` made with the private Sigstore, under a policy that names both a
//! keyless authority and a key and leaves `tlog` at its default: a keyless
//! legacy signature (Rekor v1), a keyless bundle (Rekor v2), and a key
//! signature logged with `--tlog-upload`; an unsigned image is denied.

use imgate_tests::webhook::{generate_certs, pod, review, Webhook, WebhookOptions};

use super::keys::PASSWORD;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_admits_keyless_and_logged_key_signatures_with_the_default_tlog() {
    let ctx = tokio::task::spawn_blocking(|| Ctx::new("admit-keyless-legacy"))
        .await
        .unwrap();
    let (private, public) = ctx.key_pair();
    let v2 = ctx.v2_config();
    let v1 = ctx.sigstore.signing_config_path().display().to_string();
    let token = ctx.token();
    let keyless_bundle = ctx.push("admit-keyless-bundle", "v2");
    let logged_key = ctx.push("admit-key", "v3");
    let unsigned = ctx.push("admit-unsigned", "v4");

    let signings: [(&str, &str, Vec<&str>); 3] = [
        (&ctx.image.reference, &v1, vec!["--identity-token", &token]),
        (
            &keyless_bundle.reference,
            &v2,
            vec!["--identity-token", &token, "--format", "bundle"],
        ),
        (
            &logged_key.reference,
            &v1,
            vec!["--key", &private, "--tlog-upload"],
        ),
    ];
    for (image, config, args) in &signings {
        let run = ctx.sign_image(image, config, args, &[("IMGATE_PASSWORD", PASSWORD)]);
        assert_eq!(run.code, 0, "{image}: {run:?}");
    }

    let host = ctx.registry.host();
    let policy = ctx.path("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "mode: enforce\n\
             onRegistryError: deny\n\
             trustRoot: {root}\n\
             trustedRegistries: [\"{host}/team/**\"]\n\
             registries:\n  \"{host}\": {{http: true}}\n\
             rules:\n  - name: team\n    images: [\"{host}/team/**\"]\n    keys: [{{file: {public}}}]\n    keyless:\n      - subject: {EMAIL:?}\n        issuer: {issuer:?}\n",
            root = ctx.sigstore.trusted_root_path().display(),
            issuer = ctx.sigstore.issuer(),
        ),
    )
    .unwrap();
    let certs = ctx.path("certs");
    generate_certs(&certs, false).unwrap();
    let webhook = Webhook::start(&WebhookOptions::new(&policy, &certs)).unwrap();
    let client = webhook.client(false).unwrap();
    for (image, allowed) in [
        (&ctx.image, true),
        (&keyless_bundle, true),
        (&logged_key, true),
        (&unsigned, false),
    ] {
        let (status, body) = webhook
            .post(
                &client,
                "/mutate",
                &review("uid-1", "apps", &pod("apps", &[&image.reference])),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let answer = &body["response"];
        assert_eq!(answer["allowed"], allowed, "{}: {body}", image.reference);
        if allowed {
            let patch = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                answer["patch"].as_str().unwrap(),
            )
            .unwrap();
            let patch = String::from_utf8(patch).unwrap();
            assert!(
                patch.contains(&image.digest),
                "pinned to the verified digest: {patch}"
            );
        }
    }
}
