// Tests: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::serve::{choose, Fault};
use super::*;

fn logged(start_ms: u64, end_ms: u64, connection: u64) -> Logged {
    Logged {
        request: format!("GET /{start_ms}"),
        connection,
        protocol: "h2",
        status: 200,
        start_ms,
        end_ms,
    }
}

#[test]
fn in_turn_counts_the_requests_waited_for_one_after_another() {
    // A tag, three signature lookups at once, then the signature blob,
    // answered out of order.
    let trace = [
        logged(28, 57, 1),
        logged(0, 28, 1),
        logged(56, 85, 2),
        logged(28, 56, 1),
        logged(29, 56, 3),
    ];
    assert_eq!(in_turn(&trace), 3);
    // Requests that overlap count once.
    assert_eq!(in_turn(&[logged(0, 30, 1), logged(1, 29, 1)]), 1);
    assert_eq!(in_turn(&[]), 0);
}

#[test]
fn fault_rates_are_close_to_what_was_asked() {
    let faults = Faults {
        reset_per_mille: 20,
        error_per_mille: 30,
        slow_per_mille: 100,
        ..Faults::default()
    };
    let (mut resets, mut errors, mut slow) = (0, 0, 0);
    for sequence in 0..100_000 {
        match choose(sequence, &faults) {
            Fault::Reset => resets += 1,
            Fault::Error => errors += 1,
            Fault::Slow => slow += 1,
            Fault::None => {}
        }
    }
    // 2%, 3% and 10% of 100,000, within 10% of each.
    assert!((1800..=2200).contains(&resets), "{resets}");
    assert!((2700..=3300).contains(&errors), "{errors}");
    assert!((9000..=11000).contains(&slow), "{slow}");
    assert_eq!(choose(7, &Faults::default()), Fault::None);
}

/// The TLS front: a push through it (its upload `Location`s must come
/// back through it, over https), then three requests at once from an
/// HTTP/2 client on one connection, then a dropped request resetting
/// only its stream.
#[tokio::test(flavor = "multi_thread")]
async fn tls_front_multiplexes_http2_streams_on_one_connection() {
    use crate::{ImageBuilder, PushWith, Registry, Variant};
    use imgate_core::registry::RegistryClient;
    use imgate_core::signature::{self, SignOptions};
    use imgate_core::ImageRef;
    use imgate_keys::SigningKey;
    let registry = Registry::start(Variant::Http).await.unwrap();
    let proxy = FaultProxy::start_with(&registry.url(""), Faults::default(), Front::Tls).unwrap();
    assert!(proxy.url().starts_with("https://127.0.0.1:"));
    assert_eq!(proxy.cli_args()[0], "--registry-ca");
    let ca = proxy.ca_file().unwrap().to_path_buf();
    let image = ImageBuilder::new("fault-proxy-tls")
        .image()
        .push(&registry, "self/tls", "v1", PushWith::Http)
        .await
        .unwrap();
    // Signing uploads a blob and a manifest through the proxy.
    let signer = RegistryClient::new(proxy.client_config()).unwrap();
    let reference =
        ImageRef::parse(&format!("{}/self/tls:v1@{}", proxy.host(), image.digest)).unwrap();
    signature::sign(
        &signer,
        &reference,
        &SigningKey::generate(),
        &SignOptions::default(),
    )
    .await
    .unwrap();
    let pushed = proxy.log();
    assert!(
        pushed.iter().any(|l| l.request.starts_with("PUT ")
            && l.request.contains("/blobs/uploads/")
            && l.status == 201),
        "{pushed:?}"
    );
    assert!(pushed.iter().all(|l| l.protocol == "h2"), "{pushed:?}");

    proxy.reset_counts();
    proxy.set_faults(Faults {
        delay: Duration::from_millis(200),
        ..Faults::default()
    });
    let pem = std::fs::read(&ca).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let url = format!("{}/v2/self/tls/manifests/v1", proxy.url());
    let get = || {
        client
            .get(&url)
            .header("accept", image.media_type.as_str())
            .send()
    };
    // One request first, so the three after it find an HTTP/2
    // connection in the client's pool (a client opening three at once
    // before any has negotiated would open three).
    let first = get().await.unwrap();
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    first.bytes().await.unwrap();
    let started = Instant::now();
    let answers = futures::future::join_all([get(), get(), get()]).await;
    let elapsed = started.elapsed();
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 200);
        let body = answer.bytes().await.unwrap();
        let digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
        );
        assert_eq!(digest, image.digest);
    }
    // Concurrent on the proxy: one delay, not three.
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(550),
        "{elapsed:?}"
    );
    let counts = proxy.counts();
    assert_eq!(
        (counts.requests, counts.connections, counts.h2_connections),
        (4, 1, 1),
        "{counts:?}"
    );
    let log = proxy.log();
    assert_eq!(log.len(), 4);
    assert!(
        log.iter()
            .all(|l| l.protocol == "h2" && l.connection == log[0].connection && l.status == 200),
        "{log:?}"
    );

    // A dropped request resets its stream; the connection serves the next.
    proxy.set_faults(Faults {
        reset_per_mille: 1000,
        ..Faults::default()
    });
    assert!(get().await.is_err());
    proxy.set_faults(Faults::default());
    let answer = get().await.unwrap();
    assert_eq!(answer.status(), 200);
    let counts = proxy.counts();
    assert!(counts.resets >= 1, "{counts:?}");
    assert_eq!(counts.connections, 1, "{counts:?}");

    // A client that does not trust the proxy's CA is turned away.
    assert!(reqwest::Client::builder()
        .use_rustls_tls()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .is_err());
    // The proxy sees the client's alert on its own task: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.counts().handshake_failures == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.counts().handshake_failures, 1, "{:?}", proxy.counts());
}
