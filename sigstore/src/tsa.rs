//! An RFC 3161 timestamp for a signature: `POST` a `TimeStampReq` over the
//! SHA-256 of the signature bytes (what Sigstore verifiers check the
//! timestamp against), with a random nonce and `certReq`, and keep the whole
//! `TimeStampResp` (what a bundle's `signedTimestamp` holds).
//!
//! The request is written here because `sigstore-tsa` builds it only inside
//! its HTTP client (a second reqwest major version). The answer's status is
//! read here so a refusal is named; its signature, certificate chain and
//! time are checked with `sigstore-tsa` against the trusted root's
//! timestamp authorities as soon as it arrives ([`check`]), so an untrusted
//! or mistimed timestamp stops the signing before anything is logged.

use ring::rand::SecureRandom as _;
use sha2::{Digest as _, Sha256};

use sigstore_verify::tsa::verify_timestamp_for_authority;
use sigstore_verify::types::{SignatureBytes, TimestampToken};

use super::services::{Body, Call, ServiceClient};
use super::sign_error::{Service, SigningError};
use super::TrustRoot;

/// Largest answer read (a token with a two-certificate chain is ~3 KiB).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// DER of `AlgorithmIdentifier { id-sha256, NULL }`.
const SHA256_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
];

/// Ask the timestamp authority at `url` to timestamp `signature`; the
/// `TimeStampResp` DER.
pub(crate) async fn timestamp(
    client: &ServiceClient,
    url: &str,
    signature: &[u8],
) -> Result<Vec<u8>, SigningError> {
    let bad = |answer: String| SigningError::Service {
        service: Service::Tsa,
        url: url.to_string(),
        answer,
    };
    let mut nonce = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| bad("no randomness for the request nonce".into()))?;
    let request = request_der(&Sha256::digest(signature).into(), nonce);
    let answer = client
        .send(Call {
            service: Service::Tsa,
            url,
            body: Body::Bytes {
                content_type: "application/timestamp-query",
                bytes: &request,
            },
            bearer: None,
            accept: "application/timestamp-reply",
            max_bytes: MAX_ANSWER_BYTES,
            retry_server_errors: true,
        })
        .await?;
    check_granted(&answer).map_err(bad)?;
    Ok(answer)
}

/// Check a timestamp of `signature` from the authority at `url`: it must
/// verify with one of `root`'s timestamp authorities and, when `window`
/// (Unix seconds, inclusive) is given, fall inside it.
pub(crate) fn check(
    url: &str,
    answer: &[u8],
    signature: &[u8],
    root: &TrustRoot,
    window: Option<(i64, i64)>,
) -> Result<(), SigningError> {
    let bad = |answer: String| SigningError::Service {
        service: Service::Tsa,
        url: url.to_string(),
        answer,
    };
    let token = TimestampToken::new(answer.to_vec());
    let signature = SignatureBytes::new(signature.to_vec());
    let mut refusals = Vec::new();
    let mut time = None;
    for authority in root.root.tsa_authorities() {
        match verify_timestamp_for_authority(&token, &signature, &authority) {
            Ok(t) => {
                time = Some(t.as_second());
                break;
            }
            Err(err) => refusals.push(err.to_string()),
        }
    }
    let Some(time) = time else {
        return Err(bad(format!(
            "answered a timestamp that no timestamp authority of trusted root {} signed ({})",
            root.name(),
            if refusals.is_empty() {
                "it lists none".to_string()
            } else {
                refusals.join("; ")
            }
        )));
    };
    if let Some((start, end)) = window {
        if time < start || time > end {
            return Err(bad(format!(
                "answered a timestamp ({}) outside the signing certificate's validity ({} to {})",
                super::token::timestamp_text(time),
                super::token::timestamp_text(start),
                super::token::timestamp_text(end)
            )));
        }
    }
    Ok(())
}

/// `TimeStampReq { v1, messageImprint { sha256, digest }, nonce, certReq TRUE }`.
fn request_der(digest: &[u8; 32], mut nonce: [u8; 8]) -> Vec<u8> {
    // A positive INTEGER in minimal form: first byte non-zero, high bit clear.
    nonce[0] = (nonce[0] & 0x7f) | 0x01;
    let mut imprint = SHA256_ALGORITHM.to_vec();
    imprint.extend(tlv(0x04, digest));
    let mut body = tlv(0x02, &[1]);
    body.extend(tlv(0x30, &imprint));
    body.extend(tlv(0x02, &nonce));
    body.extend(tlv(0x01, &[0xff]));
    tlv(0x30, &body)
}

/// Whether a `TimeStampResp` grants the request (status 0 or 1) and holds a token.
fn check_granted(der: &[u8]) -> Result<(), String> {
    let unreadable = || "answered something that is not an RFC 3161 TimeStampResp".to_string();
    let (tag, resp, _) = read_tlv(der).ok_or_else(unreadable)?;
    if tag != 0x30 {
        return Err(unreadable());
    }
    let (tag, status_info, token) = read_tlv(resp).ok_or_else(unreadable)?;
    if tag != 0x30 {
        return Err(unreadable());
    }
    let (tag, status, _) = read_tlv(status_info).ok_or_else(unreadable)?;
    if tag != 0x02 || status.len() != 1 {
        return Err(unreadable());
    }
    match status[0] {
        0 | 1 if !token.is_empty() => Ok(()),
        0 | 1 => Err("granted the request but sent no timestamp token".into()),
        code => Err(format!(
            "refused the request: PKIStatus {code} ({})",
            match code {
                2 => "rejection",
                3 => "waiting",
                4 => "revocationWarning",
                5 => "revocationNotification",
                _ => "unknown",
            }
        )),
    }
}

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
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

/// One DER element: its tag, its content and what follows it.
fn read_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn request_is_minimal_der_with_the_imprint() {
        let req = request_der(&[0xab; 32], [0xff; 8]);
        let (tag, body, rest) = read_tlv(&req).unwrap();
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (_, version, body) = read_tlv(body).unwrap();
        assert_eq!(version, [1]);
        let (_, imprint, body) = read_tlv(body).unwrap();
        assert!(imprint.starts_with(SHA256_ALGORITHM));
        assert!(imprint.ends_with(&[0xab; 32]));
        let (_, nonce, body) = read_tlv(body).unwrap();
        assert_eq!(nonce[0], 0x7f);
        assert_eq!(read_tlv(body).unwrap().1, [0xff]);
    }

    #[test]
    fn refusals_and_garbage_are_named() {
        let status = |code: u8| tlv(0x30, &tlv(0x02, &[code]));
        let granted = tlv(0x30, &[status(0), tlv(0x30, b"token")].concat());
        assert!(check_granted(&granted).is_ok());
        let refused = tlv(0x30, &status(2));
        assert!(check_granted(&refused).unwrap_err().contains("rejection"));
        assert!(check_granted(&tlv(0x30, &status(0)))
            .unwrap_err()
            .contains("no timestamp token"));
        assert!(check_granted(b"<html>")
            .unwrap_err()
            .contains("TimeStampResp"));
    }
}
