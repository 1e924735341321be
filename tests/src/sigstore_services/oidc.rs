//! The OIDC side: an issuer that signs JWTs (ES256) with its own key, and
//! GitHub Actions' token endpoint (`GET ACTIONS_ID_TOKEN_REQUEST_URL
//! &audience=…` with the request token as bearer), which answers
//! `{"value": JWT}` with GitHub's issuer and workflow claims.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};

use super::{State, Svc};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// GitHub Actions' issuer, as Fulcio knows it.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The bearer the harness's GitHub endpoint wants (`ACTIONS_ID_TOKEN_REQUEST_TOKEN`).
pub const GITHUB_REQUEST_TOKEN: &str = "gha-request-token-for-tests";
/// The workflow the harness's GitHub tokens are for.
const GITHUB_WORKFLOW_REF: &str = "imgate-test/app/.github/workflows/release.yml@refs/heads/main";
/// The certificate identity Fulcio gives a GitHub Actions token of the harness.
pub const GITHUB_WORKFLOW_IDENTITY: &str =
    "https://github.com/imgate-test/app/.github/workflows/release.yml@refs/heads/main";

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `sub`.
    pub subject: String,
    /// `email`, when set (Fulcio then certifies the email).
    pub email: Option<String>,
    /// `aud`.
    pub audience: String,
    /// Seconds from now to `exp` (negative: already expired).
    pub expires_in: i64,
}

impl TokenSpec {
    /// A token for `email`, audience `sigstore`, valid five minutes.
    pub fn email(email: &str) -> TokenSpec {
        TokenSpec {
            subject: format!("user-{email}"),
            email: Some(email.to_string()),
            audience: "sigstore".into(),
            expires_in: 300,
        }
    }
}

/// The issuer's signing key.
pub(crate) struct Issuer {
    key: p256::ecdsa::SigningKey,
}

impl Issuer {
    pub(crate) fn new() -> anyhow::Result<Issuer> {
        let pair = rcgen::KeyPair::generate().context("generating the issuer key")?;
        use p256::pkcs8::DecodePrivateKey as _;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&pair.serialize_der())
            .context("reading the issuer key")?;
        Ok(Issuer { key })
    }

    /// A JWT from `issuer` as `spec` says.
    pub(crate) fn mint(&self, issuer: &str, spec: &TokenSpec) -> anyhow::Result<String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = serde_json::json!({
            "iss": issuer, "sub": spec.subject, "aud": spec.audience,
            "iat": now, "exp": now + spec.expires_in,
        });
        if let Some(email) = &spec.email {
            claims["email"] = email.clone().into();
            claims["email_verified"] = true.into();
        }
        self.sign(&claims)
    }

    fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let header = B64URL.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let signing_input = format!("{header}.{}", B64URL.encode(claims.to_string()));
        let sig: p256::ecdsa::Signature = self.key.sign(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", B64URL.encode(sig.to_bytes())))
    }

    /// The claims of `jwt` when its signature is this issuer's.
    pub(crate) fn verify(&self, jwt: &str) -> Option<serde_json::Value> {
        let (signing_input, sig) = jwt.rsplit_once('.')?;
        let sig = p256::ecdsa::Signature::from_slice(&B64URL.decode(sig).ok()?).ok()?;
        self.key
            .verifying_key()
            .verify(signing_input.as_bytes(), &sig)
            .ok()?;
        let payload = signing_input.split('.').nth(1)?;
        serde_json::from_slice(&B64URL.decode(payload).ok()?).ok()
    }
}

pub(crate) fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/actions/token", get(actions_token))
        .with_state(state)
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    audience: Option<String>,
}

async fn actions_token(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if let Some(answer) = state.enter(Svc::Oidc).await {
        return answer;
    }
    let wanted = format!("Bearer {GITHUB_REQUEST_TOKEN}");
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !given.is_some_and(|g| g.eq_ignore_ascii_case(&wanted)) {
        return (StatusCode::UNAUTHORIZED, "bad request token").into_response();
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "iss": GITHUB_ISSUER,
        "sub": "repo:imgate-test/app:ref:refs/heads/main",
        "aud": query.audience.unwrap_or_default(),
        "iat": now, "exp": now + 300,
        "repository": "imgate-test/app",
        "ref": "refs/heads/main",
        "job_workflow_ref": GITHUB_WORKFLOW_REF,
    });
    match state.issuer.sign(&claims) {
        Ok(jwt) => Json(serde_json::json!({"count": 1, "value": jwt})).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}
