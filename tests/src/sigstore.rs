//! A private Sigstore for tests: its own Fulcio-style CA, CT log key and
//! Rekor key, published in a custom `trusted_root.json`, issuing what the
//! real services issue: short-lived leaf certificates with the OIDC issuer
//! extensions and an embedded SCT (RFC 6962, signed over the precertificate),
//! and `hashedrekord` log entries with a Signed Entry Timestamp.
//!
//! Every knob a tamper test needs is a field: the identity, the issuer, the
//! validity window, whether to embed an SCT, the integrated time.

use anyhow::Context;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Fulcio's OIDC issuer extensions: `.1.1` (raw string, deprecated) and
/// `.1.8` (DER UTF8String).
const OID_ISSUER_V1: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 1];
const OID_ISSUER_V2: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 8];
/// GitHub workflow repository (`.1.5`), raw string.
const OID_GITHUB_REPOSITORY: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 5];
/// RFC 6962 embedded SCT list.
const OID_SCT_LIST: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];

/// One authority of the private instance: a P-256 key.
pub(crate) struct LogKey {
    key: p256::ecdsa::SigningKey,
    spki_der: Vec<u8>,
}

impl LogKey {
    pub(crate) fn generate() -> anyhow::Result<LogKey> {
        let pair = KeyPair::generate().context("generating a log key")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&pair.serialize_der())
            .context("reading the log key")?;
        Ok(LogKey {
            key,
            spki_der: pair.public_key_der(),
        })
    }

    pub(crate) fn id(&self) -> [u8; 32] {
        Sha256::digest(&self.spki_der).into()
    }

    pub(crate) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }
}

/// The private Sigstore.
pub struct TestSigstore {
    ca_key: KeyPair,
    ca_cert: rcgen::Certificate,
    ct: LogKey,
    rekor: LogKey,
    next_serial: std::cell::Cell<u8>,
}

impl std::fmt::Debug for TestSigstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestSigstore").finish_non_exhaustive()
    }
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// The SAN: an email, or a URI when it contains `://`.
    pub identity: String,
    /// The OIDC issuer (both extensions).
    pub issuer: String,
    /// GitHub workflow repository extension, when set.
    pub github_repository: Option<String>,
    /// Validity start.
    pub not_before: OffsetDateTime,
    /// Validity end (Fulcio: ten minutes after the start).
    pub not_after: OffsetDateTime,
    /// Embed an SCT from the CT log.
    pub sct: bool,
}

impl LeafSpec {
    /// A Fulcio-like leaf valid from a minute ago for ten minutes.
    pub fn new(identity: &str, issuer: &str) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            identity: identity.to_string(),
            issuer: issuer.to_string(),
            github_repository: None,
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::minutes(9),
            sct: true,
        }
    }
}

/// A leaf certificate and its private key.
#[derive(Debug)]
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    key: p256::ecdsa::SigningKey,
}

impl Leaf {
    /// ASN.1 DER ECDSA-P256-SHA256 signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }
}

/// The annotations of a legacy keyless `.sig` layer, and its payload.
#[derive(Debug, Clone)]
pub struct LegacyLayer {
    /// The simple-signing payload bytes.
    pub payload: Vec<u8>,
    /// `dev.cosignproject.cosign/signature`.
    pub signature_b64: String,
    /// `dev.sigstore.cosign/certificate`.
    pub cert_pem: String,
    /// `dev.sigstore.cosign/chain`.
    pub chain_pem: String,
    /// `dev.sigstore.cosign/bundle`.
    pub rekor_bundle: String,
}

