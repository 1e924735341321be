//! Every way a Sigstore service (or the identity token) can fail keyless
//! signing, one test each: the signing fails with one error line that names
//! the service and its answer, exit 2, and the registry keeps exactly the
//! tags it had (no `.sig` tag, no referrers index).

use std::time::{Duration, Instant};

use rstest::rstest;

use super::*;

/// Sign keylessly under `faults` in `format`; assert the failure names
/// every one of `needles` and the registry is untouched.
fn fails(ctx: &Ctx, faults: Faults, format: &str, extra: &[&str], needles: &[&str]) -> Run {
    ctx.sigstore.set_faults(faults);
    let before = ctx.tags();
    let mut args = vec!["--format", format];
    args.extend_from_slice(extra);
    let run = ctx.sign_keyless(&args);
    run.assert_one_line_error(needles.first().copied().unwrap_or("imgate:"));
    for needle in needles {
        assert!(run.stderr.contains(needle), "expected {needle:?}: {run:?}");
    }
    assert_eq!(ctx.tags(), before, "the registry must be untouched");
    run
}

fn with_fault(svc: Svc, fault: Fault) -> Faults {
    let mut faults = Faults::default();
    faults.service.insert(svc, fault);
    faults
}

/// The service's name as imgate writes it, and the path called.
fn named(svc: Svc) -> (&'static str, &'static str) {
    match svc {
        Svc::Fulcio => ("Fulcio at", "/api/v2/signingCert"),
        Svc::RekorV1 => ("Rekor at", "/api/v1/log/entries"),
        Svc::RekorV2 => ("Rekor at", "/api/v2/log/entries"),
        Svc::Tsa => ("the timestamp authority at", "/api/v1/timestamp"),
        Svc::Oidc => ("GitHub Actions' token endpoint at", "/actions/token"),
    }
}

#[rstest]
#[case::fulcio(Svc::Fulcio)]
#[case::rekor(Svc::RekorV1)]
#[case::tsa(Svc::Tsa)]
fn a_service_that_is_down_fails_the_signing(#[case] svc: Svc) {
    let ctx = Ctx::new("down");
    ctx.sigstore.stop(svc);
    let (name, path) = named(svc);
    let run = fails(
        &ctx,
        Faults::default(),
        "legacy",
        &[],
        &[name, path, "cannot connect"],
    );
    assert!(run.stderr.contains(&ctx.sigstore.url(svc)), "{run:?}");
    assert_eq!(ctx.sigstore.logged(false), 0, "nothing reaches the log");
}

#[rstest]
#[case::fulcio(Svc::Fulcio)]
#[case::rekor(Svc::RekorV1)]
#[case::tsa(Svc::Tsa)]
fn a_service_slower_than_the_budget_fails_the_signing_in_time(#[case] svc: Svc) {
    let ctx = Ctx::new("slow");
    let (name, path) = named(svc);
    let started = Instant::now();
    let run = fails(
        &ctx,
        with_fault(svc, Fault::Delay(Duration::from_secs(30))),
        "bundle",
        &["--sigstore-timeout", "2s"],
        &[name, path, "did not answer within 2s"],
    );
    let took = started.elapsed();
    println!("{svc:?} stalled 30 s, budget 2 s: imgate gave up after {took:?}");
    assert!(
        took < Duration::from_secs(12),
        "the budget holds: took {took:?}: {run:?}"
    );
}

#[rstest]
#[case::fulcio_4xx(Svc::Fulcio, 403)]
#[case::fulcio_5xx(Svc::Fulcio, 500)]
#[case::rekor_4xx(Svc::RekorV1, 400)]
#[case::rekor_5xx(Svc::RekorV1, 500)]
#[case::tsa_4xx(Svc::Tsa, 400)]
#[case::tsa_5xx(Svc::Tsa, 500)]
fn a_service_error_answer_is_quoted(#[case] svc: Svc, #[case] status: u16) {
    let ctx = Ctx::new("status");
    let (name, path) = named(svc);
    let body = format!("the harness says no ({status})");
    let code = status.to_string();
    fails(
        &ctx,
        with_fault(svc, Fault::Status(status, body.clone())),
        "legacy",
        &[],
        &[name, path, &format!("answered {code}"), &body],
    );
    assert_eq!(ctx.sigstore.calls(svc), 1, "4xx and 500 are not retried");
}

#[test]
fn unavailable_answers_are_retried_within_the_budget() {
    let ctx = Ctx::new("unavailable");
    let run = fails(
        &ctx,
        with_fault(Svc::Fulcio, Fault::Status(503, "busy".into())),
        "legacy",
        &[],
        &["Fulcio at", "answered 503", "attempt(s)"],
    );
    let calls = ctx.sigstore.calls(Svc::Fulcio);
    println!("Fulcio answered 503 {calls} times within the 5 s budget");
    assert!((2..=4).contains(&calls), "{calls} calls: {run:?}");
}

