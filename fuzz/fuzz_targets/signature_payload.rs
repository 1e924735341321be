//! Signature documents: the simple-signing payload, the Sigstore bundle with
//! its DSSE envelope and in-toto statement, and the OCI manifests that carry
//! them never panic when parsed from arbitrary bytes (they come from any
//! registry). What parses round-trips: a payload or statement rebuilt from
//! the parsed fields parses to the same fields, a parsed bundle serialises
//! to JSON that parses again to the same envelope.
//!
//! The first byte picks an extra path: odd values also treat the rest as
//! an in-toto statement and wrap it in a bundle with imgate's own builder,
//! so the fuzzer reaches the statement checks without having to write valid
//! base64 inside JSON.
#![no_main]

use imgate_core::digest::Digest;
use imgate_core::oci::{ImageIndex, ImageManifest};
use imgate_core::signature::bundle::{self, Bundle, Statement};
use imgate_core::signature::{legacy, payload};
use libfuzzer_sys::fuzz_target;

fn check_payload(data: &[u8]) {
    let Ok(parsed) = payload::parse(data) else {
        return;
    };
    let Ok(digest) = Digest::parse(&parsed.manifest_digest) else {
        return;
    };
    let rebuilt = payload::build(&parsed.docker_reference, &digest, &parsed.optional);
    let again = payload::parse(&rebuilt)
        .unwrap_or_else(|err| panic!("rebuilt payload does not parse: {err}"));
    assert_eq!(again.docker_reference, parsed.docker_reference);
    assert_eq!(again.manifest_digest, digest.as_str());
    assert_eq!(again.kind, payload::SIMPLE_SIGNING_TYPE);
    assert_eq!(again.optional, parsed.optional);
}

fn check_statement(statement: &Statement) {
    let _ = statement.is_in_toto();
    for subject in &statement.subject {
        let annotations = subject.annotation_strings();
        let Some(hex) = subject.digest.get("sha256") else {
            continue;
        };
        let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
            continue;
        };
        assert!(subject.names(&digest));
        // imgate's own statement for that subject reads back as naming it.
        let built = bundle::build_statement(&digest, &annotations);
        let again: Statement = serde_json::from_slice(&built)
            .unwrap_or_else(|err| panic!("built statement does not parse: {err}"));
        assert!(again.is_in_toto());
        assert_eq!(again.predicate_type, bundle::COSIGN_SIGN_PREDICATE);
        assert_eq!(again.subject.len(), 1);
        assert!(again.subject[0].names(&digest));
        assert_eq!(again.subject[0].annotation_strings(), annotations);
    }
}

fn check_bundle(data: &[u8]) {
    let Ok(parsed) = bundle::parse_bundle(data) else {
        return;
    };
    if let Some(envelope) = &parsed.dsse_envelope {
        if let Ok(payload) = envelope.payload_bytes() {
            let pae = envelope
                .pae()
                .unwrap_or_else(|err| panic!("payload decodes but PAE fails: {err}"));
            assert!(pae.ends_with(&payload));
            assert!(pae.starts_with(b"DSSEv1 "));
        }
        if let Ok(statement) = envelope.statement() {
            check_statement(&statement);
        }
    }
    let json = serde_json::to_vec(&parsed)
        .unwrap_or_else(|err| panic!("parsed bundle does not serialise: {err}"));
    let again: Bundle = bundle::parse_bundle(&json)
        .unwrap_or_else(|err| panic!("serialised bundle does not parse: {err}"));
    assert_eq!(again.media_type, parsed.media_type);
    let payloads = |b: &Bundle| {
        b.dsse_envelope.as_ref().map(|e| {
            (
                e.payload.clone(),
                e.payload_type.clone(),
                e.signatures.len(),
            )
        })
    };
    assert_eq!(payloads(&again), payloads(&parsed));
}

fn check_manifests(data: &[u8]) {
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) {
        for layer in &manifest.layers {
            let _ = legacy::layer_signature(layer);
            assert!(legacy::has_layer(&manifest, layer));
        }
        // Appending a layer already present changes nothing.
        if let Some(layer) = manifest.layers.first() {
            assert!(legacy::with_layer(Some(&manifest), layer.clone()).is_none());
        }
    }
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        if let Some(entry) = index.manifests.first().cloned() {
            assert!(bundle::append_referrer(Some(index), entry).is_none());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    check_payload(rest);
    check_bundle(rest);
    check_manifests(rest);
    if let Ok(statement) = serde_json::from_slice::<Statement>(rest) {
        check_statement(&statement);
    }
    if mode % 2 == 1 {
        let wrapped = bundle::build_bundle(rest, b"not a signature", "hint");
        let parsed = bundle::parse_bundle(&wrapped)
            .unwrap_or_else(|err| panic!("imgate's own bundle does not parse: {err}"));
        let envelope = parsed
            .dsse_envelope
            .unwrap_or_else(|| panic!("imgate's own bundle has no envelope"));
        assert_eq!(
            envelope.payload_bytes().ok().as_deref(),
            Some(rest),
            "payload does not survive the envelope"
        );
        if let Ok(statement) = envelope.statement() {
            check_statement(&statement);
        }
    }
});
