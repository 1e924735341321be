//! Fulcio's v2 REST API (`POST /api/v2/signingCert`): the identity token and
//! a fresh public key with proof of possession (a signature by that key
//! over the token's email or subject) in, a short-lived certificate chain
//! with an embedded SCT out.
//!
//! What comes back is checked before anything else is sent anywhere: the
//! leaf must certify the key imgate generated and name the identity the
//! token stands for, so a certificate for another identity never reaches
//! the transparency log.

use base64::Engine as _;
use imgate_keys::SigningKey;
use sigstore_verify::crypto::parse_certificate_info;
use sigstore_verify::types::DerCertificate;

use super::services::{Body, Call, ServiceClient};
use super::sign_error::{Service, SigningError};
use super::token::IdentityToken;
use super::IdentityPolicy;

/// Largest answer read (a chain of three certificates is ~3 KiB).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A signing certificate and the chain Fulcio sent with it.
#[derive(Debug, Clone)]
pub(crate) struct SigningCertificate {
    /// The leaf, DER.
    pub leaf: Vec<u8>,
    /// Intermediates and root as Fulcio sent them, DER (informational:
    /// trust comes from the trusted root).
    pub chain: Vec<Vec<u8>>,
    /// The start of the leaf's validity, Unix seconds.
    pub not_before: i64,
    /// The end of the leaf's validity, Unix seconds.
    pub not_after: i64,
}

/// Ask Fulcio at `base_url` for a certificate binding `key` to `token`'s
/// identity, and check it names `expected` and certifies `key`.
pub(crate) async fn request_certificate(
    client: &ServiceClient,
    base_url: &str,
    token: &IdentityToken,
    key: &SigningKey,
    expected: &IdentityPolicy,
) -> Result<SigningCertificate, SigningError> {
    let url = format!("{}/api/v2/signingCert", base_url.trim_end_matches('/'));
    let b64 = base64::engine::general_purpose::STANDARD;
    let public = key.public_key();
    let request = serde_json::json!({
        "credentials": {"oidcIdentityToken": token.secret()},
        "publicKeyRequest": {
            "publicKey": {"algorithm": "ECDSA", "content": public.to_pem()},
            "proofOfPossession": b64.encode(key.sign(token.challenge().as_bytes())),
        },
    });
    let answer = client
        .send(Call {
            service: Service::Fulcio,
            url: &url,
            body: Body::Json(&request),
            bearer: None,
            accept: "application/json",
            max_bytes: MAX_ANSWER_BYTES,
            retry_server_errors: true,
        })
        .await?;
    let bad = |answer: String| SigningError::Service {
        service: Service::Fulcio,
        url: url.clone(),
        answer,
    };
    let chain = parse_chain(&answer).map_err(bad)?;
    let Some((leaf, rest)) = chain.split_first() else {
        return Err(bad("answered an empty certificate chain".into()));
    };
    let info = parse_certificate_info(&DerCertificate::new(leaf.clone()))
        .map_err(|err| bad(format!("answered an unreadable certificate: {err}")))?;
    if info.public_key.as_bytes() != public.to_spki_der() {
        return Err(bad(
            "answered a certificate for another public key than the one imgate sent".into(),
        ));
    }
    expected.check(&info).map_err(|err| {
        bad(format!(
            "answered a certificate for another identity than the token's: {err}"
        ))
    })?;
    Ok(SigningCertificate {
        leaf: leaf.clone(),
        chain: rest.to_vec(),
        not_before: info.not_before.as_second(),
        not_after: info.not_after.as_second(),
    })
}

/// The DER certificates of a `signedCertificateEmbeddedSct` answer.
fn parse_chain(answer: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let json: serde_json::Value =
        serde_json::from_slice(answer).map_err(|err| format!("answered non-JSON: {err}"))?;
    if json.get("signedCertificateDetachedSct").is_some() {
        return Err(
            "answered a certificate with a detached SCT, which imgate does not support \
             (Fulcio embeds the SCT unless configured otherwise)"
                .into(),
        );
    }
    let pems = json
        .pointer("/signedCertificateEmbeddedSct/chain/certificates")
        .and_then(serde_json::Value::as_array)
        .ok_or("answered no signedCertificateEmbeddedSct.chain.certificates")?;
    let mut out = Vec::new();
    for pem in pems {
        let pem = pem
            .as_str()
            .ok_or("answered a certificate that is not a string")?;
        let mut reader = std::io::Cursor::new(pem.as_bytes());
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|err| format!("answered unreadable PEM: {err}"))?;
            out.push(cert.as_ref().to_vec());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_read_and_detached_scts_refused() {
        let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
        let answer = serde_json::json!({"signedCertificateEmbeddedSct": {"chain": {"certificates": [pem, pem]}}});
        assert_eq!(parse_chain(answer.to_string().as_bytes()).unwrap().len(), 2);
        let detached = serde_json::json!({"signedCertificateDetachedSct": {}});
        assert!(parse_chain(detached.to_string().as_bytes())
            .unwrap_err()
            .contains("detached"));
        assert!(parse_chain(b"<html>").unwrap_err().contains("non-JSON"));
    }
}