impl TestSigstore {
    /// A new instance with fresh keys.
    pub fn new() -> anyhow::Result<TestSigstore> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "imgate-test");
        params
            .distinguished_name
            .push(DnType::CommonName, "imgate-test-fulcio");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
        let ca_cert = params.self_signed(&ca_key).context("self-signing the CA")?;
        Ok(TestSigstore {
            ca_key,
            ca_cert,
            ct: LogKey::generate()?,
            rekor: LogKey::generate()?,
            next_serial: std::cell::Cell::new(1),
        })
    }

    /// The CA certificate, PEM (what cosign puts in the chain annotation).
    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// The instance's `trusted_root.json`: the CA, the Rekor log and the CT
    /// log, valid from 30 days ago.
    pub fn trusted_root_json(&self) -> String {
        let start = (OffsetDateTime::now_utc() - time::Duration::days(30))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "2020-01-01T00:00:00Z".to_string());
        let log = |key: &LogKey, url: &str| {
            serde_json::json!({
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": B64.encode(&key.spki_der),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": B64.encode(key.id())},
            })
        };
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor, "https://rekor.imgate.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "imgate-test", "commonName": "imgate-test-fulcio"},
                "uri": "https://fulcio.imgate.test",
                "certChain": {"certificates": [{"rawBytes": B64.encode(self.ca_cert.der())}]},
                "validFor": {"start": start},
            }],
            "ctlogs": [log(&self.ct, "https://ctfe.imgate.test")],
            "timestampAuthorities": [],
        })
        .to_string()
    }

    /// The CA certificate, DER.
    pub(crate) fn ca_der(&self) -> &[u8] {
        self.ca_cert.der()
    }

    /// The CT log's key.
    pub(crate) fn ct_log(&self) -> &LogKey {
        &self.ct
    }

    /// Issue a leaf certificate as Fulcio would.
    pub fn leaf(&self, spec: &LeafSpec) -> anyhow::Result<Leaf> {
        let leaf_key = KeyPair::generate().context("generating a leaf key")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&leaf_key.serialize_der())
            .context("reading the leaf key")?;
        let cert = self.issue(spec, &leaf_key)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// Issue a Fulcio-like certificate for `public` (what the harness's
    /// Fulcio does for the key a signer sent).
    pub fn issue(
        &self,
        spec: &LeafSpec,
        public: &impl rcgen::PublicKeyData,
    ) -> anyhow::Result<rcgen::Certificate> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let san = rcgen::Ia5String::try_from(spec.identity.clone())?;
        params.subject_alt_names = vec![if spec.identity.contains("://") {
            SanType::URI(san)
        } else {
            SanType::Rfc822Name(san)
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        // X.509 path builders with the web PKI profile (sigstore-python's)
        // require it on every certificate a CA issues, as Fulcio sets it.
        params.use_authority_key_identifier_extension = true;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let serial = self.next_serial.get();
        self.next_serial.set(serial.wrapping_add(1));
        params.serial_number = Some(SerialNumber::from_slice(&[0x10, serial]));
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OID_ISSUER_V1,
                spec.issuer.as_bytes().to_vec(),
            ));
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OID_ISSUER_V2,
                der_tlv(0x0c, spec.issuer.as_bytes()),
            ));
        if let Some(repo) = &spec.github_repository {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    OID_GITHUB_REPOSITORY,
                    repo.as_bytes().to_vec(),
                ));
        }
        if spec.sct {
            // The SCT signs the certificate as it is without the SCT list
            // (the precertificate TBS), so issue that first, deterministically.
            let precert = params
                .clone()
                .signed_by(public, &self.ca_cert, &self.ca_key)
                .context("issuing the precertificate")?;
            let tbs = first_child(precert.der()).context("reading the precertificate TBS")?;
            let timestamp = u64::try_from(spec.not_before.unix_timestamp() * 1000 + 1)?;
            let issuer_key_hash: [u8; 32] = Sha256::digest(self.ca_key.public_key_der()).into();
            let mut signed = vec![0u8, 0u8];
            signed.extend_from_slice(&timestamp.to_be_bytes());
            signed.extend_from_slice(&[0, 1]);
            signed.extend_from_slice(&issuer_key_hash);
            let len = u32::try_from(tbs.len())?.to_be_bytes();
            signed.extend_from_slice(&len[1..]);
            signed.extend_from_slice(tbs);
            signed.extend_from_slice(&[0, 0]);
            let sig = self.ct.sign(&signed);
            let mut sct = vec![0u8];
            sct.extend_from_slice(&self.ct.id());
            sct.extend_from_slice(&timestamp.to_be_bytes());
            sct.extend_from_slice(&[0, 0, 4, 3]);
            sct.extend_from_slice(&u16::try_from(sig.len())?.to_be_bytes());
            sct.extend_from_slice(&sig);
            let mut list = Vec::new();
            list.extend_from_slice(&u16::try_from(sct.len() + 2)?.to_be_bytes());
            list.extend_from_slice(&u16::try_from(sct.len())?.to_be_bytes());
            list.extend_from_slice(&sct);
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    OID_SCT_LIST,
                    der_tlv(0x04, &list),
                ));
        }
        params
            .signed_by(public, &self.ca_cert, &self.ca_key)
            .context("issuing the leaf")
    }

    /// A Rekor `hashedrekord` entry for `signature` over content whose
    /// SHA-256 is `content_sha256`, signed by `cert_pem`'s key, integrated at
    /// `integrated_time`; returned as cosign's bundle annotation JSON.
    pub fn rekor_entry(
        &self,
        signature: &[u8],
        cert_pem: &str,
        content_sha256: &[u8; 32],
        integrated_time: i64,
        log_index: i64,
    ) -> String {
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(content_sha256)}},
                "signature": {
                    "content": B64.encode(signature),
                    "publicKey": {"content": B64.encode(cert_pem.as_bytes())},
                },
            },
        })
        .to_string();
        self.annotation_for_body(&body, integrated_time, log_index)
    }

    /// cosign's bundle annotation for a Rekor entry of `body` (JSON),
    /// integrated at `integrated_time`, with the log's SET.
    fn annotation_for_body(&self, body: &str, integrated_time: i64, log_index: i64) -> String {
        let body_b64 = B64.encode(body.as_bytes());
        let log_id = hex::encode(self.rekor.id());
        // RFC 8785 canonical form: keys sorted, no spaces.
        let canonical = format!(
            "{{\"body\":\"{body_b64}\",\"integratedTime\":{integrated_time},\"logID\":\"{log_id}\",\"logIndex\":{log_index}}}"
        );
        let set = self.rekor.sign(canonical.as_bytes());
        serde_json::json!({
            "SignedEntryTimestamp": B64.encode(set),
            "Payload": {
                "body": body_b64,
                "integratedTime": integrated_time,
                "logIndex": log_index,
                "logID": log_id,
            },
        })
        .to_string()
    }

    /// cosign's bundle annotation of a keyless `.att` layer: an `intoto`
    /// v0.0.2 Rekor entry for `envelope` (a DSSE envelope's JSON whose one
    /// signature `leaf` made), integrated at `integrated_time`.
    pub fn intoto_entry(
        &self,
        leaf: &Leaf,
        envelope: &[u8],
        integrated_time: i64,
    ) -> anyhow::Result<String> {
        let doc: serde_json::Value = serde_json::from_slice(envelope).context("envelope JSON")?;
        let payload = B64
            .decode(doc["payload"].as_str().context("payload")?)
            .context("payload base64")?;
        let sig = doc["signatures"][0]["sig"].as_str().context("signature")?;
        let body = serde_json::json!({
            "apiVersion": "0.0.2",
            "kind": "intoto",
            "spec": {"content": {
                "envelope": {
                    "payloadType": doc["payloadType"],
                    // Rekor encodes the (already base64) signature once more.
                    "signatures": [{"sig": B64.encode(sig), "publicKey": B64.encode(leaf.cert_pem.as_bytes())}],
                },
                "hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(envelope))},
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
            }},
        })
        .to_string();
        Ok(self.annotation_for_body(&body, integrated_time, 11))
    }

    /// A complete legacy keyless layer for `payload`, logged at
    /// `integrated_time`.
    pub fn legacy_layer(&self, leaf: &Leaf, payload: &[u8], integrated_time: i64) -> LegacyLayer {
        let sig = leaf.sign(payload);
        let digest: [u8; 32] = Sha256::digest(payload).into();
        LegacyLayer {
            payload: payload.to_vec(),
            signature_b64: B64.encode(&sig),
            cert_pem: leaf.cert_pem.clone(),
            chain_pem: self.ca_pem(),
            rekor_bundle: self.rekor_entry(&sig, &leaf.cert_pem, &digest, integrated_time, 7),
        }
    }
}