#[test]
fn a_certificate_for_another_identity_fails_before_anything_is_logged() {
    let ctx = Ctx::new("wrong-identity");
    let faults = Faults {
        fulcio_identity: Some("mallory@evil.test".into()),
        ..Faults::default()
    };
    fails(
        &ctx,
        faults,
        "legacy",
        &[],
        &["Fulcio at", "another identity", "mallory@evil.test", EMAIL],
    );
    assert_eq!(ctx.sigstore.calls(Svc::RekorV1), 0);
    assert_eq!(ctx.sigstore.calls(Svc::Tsa), 0);
}

#[rstest]
#[case::v1_legacy(false, "legacy")]
#[case::v1_bundle(false, "bundle")]
#[case::v2_bundle(true, "bundle")]
fn a_log_entry_for_another_body_fails_the_self_check(#[case] v2: bool, #[case] format: &str) {
    let ctx = Ctx::new("other-body");
    let config = ctx
        .sigstore
        .write_signing_config(
            "config.json",
            ConfigSpec {
                rekor_v1: !v2,
                rekor_v2: v2,
                tsa: true,
            },
        )
        .unwrap();
    ctx.sigstore.set_faults(Faults {
        rekor_other_body: true,
        ..Faults::default()
    });
    let before = ctx.tags();
    let token = ctx.token();
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &["--format", format, "--identity-token", &token],
        &[],
    );
    run.assert_one_line_error("self-check of the new signature failed");
    assert!(run.stderr.contains("nothing was pushed"), "{run:?}");
    assert_eq!(ctx.sigstore.logged(v2), 1, "the log was asked once");
    assert_eq!(ctx.tags(), before);
}

#[test]
fn a_timestamp_from_an_untrusted_authority_fails_before_anything_is_logged() {
    let ctx = Ctx::new("untrusted-tsa");
    let faults = Faults {
        tsa_untrusted: true,
        ..Faults::default()
    };
    fails(
        &ctx,
        faults,
        "bundle",
        &[],
        &[
            "the timestamp authority at",
            "no timestamp authority of trusted root",
        ],
    );
    assert_eq!(ctx.sigstore.calls(Svc::RekorV1), 0);
}

#[rstest]
#[case::before(-3600)]
#[case::after(3600)]
fn a_timestamp_outside_the_certificate_window_fails_before_anything_is_logged(#[case] offset: i64) {
    let ctx = Ctx::new("mistimed-tsa");
    let faults = Faults {
        tsa_clock_offset: offset,
        ..Faults::default()
    };
    fails(
        &ctx,
        faults,
        "legacy",
        &[],
        &[
            "the timestamp authority at",
            "outside the signing certificate's validity",
        ],
    );
    assert_eq!(ctx.sigstore.calls(Svc::RekorV1), 0);
}

/// Sign with `token` in SIGSTORE_ID_TOKEN; the run, with the registry untouched.
fn sign_with_token(ctx: &Ctx, token: &str) -> Run {
    let before = ctx.tags();
    let config = ctx.sigstore.signing_config_path();
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &[],
        &[("SIGSTORE_ID_TOKEN", token)],
    );
    assert_eq!(ctx.tags(), before, "the registry must be untouched");
    run
}

#[test]
fn a_token_for_another_audience_is_refused_naming_both() {
    let ctx = Ctx::new("wrong-audience");
    let mut spec = TokenSpec::email(EMAIL);
    spec.audience = "api://someone-else".into();
    let run = sign_with_token(&ctx, &ctx.sigstore.token(&spec).unwrap());
    run.assert_one_line_error("identity token from SIGSTORE_ID_TOKEN");
    assert!(
        run.stderr.contains("api://someone-else") && run.stderr.contains("\"sigstore\""),
        "{run:?}"
    );
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), 0);
}

#[test]
fn an_expired_token_is_refused() {
    let ctx = Ctx::new("expired-token");
    let mut spec = TokenSpec::email(EMAIL);
    spec.expires_in = -3600;
    let run = sign_with_token(&ctx, &ctx.sigstore.token(&spec).unwrap());
    run.assert_one_line_error("identity token from SIGSTORE_ID_TOKEN: expired at");
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), 0);
}

#[test]
fn a_token_fulcio_does_not_trust_gets_fulcios_answer() {
    let ctx = Ctx::new("forged-token");
    let stranger = block_on(PrivateSigstore::start()).unwrap();
    let forged = stranger.token(&TokenSpec::email(EMAIL)).unwrap();
    let run = sign_with_token(&ctx, &forged);
    run.assert_one_line_error("Fulcio at");
    assert!(
        run.stderr.contains("answered 401") && run.stderr.contains("identity token"),
        "{run:?}"
    );
    assert_eq!(ctx.sigstore.calls(Svc::RekorV1), 0);
}

