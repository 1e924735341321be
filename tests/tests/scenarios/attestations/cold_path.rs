//! The cold path of a check with attestations, through a proxy that delays
//! every registry request: `attestation::verify_with_signature` asks for
//! the `.sig` tag, the `.att` tag, the referrers (once, shared with the
//! signatures) and the image's manifest all at once, so an image with a
//! signature and an attestation costs no request waited for in turn beyond
//! what its signature alone costs. Counts from the proxy's log, which are
//! deterministic; timings only bound them.

use std::time::Duration;

use imgate_core::attestation::{self, AttestOptions, KeySigner, Wanted, WantedType};
use imgate_core::registry::RegistryClient;
use imgate_core::signature::{self, Format, Requirements, SignOptions};
use imgate_core::ImageRef;
use imgate_tests::{in_turn, FaultProxy, Faults, Front};

use super::*;

const DELAY: Duration = Duration::from_millis(100);

#[rstest::rstest]
#[case::legacy(Format::Legacy)]
#[case::bundle(Format::Bundle)]
#[tokio::test(flavor = "multi_thread")]
async fn an_attestation_costs_no_round_trip_in_turn_beyond_the_signature(#[case] format: Format) {
    let registry = Registry::start(Variant::Http).await.unwrap();
    let pushed = ImageBuilder::new("cold attest")
        .image()
        .push(&registry, "team/cold", "v1", PushWith::Http)
        .await
        .unwrap();
    let key = SigningKey::generate();
    let direct = RegistryClient::new(registry.client_config()).unwrap();
    let image = ImageRef::parse(&pushed.pinned()).unwrap();
    signature::sign(
        &direct,
        &image,
        &key,
        &SignOptions {
            format,
            annotations: BTreeMap::new(),
        },
    )
    .await
    .unwrap();
    let opts = AttestOptions {
        predicate_type: "slsaprovenance1".into(),
        predicate: serde_json::to_vec(&provenance(
            "https://github.com/example/app",
            "refs/heads/main",
        ))
        .unwrap(),
        format,
    };
    attestation::attest(&direct, &image, &KeySigner(&key), &opts)
        .await
        .unwrap();

    let proxy = FaultProxy::start_with(
        &registry.url(""),
        Faults {
            delay: DELAY,
            ..Faults::default()
        },
        Front::Plain,
    )
    .unwrap();
    let target = ImageRef::parse(&format!("{}/team/cold@{}", proxy.host(), pushed.digest)).unwrap();
    let signers = Arc::new(Requirements {
        keys: vec![key.public_key()],
        ..Requirements::default()
    });
    let wanted = Wanted {
        attestations: vec![WantedType {
            predicate_type: PROVENANCE.into(),
            signers: Arc::clone(&signers),
        }],
        limits: attestation::Limits::default(),
    };

    // The signature alone, from a cold client.
    let client = RegistryClient::new(proxy.client_config()).unwrap();
    proxy.reset_counts();
    let verdict = signature::verify(&client, &target, &signers).await.unwrap();
    assert!(verdict.is_verified(), "{verdict:?}");
    let (alone, alone_requests) = (in_turn(&proxy.log()), proxy.counts().requests);

    // The signature and the attestation, from another cold client.
    let client = RegistryClient::new(proxy.client_config()).unwrap();
    proxy.reset_counts();
    let (verdict, evidence) =
        attestation::verify_with_signature(&client, &target, &signers, &wanted)
            .await
            .unwrap();
    assert!(verdict.is_verified(), "{verdict:?}");
    assert_eq!(evidence.statements.len(), 1, "{evidence:?}");
    let log = proxy.log();
    let both = in_turn(&log);
    let requests: Vec<&str> = log.iter().map(|l| l.request.as_str()).collect();
    eprintln!(
        "{format}: signature alone {alone_requests} requests, {alone} in turn; with the attestation {} requests, {both} in turn: {requests:#?}",
        log.len()
    );
    assert_eq!(both, alone, "{requests:#?}");
    // The referrers listing was asked once, not once per reader.
    let referrers = requests
        .iter()
        .filter(|r| r.contains("/referrers/"))
        .count();
    assert_eq!(referrers, 1, "{requests:#?}");
}
