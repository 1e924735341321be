//! The OIDC identity token keyless signing presents to Fulcio, found the way
//! cosign finds it in CI, in this order:
//!
//! 1. given explicitly (`--identity-token`: the JWT, or `@FILE` holding it);
//! 2. the `SIGSTORE_ID_TOKEN` environment variable;
//! 3. GitHub Actions' ambient credentials: a GET to
//!    `ACTIONS_ID_TOKEN_REQUEST_URL` with `audience=sigstore`, authorised by
//!    `ACTIONS_ID_TOKEN_REQUEST_TOKEN` (present when the job has
//!    `permissions: id-token: write`).
//!
//! There is no browser flow: CI has no browser, and a person signing by hand
//! can pass a token.
//!
//! The claims are read without checking the token's signature (Fulcio does
//! that); imgate reads them to fail early and clearly on an expired token or
//! one for another audience, to prove possession of the key over the right
//! subject, and to know which certificate identity to expect back.

use std::path::Path;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::services::{Body, Call, ServiceClient};
use super::sign_error::{Service, SigningError};
use super::{IdentityPolicy, Matcher};

/// The audience Fulcio accepts (public-good and the default of a private one).
pub const SIGSTORE_AUDIENCE: &str = "sigstore";
/// Largest token imgate accepts (real ones are 1–2 KiB).
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Clock skew tolerated on `exp` and `nbf`.
const SKEW_SECONDS: i64 = 60;
/// GitHub Actions' OIDC issuer.
const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// GitLab.com's OIDC issuer.
const GITLAB_ISSUER: &str = "https://gitlab.com";

/// An OIDC identity token. Its `Debug` never shows the token.
pub struct IdentityToken {
    raw: Zeroizing<String>,
    origin: String,
    claims: serde_json::Value,
}

impl std::fmt::Debug for IdentityToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityToken")
            .field("origin", &self.origin)
            .field("issuer", &self.issuer())
            .finish_non_exhaustive()
    }
}

impl IdentityToken {
    /// Parse a JWT that came from `origin` and check it can be used now:
    /// the claims `iss`, `sub` and `exp` present, not expired, not before
    /// its `nbf`, and `aud` naming [`SIGSTORE_AUDIENCE`].
    pub fn parse(origin: &str, jwt: &str) -> Result<IdentityToken, SigningError> {
        let fail = |reason: String| SigningError::Token {
            origin: origin.to_string(),
            reason,
        };
        let jwt = jwt.trim();
        if jwt.len() > MAX_TOKEN_BYTES {
            return Err(fail(format!(
                "longer than the {MAX_TOKEN_BYTES} bytes imgate reads"
            )));
        }
        let mut parts = jwt.split('.');
        let (Some(_header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail(
                "not a JWT (three base64url parts separated by dots)".into(),
            ));
        };
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|err| fail(format!("the claims are not base64url: {err}")))?;
        let claims: serde_json::Value = serde_json::from_slice(&payload)
            .map_err(|err| fail(format!("the claims are not JSON: {err}")))?;
        let token = IdentityToken {
            raw: Zeroizing::new(jwt.to_string()),
            origin: origin.to_string(),
            claims,
        };
        for claim in ["iss", "sub"] {
            if token.claim(claim).is_none_or(str::is_empty) {
                return Err(fail(format!("has no {claim:?} claim")));
            }
        }
        let now = jiff::Timestamp::now().as_second();
        let exp = token.claims.get("exp").and_then(serde_json::Value::as_i64);
        match exp {
            None => return Err(fail("has no \"exp\" claim".into())),
            Some(exp) if exp + SKEW_SECONDS < now => {
                return Err(fail(format!(
                    "expired at {} ({} s ago); get a fresh token (CI tokens live minutes)",
                    timestamp_text(exp),
                    now - exp
                )))
            }
            Some(_) => {}
        }
        if let Some(nbf) = token.claims.get("nbf").and_then(serde_json::Value::as_i64) {
            if nbf - SKEW_SECONDS > now {
                return Err(fail(format!("not valid before {}", timestamp_text(nbf))));
            }
        }
        let audiences = token.audiences();
        if !audiences.iter().any(|a| a == SIGSTORE_AUDIENCE) {
            return Err(fail(format!(
                "is for audience {audiences:?}, not {SIGSTORE_AUDIENCE:?}: Fulcio would refuse it; \
                 request the token with audience {SIGSTORE_AUDIENCE}"
            )));
        }
        Ok(token)
    }

    /// Where the token came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The `iss` claim.
    pub fn issuer(&self) -> &str {
        self.claim("iss").unwrap_or_default()
    }

    /// The JWT itself, for Fulcio only.
    pub(crate) fn secret(&self) -> &str {
        &self.raw
    }

    /// What proof of possession signs: the email when the token has one,
    /// else the subject (what Fulcio checks the proof against).
    pub(crate) fn challenge(&self) -> &str {
        self.claim("email")
            .or_else(|| self.claim("sub"))
            .unwrap_or_default()
    }

    /// The certificate identity Fulcio derives from this token: the email
    /// for email issuers; for GitHub Actions the workflow
    /// (`https://github.com/` + `job_workflow_ref`); for GitLab
    /// `https://` + `ci_config_ref_uri`; else the subject. The issuer is the
    /// token's `iss`.
    pub fn expected_identity(&self) -> IdentityPolicy {
        let issuer = self.issuer().to_string();
        let subject = if let Some(email) = self.claim("email") {
            email.to_string()
        } else if let (GITHUB_ACTIONS_ISSUER, Some(wf)) =
            (issuer.as_str(), self.claim("job_workflow_ref"))
        {
            format!("https://github.com/{wf}")
        } else if let (GITLAB_ISSUER, Some(uri)) =
            (issuer.as_str(), self.claim("ci_config_ref_uri"))
        {
            format!("https://{uri}")
        } else {
            self.claim("sub").unwrap_or_default().to_string()
        };
        IdentityPolicy {
            subject: Matcher::exact(subject),
            issuer: Matcher::exact(issuer),
            extensions: Default::default(),
        }
    }

    fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(serde_json::Value::as_str)
    }

    fn audiences(&self) -> Vec<String> {
        match self.claims.get("aud") {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(many)) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
}

