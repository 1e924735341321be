//! A request that hangs is abandoned after the per-request timeout and
//! retried while the operation's time allows, so one stuck connection (a
//! registry coming back from an outage) costs one request timeout, not the
//! whole admission deadline.

use std::time::Duration;

use imgate_core::registry::{
    ClientConfig, RegistryClient, RegistryError, DEFAULT_OPERATION_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};
use imgate_core::Digest;

use crate::fake::{bounded, start, MANIFEST};

#[test]
fn defaults_leave_room_for_a_retry_within_the_webhook_deadline() {
    let config = ClientConfig::default();
    assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(config.operation_timeout, DEFAULT_OPERATION_TIMEOUT);
    assert!(config.request_timeout * 2 < config.operation_timeout);
    assert!(config.retries >= 1);
}

#[tokio::test]
async fn a_request_that_hangs_once_is_retried_and_answers() {
    let s = start().await;
    let client = RegistryClient::new(ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..s.config()
    })
    .unwrap();
    let resolved = bounded(client.resolve(&s.image("hangonce:v1")))
        .await
        .unwrap();
    assert_eq!(
        resolved.manifest.digest,
        Digest::sha256(MANIFEST.as_bytes())
    );
    assert_eq!(
        s.registry.hits("hangonce"),
        2,
        "one hung attempt, one retry"
    );
}

#[tokio::test]
async fn timeouts_are_retried_only_while_the_operation_has_time() {
    let s = start().await;
    let client = RegistryClient::new(ClientConfig {
        request_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_millis(1000),
        retries: 10,
        ..s.config()
    })
    .unwrap();
    let err = bounded(client.resolve(&s.image("hang:v1")))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    assert!(err.is_unavailable());
    // 300 ms, then 200 ms backoff and 300 ms more fit in 1 s; a third try
    // (400 ms backoff, 300 ms) would not, however fast the machine is.
    let tries = s.registry.hits("hang");
    assert!((1..=2).contains(&tries), "{tries} attempts");
}
