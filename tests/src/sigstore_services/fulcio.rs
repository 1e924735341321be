//! Fulcio's `POST /api/v2/signingCert`: checks the identity token (the
//! issuer's signature, audience `sigstore`, expiry) and the proof of
//! possession (a signature over the email or subject by the key sent), then
//! issues a ten-minute certificate with the OIDC issuer extensions and an
//! embedded SCT, for the identity Fulcio derives: the email, GitHub's
//! workflow URI for a GitHub Actions token, else the subject.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;

use super::oidc::GITHUB_ISSUER;
use super::{State, Svc};
use crate::sigstore::LeafSpec;

pub(crate) fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/api/v2/signingCert", post(signing_cert))
        .with_state(state)
}

/// A P-256 public key as rcgen wants it for issuing.
struct EcPoint(Vec<u8>);

impl rcgen::PublicKeyData for EcPoint {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// Fulcio's error shape.
fn error(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => 16,
        _ => 3,
    };
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

async fn signing_cert(
    AxumState(state): AxumState<Arc<State>>,
    Json(request): Json<serde_json::Value>,
) -> Response {
    if let Some(answer) = state.enter(Svc::Fulcio).await {
        return answer;
    }
    let token = request
        .pointer("/credentials/oidcIdentityToken")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let Some(claims) = state.issuer.verify(token) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "There was an error processing the identity token",
        );
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if claims["exp"].as_i64().unwrap_or(0) < now {
        return error(
            StatusCode::UNAUTHORIZED,
            "There was an error processing the identity token: expired",
        );
    }
    let audience_ok = match &claims["aud"] {
        serde_json::Value::String(a) => a == "sigstore",
        serde_json::Value::Array(all) => all.iter().any(|a| a == "sigstore"),
        _ => false,
    };
    if !audience_ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "There was an error processing the identity token: audience",
        );
    }
    let pem = request
        .pointer("/publicKeyRequest/publicKey/content")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let Ok(public) = p256::PublicKey::from_public_key_pem(pem) else {
        return error(
            StatusCode::BAD_REQUEST,
            "The public key supplied in the request could not be parsed",
        );
    };
    let challenge = claims["email"]
        .as_str()
        .or_else(|| claims["sub"].as_str())
        .unwrap_or_default();
    let proof = request
        .pointer("/publicKeyRequest/proofOfPossession")
        .and_then(|v| v.as_str())
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|der| p256::ecdsa::Signature::from_der(&der).ok());
    let verifying = p256::ecdsa::VerifyingKey::from(public);
    if proof.is_none_or(|sig| verifying.verify(challenge.as_bytes(), &sig).is_err()) {
        return error(
            StatusCode::BAD_REQUEST,
            "The signature supplied in the request could not be verified",
        );
    }

    let issuer = claims["iss"].as_str().unwrap_or_default();
    let derived = match (
        claims["email"].as_str(),
        claims["job_workflow_ref"].as_str(),
    ) {
        (Some(email), _) => email.to_string(),
        (None, Some(wf)) if issuer == GITHUB_ISSUER => format!("https://github.com/{wf}"),
        _ => claims["sub"].as_str().unwrap_or_default().to_string(),
    };
    let identity = state.faults().fulcio_identity.unwrap_or(derived);
    let mut spec = LeafSpec::new(&identity, issuer);
    spec.github_repository = claims["repository"].as_str().map(str::to_string);
    let point = EcPoint(public.to_sec1_bytes().to_vec());
    let issued = match state.authority.lock() {
        Ok(authority) => authority
            .issue(&spec, &point)
            .map(|cert| (cert.pem(), authority.ca_pem())),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "authority lock poisoned"),
    };
    match issued {
        Ok((leaf, ca)) => Json(serde_json::json!({
            "signedCertificateEmbeddedSct": {"chain": {"certificates": [leaf, ca]}},
        }))
        .into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}