pub(crate) fn timestamp_text(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| seconds.to_string())
}

/// Find the identity token: `given` (a JWT, or `@FILE`), else
/// `SIGSTORE_ID_TOKEN`, else GitHub Actions' ambient credentials. `env`
/// reads an environment variable (the process environment in the CLI).
pub(crate) async fn find_identity_token(
    given: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    client: &ServiceClient,
) -> Result<IdentityToken, SigningError> {
    if let Some(given) = given {
        return match given.strip_prefix('@') {
            Some(path) => {
                let origin = format!("--identity-token @{path}");
                let text =
                    read_token_file(Path::new(path)).map_err(|reason| SigningError::Token {
                        origin: origin.clone(),
                        reason,
                    })?;
                IdentityToken::parse(&origin, &text)
            }
            None => IdentityToken::parse("--identity-token", given),
        };
    }
    if let Some(jwt) = env("SIGSTORE_ID_TOKEN").filter(|v| !v.trim().is_empty()) {
        return IdentityToken::parse("SIGSTORE_ID_TOKEN", &jwt);
    }
    let url = env("ACTIONS_ID_TOKEN_REQUEST_URL").filter(|v| !v.is_empty());
    let bearer = env("ACTIONS_ID_TOKEN_REQUEST_TOKEN").filter(|v| !v.is_empty());
    match (url, bearer) {
        (Some(url), Some(bearer)) => github_actions_token(&url, &bearer, client).await,
        (None, None) => Err(SigningError::NoToken),
        (url, _) => {
            let (set, unset) = if url.is_some() {
                (
                    "ACTIONS_ID_TOKEN_REQUEST_URL",
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                )
            } else {
                (
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                    "ACTIONS_ID_TOKEN_REQUEST_URL",
                )
            };
            Err(SigningError::Token {
                origin: "GitHub Actions".into(),
                reason: format!(
                    "{set} is set but {unset} is not; does the job have `permissions: id-token: write`?"
                ),
            })
        }
    }
}

