//! An RFC 3161 timestamp authority (`POST /api/v1/timestamp`,
//! `application/timestamp-query`): a TSTInfo over the request's message
//! imprint and nonce, in a CMS SignedData signed (ECDSA P-256, SHA-256) by a
//! leaf whose critical extended key usage is timeStamping, with the signed
//! attributes verifiers check (content type, message digest, ESS signing
//! certificate v2) and the leaf embedded.
//!
//! Two authorities exist: the trusted one (in `trusted_root.json`) and an
//! untrusted one, used when [`super::Faults::tsa_untrusted`] is set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::DecodePrivateKey as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use sha2::{Digest as _, Sha256};

use super::der::{self, oid, seq, set, tlv, uint};
use super::{State, Svc};

const OID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
const OID_TST_INFO: &[u64] = &[1, 2, 840, 113549, 1, 9, 16, 1, 4];
const OID_CONTENT_TYPE: &[u64] = &[1, 2, 840, 113549, 1, 9, 3];
const OID_MESSAGE_DIGEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 4];
const OID_SIGNING_CERT_V2: &[u64] = &[1, 2, 840, 113549, 1, 9, 16, 2, 47];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_TIME_STAMPING: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 8];
/// The policy Sigstore's timestamp authority names.
const OID_POLICY: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 2];

/// One signing authority: leaf key, leaf certificate, root certificate.
struct Signer {
    key: p256::ecdsa::SigningKey,
    leaf_der: Vec<u8>,
    root_der: Vec<u8>,
}

impl Signer {
    fn new(name: &str) -> anyhow::Result<Signer> {
        let start = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        let end = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        let root_key = KeyPair::generate()?;
        let mut root = CertificateParams::new(Vec::<String>::new())?;
        root.distinguished_name
            .push(DnType::OrganizationName, "imgate-test");
        root.distinguished_name
            .push(DnType::CommonName, format!("{name}-root"));
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (root.not_before, root.not_after) = (start, end);
        let root = root.self_signed(&root_key)?;

        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name
            .push(DnType::OrganizationName, "imgate-test");
        leaf.distinguished_name.push(DnType::CommonName, name);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.serial_number = Some(SerialNumber::from_slice(&[0x31, 0x41]));
        leaf.use_authority_key_identifier_extension = true;
        (leaf.not_before, leaf.not_after) = (start, end);
        // RFC 3161 2.3: the only extended key usage, and critical.
        let mut eku =
            CustomExtension::from_oid_content(OID_EXT_KEY_USAGE, seq(&[oid(OID_TIME_STAMPING)]));
        eku.set_criticality(true);
        leaf.custom_extensions.push(eku);
        let leaf = leaf.signed_by(&leaf_key, &root, &root_key)?;
        Ok(Signer {
            key: p256::ecdsa::SigningKey::from_pkcs8_der(&leaf_key.serialize_der())
                .context("reading the TSA key")?,
            leaf_der: leaf.der().to_vec(),
            root_der: root.der().to_vec(),
        })
    }
}

/// The trusted and the untrusted authority.
pub(crate) struct Authority {
    trusted: Signer,
    untrusted: Signer,
    serial: AtomicU64,
}

impl Authority {
    pub(crate) fn new() -> anyhow::Result<Authority> {
        Ok(Authority {
            trusted: Signer::new("imgate-test-tsa")?,
            untrusted: Signer::new("imgate-test-rogue-tsa")?,
            serial: AtomicU64::new(1),
        })
    }

    /// The trusted authority's chain, leaf first (as `trusted_root.json` lists it).
    pub(crate) fn trusted_chain(&self) -> Vec<Vec<u8>> {
        vec![self.trusted.leaf_der.clone(), self.trusted.root_der.clone()]
    }

    /// A granted `TimeStampResp` for `request` (a `TimeStampReq`), signed by
    /// the trusted or untrusted authority at `now + offset`.
    fn respond(&self, request: &[u8], untrusted: bool, offset: i64) -> anyhow::Result<Vec<u8>> {
        let signer = if untrusted {
            &self.untrusted
        } else {
            &self.trusted
        };
        let req = der::read(request)?;
        anyhow::ensure!(req.tag == 0x30, "not a TimeStampReq");
        let fields = der::children(req.content)?;
        let imprint = fields.get(1).context("no messageImprint")?;
        let nonce = fields.iter().skip(2).find(|f| f.tag == 0x02);
        let serial = self.serial.fetch_add(1, Ordering::SeqCst);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut tst = vec![
            uint(&[1]),
            oid(OID_POLICY),
            imprint.whole.to_vec(),
            uint(&serial.to_be_bytes()),
            der::generalized_time(now + offset)?,
        ];
        if let Some(nonce) = nonce {
            tst.push(nonce.whole.to_vec());
        }
        let tst = seq(&tst);
        let sha256 = seq(&[oid(OID_SHA256), tlv(0x05, &[])]);
        let attrs = set(&[
            seq(&[oid(OID_CONTENT_TYPE), set(&[oid(OID_TST_INFO)])]),
            seq(&[
                oid(OID_MESSAGE_DIGEST),
                set(&[tlv(0x04, &Sha256::digest(&tst))]),
            ]),
            seq(&[
                oid(OID_SIGNING_CERT_V2),
                set(&[seq(&[seq(&[seq(&[tlv(
                    0x04,
                    &Sha256::digest(&signer.leaf_der),
                )])])])]),
            ]),
        ]);
        let signature: p256::ecdsa::Signature = signer.key.sign(&attrs);
        // Signed over as a SET, carried as [0] IMPLICIT: same bytes, other tag.
        let mut implicit_attrs = attrs.clone();
        implicit_attrs[0] = 0xa0;
        let (issuer, serial_number) = der::issuer_and_serial(&signer.leaf_der)?;
        let signer_info = seq(&[
            uint(&[1]),
            seq(&[issuer, serial_number]),
            sha256.clone(),
            implicit_attrs,
            seq(&[oid(OID_ECDSA_SHA256)]),
            tlv(0x04, signature.to_der().as_bytes()),
        ]);
        let signed_data = seq(&[
            uint(&[3]),
            set(&[sha256]),
            seq(&[oid(OID_TST_INFO), tlv(0xa0, &tlv(0x04, &tst))]),
            tlv(0xa0, &signer.leaf_der),
            set(&[signer_info]),
        ]);
        let token = seq(&[oid(OID_SIGNED_DATA), tlv(0xa0, &signed_data)]);
        Ok(seq(&[seq(&[uint(&[0])]), token]))
    }
}

pub(crate) fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/timestamp", post(timestamp))
        .with_state(state)
}

async fn timestamp(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    if let Some(answer) = state.enter(Svc::Tsa).await {
        return answer;
    }
    let faults = state.faults();
    match state
        .tsa
        .respond(&body, faults.tsa_untrusted, faults.tsa_clock_offset)
    {
        Ok(resp) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/timestamp-reply")],
            resp,
        )
            .into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err:#}")).into_response(),
    }
}