/// A legacy layer signed with a plain key, logged in Rekor.
#[derive(Debug, Clone)]
pub struct KeyLayer {
    /// The simple-signing payload bytes.
    pub payload: Vec<u8>,
    /// `dev.cosignproject.cosign/signature`.
    pub signature_b64: String,
    /// `dev.sigstore.cosign/bundle`.
    pub rekor_bundle: String,
    /// The signing key's SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
}

impl TestSigstore {
    /// Sign `payload` with a fresh P-256 key and log it (hashedrekord with
    /// the public key PEM) at `integrated_time`.
    pub fn key_layer(&self, payload: &[u8], integrated_time: i64) -> anyhow::Result<KeyLayer> {
        let pair = KeyPair::generate().context("generating a signing key")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&pair.serialize_der())
            .context("reading the signing key")?;
        let sig: p256::ecdsa::Signature = key.sign(payload);
        let sig = sig.to_der().as_bytes().to_vec();
        let spki_der = pair.public_key_der();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(&spki_der)
        );
        let digest: [u8; 32] = Sha256::digest(payload).into();
        Ok(KeyLayer {
            payload: payload.to_vec(),
            signature_b64: B64.encode(&sig),
            rekor_bundle: self.rekor_entry(&sig, &pem, &digest, integrated_time, 9),
            spki_der,
        })
    }
}