#[test]
fn github_actions_refusing_the_request_token_is_named() {
    let ctx = Ctx::new("gha-refused");
    let before = ctx.tags();
    let config = ctx.sigstore.signing_config_path();
    let url = ctx.sigstore.actions_token_url();
    let run = ctx.sign_with(
        config.to_str().unwrap(),
        &[],
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "not-the-right-one"),
        ],
    );
    run.assert_one_line_error("GitHub Actions' token endpoint at");
    assert!(run.stderr.contains("answered 401"), "{run:?}");
    assert_eq!(ctx.tags(), before);
}

#[test]
fn plain_http_services_need_allow_http() {
    let ctx = Ctx::new("no-allow-http");
    let before = ctx.tags();
    let config = ctx.sigstore.signing_config_path();
    let root = ctx.sigstore.trusted_root_path();
    let token = ctx.token();
    let run = ctx.run(
        &[
            "sign",
            "--signing-config",
            config.to_str().unwrap(),
            "--trusted-root",
            root.to_str().unwrap(),
            "--identity-token",
            &token,
            &ctx.image.reference,
        ],
        &[],
    );
    run.assert_one_line_error("Fulcio URL http://127.0.0.1");
    assert!(
        run.stderr.contains("is not https") && run.stderr.contains("--allow-http"),
        "{run:?}"
    );
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), 0);
    assert_eq!(ctx.tags(), before);
}

#[test]
fn an_https_service_is_reached_over_tls_only() {
    // The services speak plain HTTP; named as https they must fail the TLS
    // handshake, never fall back.
    let ctx = Ctx::new("https-only");
    let before = ctx.tags();
    let mut config = ctx.sigstore.signing_config_json(ConfigSpec {
        rekor_v1: true,
        rekor_v2: false,
        tsa: true,
    });
    let fulcio = config["caUrls"][0]["url"]
        .as_str()
        .unwrap()
        .replace("http://", "https://");
    config["caUrls"][0]["url"] = fulcio.clone().into();
    let path = ctx.path("https.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let token = ctx.token();
    let run = ctx.sign_with(
        path.to_str().unwrap(),
        &["--identity-token", &token, "--sigstore-timeout", "2s"],
        &[],
    );
    run.assert_one_line_error(&format!("Fulcio at {fulcio}"));
    assert_eq!(
        ctx.sigstore.calls(Svc::Fulcio),
        0,
        "no plain-HTTP request was made"
    );
    assert_eq!(ctx.tags(), before);
}

#[test]
fn a_private_instance_behind_its_own_ca_needs_sigstore_ca() {
    let ctx = Ctx::new_tls("sigstore-ca");
    let before = ctx.tags();
    let config = ctx.sigstore.signing_config_path();
    let root = ctx.sigstore.trusted_root_path();
    let token = ctx.token();
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "sign",
            "--signing-config",
            config.to_str().unwrap(),
            "--trusted-root",
            root.to_str().unwrap(),
            "--identity-token",
            &token,
            "--sigstore-timeout",
            "5s",
        ];
        args.extend_from_slice(extra);
        args.push(&ctx.image.reference);
        ctx.run(&args, &[])
    };

    // The system roots do not know the CA: refused at once (a refused
    // certificate is not retried), naming Fulcio and the option.
    let run = sign(&[]);
    run.assert_one_line_error("Fulcio at https://127.0.0.1");
    assert!(
        run.stderr.contains("UnknownIssuer") && run.stderr.contains("--sigstore-ca"),
        "{run:?}"
    );
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), 0, "no request got through");
    assert_eq!(ctx.tags(), before);

    // A CA file that holds no certificate: named, before any call.
    let calls = ctx.sigstore.calls(Svc::Fulcio);
    let bogus = ctx.path("bogus.pem");
    std::fs::write(&bogus, "not a certificate\n").unwrap();
    let run = sign(&["--sigstore-ca", bogus.to_str().unwrap()]);
    run.assert_one_line_error(bogus.to_str().unwrap());
    assert!(run.stderr.contains("no PEM certificates"), "{run:?}");
    assert_eq!(ctx.sigstore.calls(Svc::Fulcio), calls);
    assert_eq!(ctx.tags(), before);

    // With the CA named, every service is reached over TLS.
    let ca = ctx.sigstore.ca_path();
    let run = sign(&["--sigstore-ca", ca.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(ctx.sigstore.logged(false), 1);
    assert_eq!(ctx.sigstore.calls(Svc::Tsa), 1);
    ctx.assert_verified_keyless("legacy");
}
