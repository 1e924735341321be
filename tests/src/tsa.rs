//! An RFC 3161 timestamp authority for tests: its own root CA and a
//! time-stamping leaf certificate, published as a `timestampAuthorities`
//! entry of a trusted root, issuing what Sigstore's TSA issues: a
//! timestamp token (CMS SignedData over a TSTInfo, with signed attributes,
//! ECDSA P-256) over a signature's bytes.
//!
//! The token is written byte by byte here, independently of the verifier's
//! ASN.1 decoder, so the two check each other.

use anyhow::Context;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::sigstore::der_tlv;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// DER object identifiers (tag and length included).
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
];
const OID_TST_INFO: &[u8] = &[
    0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04,
];
const OID_SHA256: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
const OID_CONTENT_TYPE: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03,
];
const OID_MESSAGE_DIGEST: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04,
];
const OID_ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// The TSA's policy (any OID will do; 1.2.3.4).
const OID_POLICY: &[u8] = &[0x06, 0x03, 0x2a, 0x03, 0x04];

/// The timestamp authority.
pub struct TestTsa {
    root: rcgen::Certificate,
    leaf: rcgen::Certificate,
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for TestTsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestTsa").finish_non_exhaustive()
    }
}

impl TestTsa {
    /// A new authority with fresh keys, valid from 30 days ago for a year.
    pub fn new() -> anyhow::Result<TestTsa> {
        let start = OffsetDateTime::now_utc() - time::Duration::days(30);
        let end = OffsetDateTime::now_utc() + time::Duration::days(365);
        let root_key = KeyPair::generate().context("generating the TSA root key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "imgate-test");
        params
            .distinguished_name
            .push(DnType::CommonName, "imgate-test-tsa-root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = start;
        params.not_after = end;
        let root = params
            .self_signed(&root_key)
            .context("self-signing the TSA root")?;

        let leaf_key = KeyPair::generate().context("generating the TSA key")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&leaf_key.serialize_der())
            .context("reading the TSA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "imgate-test");
        params
            .distinguished_name
            .push(DnType::CommonName, "imgate-test-tsa");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::TimeStamping];
        // A random serial: another authority's token is then told apart by
        // its signer (issuer and serial), not only by its signature.
        let mut serial = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
        serial[0] = 0x20 | (serial[0] & 0x0f);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = start;
        params.not_after = end;
        let leaf = params
            .signed_by(&leaf_key, &root, &root_key)
            .context("issuing the TSA certificate")?;
        Ok(TestTsa { root, leaf, key })
    }

    /// `trusted_root` (a `trusted_root.json`) with this authority added to
    /// its `timestampAuthorities`.
    pub fn add_to(&self, trusted_root: &str) -> anyhow::Result<String> {
        let mut root: Value = serde_json::from_str(trusted_root).context("trusted root JSON")?;
        let start = (OffsetDateTime::now_utc() - time::Duration::days(30))
            .format(&time::format_description::well_known::Rfc3339)
            .context("formatting a time")?;
        let authority = json!({
            "subject": {"organization": "imgate-test", "commonName": "imgate-test-tsa"},
            "uri": "https://tsa.imgate.test",
            "certChain": {"certificates": [
                {"rawBytes": B64.encode(self.leaf.der())},
                {"rawBytes": B64.encode(self.root.der())},
            ]},
            "validFor": {"start": start},
        });
        root["timestampAuthorities"]
            .as_array_mut()
            .context("trusted root without timestampAuthorities")?
            .push(authority);
        Ok(root.to_string())
    }

    /// A timestamp token (DER `ContentInfo`) saying `signature` existed at
    /// `time` (Unix seconds).
    pub fn timestamp(&self, signature: &[u8], time: i64) -> anyhow::Result<Vec<u8>> {
        let at = OffsetDateTime::from_unix_timestamp(time).context("timestamp time")?;
        let gen_time = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
        let sha256_alg = der_tlv(0x30, OID_SHA256);
        let imprint = der_tlv(
            0x30,
            &[
                sha256_alg.clone(),
                der_tlv(0x04, &Sha256::digest(signature)),
            ]
            .concat(),
        );
        let tst_info = der_tlv(
            0x30,
            &[
                der_tlv(0x02, &[1]),
                OID_POLICY.to_vec(),
                imprint,
                der_tlv(0x02, &[7]),
                der_tlv(0x18, gen_time.as_bytes()),
            ]
            .concat(),
        );
        // Signed attributes: content type and message digest, in DER order
        // (the content-type attribute is the shorter encoding).
        let attributes = [
            der_tlv(
                0x30,
                &[OID_CONTENT_TYPE.to_vec(), der_tlv(0x31, OID_TST_INFO)].concat(),
            ),
            der_tlv(
                0x30,
                &[
                    OID_MESSAGE_DIGEST.to_vec(),
                    der_tlv(0x31, &der_tlv(0x04, &Sha256::digest(&tst_info))),
                ]
                .concat(),
            ),
        ]
        .concat();
        // The signature covers the attributes as a SET; the token carries
        // them under an implicit [0] tag.
        let sig: p256::ecdsa::Signature = self.key.sign(&der_tlv(0x31, &attributes));
        let (serial, issuer) = serial_and_issuer(self.leaf.der())?;
        let signer_info = der_tlv(
            0x30,
            &[
                der_tlv(0x02, &[1]),
                der_tlv(0x30, &[issuer, serial].concat()),
                sha256_alg.clone(),
                der_tlv(0xa0, &attributes),
                der_tlv(0x30, OID_ECDSA_SHA256),
                der_tlv(0x04, sig.to_der().as_bytes()),
            ]
            .concat(),
        );
        let signed_data = der_tlv(
            0x30,
            &[
                der_tlv(0x02, &[3]),
                der_tlv(0x31, &sha256_alg),
                der_tlv(
                    0x30,
                    &[
                        OID_TST_INFO.to_vec(),
                        der_tlv(0xa0, &der_tlv(0x04, &tst_info)),
                    ]
                    .concat(),
                ),
                der_tlv(0x31, &signer_info),
            ]
            .concat(),
        );
        Ok(der_tlv(
            0x30,
            &[OID_SIGNED_DATA.to_vec(), der_tlv(0xa0, &signed_data)].concat(),
        ))
    }
}

/// `bundle` (a Sigstore bundle's JSON whose content is a DSSE envelope)
/// with its transparency-log entries removed and a timestamp from `tsa` at
/// `time` over its signature instead: how GitHub signs attestations for
/// private repositories.
pub fn timestamped_instead_of_logged(
    bundle: &str,
    tsa: &TestTsa,
    time: i64,
) -> anyhow::Result<String> {
    let mut bundle: Value = serde_json::from_str(bundle).context("bundle JSON")?;
    let sig = bundle
        .pointer("/dsseEnvelope/signatures/0/sig")
        .and_then(Value::as_str)
        .context("bundle without a DSSE signature")?;
    let sig = B64.decode(sig).context("DSSE signature base64")?;
    let token = tsa.timestamp(&sig, time)?;
    let material = bundle
        .get_mut("verificationMaterial")
        .and_then(Value::as_object_mut)
        .context("bundle without verificationMaterial")?;
    material.insert("tlogEntries".into(), json!([]));
    material.insert(
        "timestampVerificationData".into(),
        json!({"rfc3161Timestamps": [{"signedTimestamp": B64.encode(token)}]}),
    );
    Ok(bundle.to_string())
}

/// The serial number and issuer name (whole TLVs) of a certificate.
fn serial_and_issuer(cert: &[u8]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let tbs = children(children(cert)?.first().context("empty certificate")?)?;
    // TBSCertificate: [0] version, serial, signature algorithm, issuer, ...
    match tbs.as_slice() {
        [version, serial, _, issuer, ..] if version.first() == Some(&0xa0) => {
            Ok((serial.to_vec(), issuer.to_vec()))
        }
        _ => anyhow::bail!("unexpected certificate layout"),
    }
}

/// The elements (whole TLVs) inside the constructed TLV `der`.
fn children(der: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    let (head, len) = header(der, 0)?;
    let content = der.get(head..head + len).context("truncated DER")?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < content.len() {
        let (h, l) = header(content, at)?;
        out.push(content.get(at..at + h + l).context("truncated DER")?);
        at += h + l;
    }
    Ok(out)
}

/// The header length and content length of the TLV at `at`.
fn header(der: &[u8], at: usize) -> anyhow::Result<(usize, usize)> {
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
}
