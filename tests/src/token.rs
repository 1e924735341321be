//! A bearer-token server for the `Token` registry variant: the Docker
//! token-auth flow (`GET /token?service=…&scope=…` with basic credentials)
//! answered with ES256 JWTs that CNCF Distribution 2.8 accepts — header `x5c`
//! holding a signing certificate issued by the test CA (the registry's
//! `auth.token.rootcertbundle`), claims iss/sub/aud/exp/nbf/iat/jti/access.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use serde_json::json;

use crate::pki::{IssuedCert, TestCa};
use crate::server::{spawn_router, ServerTask};

/// What the token server checks and how it signs.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The registry's `auth.token.service` (the JWT audience).
    pub service: String,
    /// The registry's `auth.token.issuer`.
    pub issuer: String,
    /// The one account that may push and pull.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Give anonymous requests pull access (otherwise their tokens grant nothing,
    /// as a private repository on Docker Hub or GHCR does).
    pub anonymous_pull: bool,
}

/// A running token server (served over TLS with a certificate from the test CA).
#[derive(Debug)]
pub struct TokenServer {
    task: ServerTask,
    state: Arc<TokenState>,
}

#[derive(Debug)]
struct TokenState {
    settings: TokenSettings,
    signing_key: p256::ecdsa::SigningKey,
    signing_cert_der: Vec<u8>,
    requests: AtomicU64,
    issued: AtomicU64,
}

impl TokenServer {
    /// Starts a token server on 127.0.0.1 whose JWTs are signed by a key
    /// certified by `ca`, serving TLS with `tls_cert`.
    pub async fn start(
        settings: TokenSettings,
        ca: &TestCa,
        tls_cert: &IssuedCert,
    ) -> anyhow::Result<TokenServer> {
        let signing = ca.signing_cert("imgate test token signer")?;
        let signing_key = p256::ecdsa::SigningKey::from_pkcs8_der(&signing.key_der)
            .context("reading the token signing key")?;
        let state = Arc::new(TokenState {
            settings,
            signing_key,
            signing_cert_der: signing.cert_der,
            requests: AtomicU64::new(0),
            issued: AtomicU64::new(0),
        });
        let router = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(state.clone());
        let tls = crate::pki::rustls_server_config(tls_cert)?;
        let task = spawn_router(router, Some(tls)).await?;
        Ok(TokenServer { task, state })
    }

    /// The realm URL the registry advertises (`https://127.0.0.1:PORT/token`).
    pub fn realm(&self) -> String {
        format!("https://{}/token", self.task.addr)
    }

    /// How many token requests arrived (granted or refused).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// How many tokens were issued.
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// A token for `username` with `access` (`(repository, actions)`), signed
    /// like the server's own; lets tests talk to the registry directly.
    pub fn mint(&self, username: &str, access: &[(&str, &[&str])]) -> anyhow::Result<String> {
        let access = access
            .iter()
            .map(|(name, actions)| json!({"type": "repository", "name": name, "actions": actions}))
            .collect();
        self.state.sign(username, access)
    }
}

impl TokenState {
    fn sign(&self, subject: &str, access: Vec<serde_json::Value>) -> anyhow::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?;
        let jti = format!(
            "{:x}-{:x}",
            now.as_nanos(),
            self.issued.fetch_add(1, Ordering::SeqCst)
        );
        let header = json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [STANDARD.encode(&self.signing_cert_der)],
        });
        let secs = now.as_secs();
        let claims = json!({
            "iss": self.settings.issuer,
            "sub": subject,
            "aud": self.settings.service,
            "exp": secs + 300,
            "nbf": secs.saturating_sub(30),
            "iat": secs,
            "jti": jti,
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
        );
        // JWS ES256 is the raw r||s pair, not DER.
        let signature: p256::ecdsa::Signature = self.signing_key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

/// Who the request authenticates as: `Ok(None)` anonymous, `Err` bad credentials.
fn account(state: &TokenState, headers: &HeaderMap) -> Result<Option<String>, ()> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or(())?;
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (user, password) = decoded.split_once(':').ok_or(())?;
    if user == state.settings.username && password == state.settings.password {
        Ok(Some(user.to_string()))
    } else {
        Err(())
    }
}

async fn token(
    State(state): State<Arc<TokenState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let account = match account(&state, &headers) {
        Ok(account) => account,
        Err(()) => {
            let body = json!({"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    };
    let url = match reqwest::Url::parse(&format!("http://token/?{}", query.unwrap_or_default())) {
        Ok(url) => url,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let mut access = Vec::new();
    for (key, value) in url.query_pairs() {
        if key == "service" && value != state.settings.service {
            return (StatusCode::BAD_REQUEST, "unknown service").into_response();
        }
        if key != "scope" {
            continue;
        }
        // A scope may hold several space-separated entries; each is
        // `type:name:actions`, and the name may itself contain ':' (a port).
        for scope in value.split(' ').filter(|s| !s.is_empty()) {
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let granted: Vec<&str> = actions
                .split(',')
                .filter(|action| match &account {
                    Some(_) => true,
                    None => state.settings.anonymous_pull && *action == "pull",
                })
                .collect();
            access.push(json!({"type": kind, "name": name, "actions": granted}));
        }
    }
    let subject = account.unwrap_or_default();
    match state.sign(&subject, access) {
        Ok(token) => axum::Json(json!({
            "token": token,
            "access_token": token,
            "expires_in": 300,
        }))
        .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response(),
    }
}