fn read_token_file(path: &Path) -> Result<String, String> {
    let bytes = super::trust::read_bounded(path, MAX_TOKEN_BYTES as u64)?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// Ask GitHub Actions for a token with audience `sigstore`.
async fn github_actions_token(
    request_url: &str,
    bearer: &str,
    client: &ServiceClient,
) -> Result<IdentityToken, SigningError> {
    let mut url = client.check_url(Service::GitHubActions, request_url)?;
    url.query_pairs_mut()
        .append_pair("audience", SIGSTORE_AUDIENCE);
    let body = client
        .send(Call {
            service: Service::GitHubActions,
            url: url.as_str(),
            body: Body::None,
            bearer: Some(bearer),
            accept: "application/json",
            max_bytes: MAX_TOKEN_BYTES,
            retry_server_errors: true,
        })
        .await?;
    #[derive(serde::Deserialize)]
    struct Answer {
        value: String,
    }
    let answer: Answer = serde_json::from_slice(&body).map_err(|err| SigningError::Service {
        service: Service::GitHubActions,
        url: request_url.to_string(),
        answer: format!("not a token answer ({{\"value\": JWT}}): {err}"),
    })?;
    let jwt = Zeroizing::new(answer.value);
    IdentityToken::parse("GitHub Actions", &jwt)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    pub(crate) fn jwt(claims: serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2ln",
            b64.encode(br#"{"alg":"ES256"}"#),
            b64.encode(claims.to_string())
        )
    }

    fn now() -> i64 {
        jiff::Timestamp::now().as_second()
    }

    #[test]
    fn github_tokens_expect_the_workflow_identity() {
        let token = IdentityToken::parse(
            "SIGSTORE_ID_TOKEN",
            &jwt(serde_json::json!({
                "iss": GITHUB_ACTIONS_ISSUER, "sub": "repo:o/r:ref:refs/heads/main",
                "aud": "sigstore", "exp": now() + 300,
                "job_workflow_ref": "o/r/.github/workflows/ci.yml@refs/heads/main",
            })),
        )
        .unwrap();
        let policy = token.expected_identity();
        assert!(policy
            .subject
            .matches("https://github.com/o/r/.github/workflows/ci.yml@refs/heads/main"));
        assert!(policy.issuer.matches(GITHUB_ACTIONS_ISSUER));
        assert_eq!(token.challenge(), "repo:o/r:ref:refs/heads/main");
        assert!(!format!("{token:?}").contains("c2ln"));
    }

    #[test]
    fn email_tokens_expect_and_prove_the_email() {
        let token = IdentityToken::parse(
            "x",
            &jwt(serde_json::json!({
                "iss": "https://issuer.test", "sub": "123", "email": "ci@example.com",
                "aud": ["other", "sigstore"], "exp": now() + 300,
            })),
        )
        .unwrap();
        assert!(token.expected_identity().subject.matches("ci@example.com"));
        assert_eq!(token.challenge(), "ci@example.com");
    }

    #[test]
    fn expired_foreign_and_malformed_tokens_are_named() {
        let cases = [
            (
                serde_json::json!({"iss": "i", "sub": "s", "aud": "sigstore", "exp": now() - 3600}),
                "expired",
            ),
            (
                serde_json::json!({"iss": "i", "sub": "s", "aud": "api://other", "exp": now() + 300}),
                "audience",
            ),
            (
                serde_json::json!({"iss": "i", "sub": "s", "aud": "sigstore", "exp": now() + 300, "nbf": now() + 3600}),
                "not valid before",
            ),
            (
                serde_json::json!({"iss": "i", "aud": "sigstore", "exp": now() + 300}),
                "\"sub\"",
            ),
            (
                serde_json::json!({"iss": "i", "sub": "s", "aud": "sigstore"}),
                "\"exp\"",
            ),
        ];
        for (claims, wanted) in cases {
            let err = IdentityToken::parse("SIGSTORE_ID_TOKEN", &jwt(claims))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(wanted) && err.contains("SIGSTORE_ID_TOKEN"),
                "{wanted}: {err}"
            );
        }
        assert!(IdentityToken::parse("t", "not-a-jwt")
            .unwrap_err()
            .to_string()
            .contains("not a JWT"));
    }

    #[tokio::test]
    async fn sources_are_tried_in_order_and_none_names_all_three() {
        let client = ServiceClient::new(Default::default()).unwrap();
        let good = jwt(
            serde_json::json!({"iss": "https://i.test", "sub": "env", "aud": "sigstore", "exp": now() + 300}),
        );
        let env_good = good.clone();
        let env = move |name: &str| (name == "SIGSTORE_ID_TOKEN").then(|| env_good.clone());
        let flag = jwt(
            serde_json::json!({"iss": "https://i.test", "sub": "flag", "aud": "sigstore", "exp": now() + 300}),
        );
        let token = find_identity_token(Some(&flag), &env, &client)
            .await
            .unwrap();
        assert_eq!(
            (token.origin(), token.challenge()),
            ("--identity-token", "flag")
        );
        let token = find_identity_token(None, &env, &client).await.unwrap();
        assert_eq!(token.challenge(), "env");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{flag}\n")).unwrap();
        let token = find_identity_token(Some(&format!("@{}", file.display())), &env, &client)
            .await
            .unwrap();
        assert_eq!(token.challenge(), "flag");

        let err = find_identity_token(None, &|_| None, &client)
            .await
            .unwrap_err()
            .to_string();
        for named in [
            "--identity-token",
            "SIGSTORE_ID_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "id-token: write",
            "browser",
        ] {
            assert!(err.contains(named), "{named}: {err}");
        }
        let half = |name: &str| {
            (name == "ACTIONS_ID_TOKEN_REQUEST_URL").then(|| "https://x.test".to_string())
        };
        let err = find_identity_token(None, &half, &client)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ACTIONS_ID_TOKEN_REQUEST_TOKEN is not"),
            "{err}"
        );
    }
}
