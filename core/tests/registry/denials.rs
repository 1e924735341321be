//! Errors someone who pushes to a repository can provoke must deny, not
//! fail open: each case here is either a `Verdict::Denied` naming what is
//! wrong or an error that `is_unavailable()` does not excuse. Only a registry
//! that cannot be reached, times out, or answers 5xx/429 is unavailable.

use std::collections::BTreeMap;

use imgate_core::oci;
use imgate_core::registry::{
    ClientConfig, Credentials, RegistryClient, RegistryError, RegistrySettings, MAX_BLOB_SIZE,
};
use imgate_core::signature::{
    sign, signature_tag, verify, SignOptions, Unmet, Verdict, VerifyError,
};
use imgate_core::{Digest, ImageRef};
use imgate_keys::SigningKey;

use crate::fake::{bounded, start, TOKEN_PASSWORD, TOKEN_USER};
use crate::signatures::{req, Fake};

#[tokio::test]
async fn a_missing_tag_is_an_answer_not_an_outage() {
    let f = Fake::start().await;
    let image = f.server.image("team/app:never-pushed");
    let err = bounded(f.client.resolve(&image)).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(!err.is_unavailable(), "a 404 must not fail open: {err}");
    // A digest the registry lacks: no signature can exist for it either.
    let missing = image.pinned(Digest::sha256(b"never pushed"));
    let verdict = bounded(verify(&f.client, &missing, &req(&SigningKey::generate())))
        .await
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Denied { unmet, .. } if matches!(unmet[..], [Unmet::NoSignatures { .. }])),
        "{verdict:?}"
    );
}

/// Replaces the layers of `image`'s `.sig` manifest by `layers`.
async fn rewrite_sig_layers(f: &Fake, image: &ImageRef, layers: Vec<oci::Descriptor>) {
    let tag = signature_tag(image.digest.as_ref().unwrap());
    let fetched = f.client.get_manifest(image, &tag).await.unwrap();
    let mut m: oci::ImageManifest = serde_json::from_slice(&fetched.bytes).unwrap();
    m.layers = layers;
    let bytes = serde_json::to_vec(&m).unwrap();
    f.client
        .put_manifest(image, &tag, oci::OCI_MANIFEST, &bytes)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_oversized_signature_blob_denies() {
    let f = Fake::start().await;
    let (image, key) = f.signed_image("team/app", "bomb").await;
    let tag = signature_tag(image.digest.as_ref().unwrap());
    let fetched = f.client.get_manifest(&image, &tag).await.unwrap();
    let m: oci::ImageManifest = serde_json::from_slice(&fetched.bytes).unwrap();
    let good = m.layers[0].clone();

    // A blob over every cap, stored as is; the layer pointing at it carries
    // the real signature annotation and, first, an honest size.
    let big = vec![b'x'; MAX_BLOB_SIZE + 1];
    let big_digest = Digest::sha256(&big);
    f.server
        .registry
        .store
        .lock()
        .unwrap()
        .blobs
        .insert(big_digest.to_string(), big.clone());
    let mut bomb = good.clone();
    bomb.digest = big_digest.clone();
    bomb.size = big.len() as u64;
    // Then a descriptor that lies about its size: the cap still holds.
    let mut liar = bomb.clone();
    liar.size = 100;
    for layer in [bomb, liar] {
        rewrite_sig_layers(&f, &image, vec![layer]).await;
        let verdict = bounded(verify(&f.client, &image, &req(&key))).await;
        let Ok(Verdict::Denied { unmet, .. }) = verdict else {
            panic!("an oversized signature must deny: {verdict:?}");
        };
        assert!(
            matches!(&unmet[..], [Unmet::TooLarge { digest, .. }] if *digest == big_digest),
            "{unmet:?}"
        );
    }
    // The honest layer next to the bomb still verifies.
    let mut bomb = good.clone();
    bomb.digest = big_digest;
    rewrite_sig_layers(&f, &image, vec![bomb, good]).await;
    assert!(bounded(verify(&f.client, &image, &req(&key)))
        .await
        .unwrap()
        .is_verified());
}

#[tokio::test]
async fn a_sha512_digest_cannot_be_verified_and_says_so() {
    let f = Fake::start().await;
    let image = f
        .server
        .image(&format!("team/app@sha512:{}", "ab".repeat(64)));
    let verdict = bounded(verify(&f.client, &image, &req(&SigningKey::generate())))
        .await
        .unwrap();
    let Verdict::Denied { unmet, .. } = verdict else {
        panic!("{verdict:?}");
    };
    assert!(
        matches!(unmet[..], [Unmet::UnsupportedDigest { .. }]),
        "{unmet:?}"
    );
    let text = unmet[0].to_string();
    assert!(
        text.contains("cannot be verified") && text.contains("sha512"),
        "{text}"
    );
}

#[tokio::test]
async fn an_upper_case_host_gets_its_registry_settings_and_credentials() {
    let f = Fake::start().await;
    let image = f.image("team/app", "caps").await;
    let key = SigningKey::generate();
    let port = f.server.registry.port;
    // The operator configured `localhost:<port>` as plain HTTP with
    // credentials; the pod spec writes the host in upper case.
    let client = RegistryClient::new(ClientConfig {
        registries: BTreeMap::from([(
            format!("localhost:{port}"),
            RegistrySettings {
                http: true,
                ca_file: None,
            },
        )]),
        credentials: BTreeMap::from([(
            format!("localhost:{port}"),
            Credentials {
                username: TOKEN_USER.into(),
                password: TOKEN_PASSWORD.into(),
            },
        )]),
        use_docker_config: false,
        retries: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    // Signed under the lower-case name (the payload names that repository).
    let lower = ImageRef::parse(&format!("localhost:{port}/team/app:caps"))
        .unwrap()
        .pinned(image.digest.clone().unwrap());
    sign(&client, &lower, &key, &SignOptions::default())
        .await
        .unwrap();
    let upper = ImageRef::parse(&format!("LOCALHOST:{port}/team/app:caps")).unwrap();
    let resolved = bounded(client.resolve(&upper)).await.unwrap();
    assert_eq!(resolved.pinned.digest, image.digest);
    let verdict = bounded(verify(&client, &resolved.pinned, &req(&key)))
        .await
        .unwrap();
    assert!(verdict.is_verified(), "{verdict:?}");
    // Repository matching compares the host case-insensitively too.
    let mut strict = req(&key);
    strict.match_repository = true;
    assert!(bounded(verify(&client, &resolved.pinned, &strict))
        .await
        .unwrap()
        .is_verified());
    // Credentials for `localhost:<port>` answer a Basic challenge for `LOCALHOST:<port>`.
    let basic = ImageRef::parse(&format!("LOCALHOST:{port}/basic:v1")).unwrap();
    bounded(client.resolve(&basic)).await.unwrap();
}

#[tokio::test]
async fn only_an_unreachable_registry_is_unavailable() {
    let s = start().await;
    let client = RegistryClient::new(ClientConfig {
        retries: 0,
        ..s.config()
    })
    .unwrap();
    let image =
        s.image("team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000");
    s.registry.set_fail(true);
    let err = bounded(verify(&client, &image, &req(&SigningKey::generate())))
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::Registry(_)), "{err}");
    assert!(err.is_unavailable(), "a 500 is an outage: {err}");
}