impl TestSigstore {
    /// A Sigstore bundle v0.3 as cosign v3 writes for an image: a DSSE
    /// envelope over the in-toto `statement` signed by `leaf`, the leaf
    /// certificate, and a `dsse` Rekor entry integrated at `integrated_time`
    /// with its SET, a one-leaf inclusion proof and a checkpoint signed by
    /// the log key.
    pub fn dsse_bundle(&self, leaf: &Leaf, statement: &[u8], integrated_time: i64) -> String {
        const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
        const ORIGIN: &str = "rekor.imgate.test";
        let mut pae = format!(
            "DSSEv1 {} {PAYLOAD_TYPE} {} ",
            PAYLOAD_TYPE.len(),
            statement.len()
        )
        .into_bytes();
        pae.extend_from_slice(statement);
        let sig = leaf.sign(&pae);
        let envelope = serde_json::json!({
            "payload": B64.encode(statement),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": B64.encode(&sig), "keyid": ""}],
        });
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(envelope.to_string()))},
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(statement))},
                "signatures": [{"signature": B64.encode(&sig), "verifier": B64.encode(leaf.cert_pem.as_bytes())}],
            },
        })
        .to_string();
        let body_b64 = B64.encode(body.as_bytes());
        let log_id = self.rekor.id();
        let canonical = format!(
            "{{\"body\":\"{body_b64}\",\"integratedTime\":{integrated_time},\"logID\":\"{}\",\"logIndex\":0}}",
            hex::encode(log_id)
        );
        let set = self.rekor.sign(canonical.as_bytes());
        // A one-entry tree: the root is the leaf hash, the proof is empty.
        let mut leaf_input = vec![0u8];
        leaf_input.extend_from_slice(body.as_bytes());
        let root: [u8; 32] = Sha256::digest(&leaf_input).into();
        let note = format!("{ORIGIN}\n1\n{}\n", B64.encode(root));
        let mut note_sig = log_id[..4].to_vec();
        note_sig.extend_from_slice(&self.rekor.sign(note.as_bytes()));
        let checkpoint = format!("{note}\n\u{2014} {ORIGIN} {}\n", B64.encode(note_sig));
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": B64.encode(&leaf.cert_der)},
                "tlogEntries": [{
                    "logIndex": "0",
                    "logId": {"keyId": B64.encode(log_id)},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": integrated_time.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp": B64.encode(set)},
                    "inclusionProof": {
                        "logIndex": "0",
                        "rootHash": B64.encode(root),
                        "treeSize": "1",
                        "hashes": [],
                        "checkpoint": {"envelope": checkpoint},
                    },
                    "canonicalizedBody": body_b64,
                }],
            },
            "dsseEnvelope": envelope,
        })
        .to_string()
    }
}

/// cosign's simple-signing payload for `repo@digest`.
pub fn simple_signing_payload(repo: &str, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repo},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// DER tag-length-value.
pub fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The first element (whole TLV) inside a DER SEQUENCE: a certificate's TBS.
fn first_child(der: &[u8]) -> anyhow::Result<&[u8]> {
    let header = |at: usize| -> anyhow::Result<(usize, usize)> {
        let first = *der.get(at + 1).context("truncated DER")?;
        if first < 0x80 {
            return Ok((2, usize::from(first)));
        }
        let n = usize::from(first & 0x7f);
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*der.get(at + 2 + i).context("truncated DER")?);
        }
        Ok((2 + n, len))
    };
    let (outer_header, _) = header(0)?;
    let (inner_header, inner_len) = header(outer_header)?;
    der.get(outer_header..outer_header + inner_header + inner_len)
        .context("truncated DER")
}
