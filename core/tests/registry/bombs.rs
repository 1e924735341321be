//! What an image's signatures can make imgate read is bounded: payload and
//! bundle sizes (refused from the descriptor before any request, and cut off
//! while reading when the descriptor lies), layers per `.sig` manifest and
//! referrers per image (the rest reported, never passing), and verification
//! stops reading at the first signature that satisfies.

use std::collections::BTreeMap;

use imgate_core::oci;
use imgate_core::signature::{
    bundle, sign, signature_tag, verify, Format, SignOptions, Unmet, Verdict, MAX_PAYLOAD_SIZE,
    MAX_REFERRERS, MAX_SIGNATURE_LAYERS,
};
use imgate_core::{Digest, ImageRef};
use imgate_keys::SigningKey;

use crate::fake::bounded;
use crate::signatures::{req, Fake};

/// The `.sig` manifest of `image`.
async fn sig_manifest(f: &Fake, image: &ImageRef) -> oci::ImageManifest {
    let tag = signature_tag(image.digest.as_ref().unwrap());
    let fetched = f.client.get_manifest(image, &tag).await.unwrap();
    serde_json::from_slice(&fetched.bytes).unwrap()
}

/// Replaces the layers of `image`'s `.sig` manifest by `layers`.
async fn set_sig_layers(f: &Fake, image: &ImageRef, layers: Vec<oci::Descriptor>) {
    let tag = signature_tag(image.digest.as_ref().unwrap());
    let mut m = sig_manifest(f, image).await;
    m.layers = layers;
    let bytes = serde_json::to_vec(&m).unwrap();
    f.client
        .put_manifest(image, &tag, oci::OCI_MANIFEST, &bytes)
        .await
        .unwrap();
}

async fn denied(f: &Fake, image: &ImageRef, key: &SigningKey) -> Vec<Unmet> {
    match bounded(verify(&f.client, image, &req(key))).await {
        Ok(Verdict::Denied { unmet, .. }) => unmet,
        other => panic!("expected a denial: {other:?}"),
    }
}

#[tokio::test]
async fn twelve_layers_on_one_huge_blob_are_refused_unread() {
    let f = Fake::start().await;
    let (image, key) = f.signed_image("team/app", "bomb").await;
    let good = sig_manifest(&f, &image).await.layers[0].clone();
    let big = vec![b'x'; 64 << 20];
    let big_digest = Digest::sha256(&big);
    f.server
        .registry
        .store
        .lock()
        .unwrap()
        .blobs
        .insert(big_digest.to_string(), big);
    let mut bomb = good.clone();
    bomb.digest = big_digest.clone();
    bomb.size = 64 << 20;
    set_sig_layers(&f, &image, vec![bomb.clone(); 12]).await;

    f.server.registry.reset_counts();
    let unmet = denied(&f, &image, &key).await;
    assert_eq!(unmet.len(), 12, "{unmet:?}");
    assert!(unmet.iter().all(|u| matches!(u,
        Unmet::TooLarge { size: Some(size), limit, .. }
            if *size == 64 << 20 && *limit == MAX_PAYLOAD_SIZE as u64)));
    assert_eq!(
        f.server.registry.hits("GET blob"),
        0,
        "an honest descriptor over the cap is refused before any request"
    );

    // Descriptors that lie about the size: each read stops at the cap.
    bomb.size = 300;
    set_sig_layers(&f, &image, vec![bomb; 12]).await;
    let unmet = denied(&f, &image, &key).await;
    assert_eq!(unmet.len(), 12, "{unmet:?}");
    assert!(
        unmet.iter().all(|u| matches!(u, Unmet::TooLarge { .. })),
        "{unmet:?}"
    );
}

#[tokio::test]
async fn a_blob_that_never_ends_is_cut_off_at_the_cap() {
    let f = Fake::start().await;
    let (image, key) = f.signed_image("endless", "v1").await;
    let unmet = denied(&f, &image, &key).await;
    assert!(
        matches!(&unmet[..], [Unmet::TooLarge { size: None, .. }]),
        "{unmet:?}"
    );
    assert_eq!(f.server.registry.hits("endless"), 1);
}

#[tokio::test]
async fn layers_past_the_cap_are_reported_and_never_pass() {
    let f = Fake::start().await;
    let image = f.image("team/app", "many").await;
    let (key, stranger) = (SigningKey::generate(), SigningKey::generate());
    sign(&f.client, &image, &stranger, &SignOptions::default())
        .await
        .unwrap();
    let wrong = sig_manifest(&f, &image).await.layers[0].clone();
    let opts = SignOptions {
        format: Format::Legacy,
        annotations: BTreeMap::from([("by".to_string(), "key".to_string())]),
    };
    sign(&f.client, &image, &key, &opts).await.unwrap();
    let good = sig_manifest(&f, &image).await.layers[1].clone();

    // The good signature listed past the cap is not read.
    let mut layers = vec![wrong.clone(); MAX_SIGNATURE_LAYERS];
    layers.push(good.clone());
    set_sig_layers(&f, &image, layers).await;
    let unmet = denied(&f, &image, &key).await;
    assert!(
        unmet.contains(&Unmet::TooManySignatures {
            format: Format::Legacy,
            listed: MAX_SIGNATURE_LAYERS + 1,
            limit: MAX_SIGNATURE_LAYERS,
        }),
        "{unmet:?}"
    );
    assert_eq!(
        unmet
            .iter()
            .filter(|u| matches!(u, Unmet::WrongKey { .. }))
            .count(),
        MAX_SIGNATURE_LAYERS
    );

    // Listed first, it satisfies, and the layers after it are not all fetched.
    let mut layers = vec![good];
    layers.extend(vec![wrong; MAX_SIGNATURE_LAYERS + 4]);
    set_sig_layers(&f, &image, layers).await;
    f.server.registry.reset_counts();
    assert!(bounded(verify(&f.client, &image, &req(&key)))
        .await
        .unwrap()
        .is_verified());
    let fetched = f.server.registry.hits("GET blob");
    assert!(
        (1..=4).contains(&fetched),
        "stops at the first satisfying signature, fetched {fetched} payloads"
    );
}

#[tokio::test]
async fn referrers_past_the_cap_are_reported_and_never_pass() {
    let f = Fake::start().await;
    let image = f.image("team/app", "crowd").await;
    let digest = image.digest.clone().unwrap();
    for _ in 0..MAX_REFERRERS {
        let statement = bundle::build_statement(&digest, &BTreeMap::new());
        f.attach_statement(&image, &SigningKey::generate(), &statement)
            .await;
    }
    let key = SigningKey::generate();
    let statement = bundle::build_statement(&digest, &BTreeMap::new());
    f.attach_statement(&image, &key, &statement).await;
    let unmet = denied(&f, &image, &key).await;
    assert!(
        unmet.contains(&Unmet::TooManySignatures {
            format: Format::Bundle,
            listed: MAX_REFERRERS + 1,
            limit: MAX_REFERRERS,
        }),
        "{unmet:?}"
    );
    assert!(!unmet
        .iter()
        .any(|u| matches!(u, Unmet::NoSignatures { .. })));
}
