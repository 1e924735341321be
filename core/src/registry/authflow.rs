//! The registry auth flow on the wire: which credentials a request presents
//! (explicit ones, then the docker config and its credential helpers), the
//! challenge each registry last sent, and answering it: Basic credentials or
//! a bearer token fetched from the realm (GET with Basic, or the OAuth2
//! refresh-token POST for identity tokens), cached per scope and credential.
//! The parsing and the token cache, which need no network, are in
//! `auth.rs`; sending, retries and body reads in `transport.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::HeaderValue;

use super::auth::{credentials_key, Challenge, TokenResponse};
use super::dockerconfig::{normalise_host, IDENTITY_TOKEN_USER};
use super::transport::{error_detail, oversize_protocol, read_body, Shared};
use super::{Credentials, RegistryError};
use crate::reference::ImageRef;

/// Token server answers larger than this are not tokens.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// Registries whose auth challenge is remembered at most (a trusted
/// wildcard such as `*.example.com` lets Pods name any number of hosts).
const MAX_REMEMBERED_REGISTRIES: usize = 1024;

impl Shared {
    /// Credentials for `image`'s registry: explicit ones (`extra` from
    /// `with_credentials`, then the config's), then the docker config.
    pub(super) async fn credentials(
        &self,
        extra: &BTreeMap<String, Credentials>,
        image: &ImageRef,
    ) -> Result<Option<Credentials>, RegistryError> {
        let host = normalise_host(&image.registry);
        let explicit = [extra, &self.config.credentials]
            .into_iter()
            .find_map(|map| {
                map.get(&image.registry)
                    .or_else(|| map.get(image.api_host()))
                    .or_else(|| {
                        map.iter()
                            .find(|(k, _)| normalise_host(k) == host)
                            .map(|(_, v)| v)
                    })
            });
        if let Some(creds) = explicit {
            return Ok(Some(creds.clone()));
        }
        let Some(docker) = &self.docker else {
            return Ok(None);
        };
        let mut answers = self.helper_answers.lock().await;
        if let Some(answer) = answers.get(&host) {
            return Ok(answer.clone());
        }
        let answer = docker.lookup(&host, self.config.request_timeout).await?;
        answers.insert(host, answer.clone());
        Ok(answer)
    }

    pub(super) fn remember_challenge(&self, registry: &str, challenge: &Challenge) {
        let mut challenges = self.challenges.lock().unwrap_or_else(|e| e.into_inner());
        // A forgotten challenge costs one 401 round trip, nothing more.
        super::make_room(&mut challenges, MAX_REMEMBERED_REGISTRIES, |_, _| false);
        challenges.insert(registry.to_string(), challenge.clone());
    }

    pub(super) fn known_challenge(&self, registry: &str) -> Option<Challenge> {
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
            .cloned()
    }

    /// The `Authorization` value answering `challenge` for `scope`.
    pub(super) async fn authorize(
        &self,
        extra: &BTreeMap<String, Credentials>,
        image: &ImageRef,
        scope: &str,
        challenge: &Challenge,
        fresh: bool,
        creds_cache: &mut Option<Option<Credentials>>,
    ) -> Result<HeaderValue, RegistryError> {
        let registry = image.registry.as_str();
        if creds_cache.is_none() {
            *creds_cache = Some(self.credentials(extra, image).await?);
        }
        let creds = creds_cache.as_ref().and_then(Option::as_ref);
        match challenge {
            Challenge::Basic => {
                let Some(creds) = creds.filter(|c| c.username != IDENTITY_TOKEN_USER) else {
                    return Err(RegistryError::Unauthorized {
                        registry: registry.to_string(),
                        status: 401,
                        detail: "the registry wants a user name and password and none are configured for it".to_string(),
                    });
                };
                header_value(&basic(creds), registry)
            }
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                let key = credentials_key(creds);
                if !fresh {
                    if let Some(token) = self.tokens.get(registry, scope, &key) {
                        return header_value(&format!("Bearer {token}"), registry);
                    }
                }
                let (token, lifetime) = self
                    .fetch_token(
                        image,
                        realm,
                        service.as_deref(),
                        scope,
                        asked.as_deref(),
                        creds,
                    )
                    .await?;
                self.tokens
                    .put(registry, scope, &key, token.clone(), lifetime);
                header_value(&format!("Bearer {token}"), registry)
            }
        }
    }

    /// Gets a token from the realm: GET with Basic credentials (or none), or
    /// the OAuth2 refresh-token POST for an identity token.
    async fn fetch_token(
        &self,
        image: &ImageRef,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        asked: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<(String, Duration), RegistryError> {
        let registry = image.registry.as_str();
        let mut url = url::Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: registry.to_string(),
            detail: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RegistryError::Protocol {
                registry: registry.to_string(),
                detail: format!("token realm {realm:?} is not http(s)"),
            });
        }
        let mut scopes = vec![scope.to_string()];
        if let Some(asked) = asked.filter(|a| *a != scope) {
            scopes.push(asked.to_string());
        }
        let identity_token = creds.filter(|c| c.username == IDENTITY_TOKEN_USER);
        {
            let mut q = url.query_pairs_mut();
            if identity_token.is_none() {
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in &scopes {
                    q.append_pair("scope", s);
                }
            }
        }
        // The token server is often the registry itself, behind the same CA.
        let http = self.http(image);
        let build = || {
            if let Some(token) = identity_token {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token.password),
                    ("client_id", "imgate"),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let joined = scopes.join(" ");
                let mut body = url::form_urlencoded::Serializer::new(String::new());
                body.extend_pairs(form);
                body.append_pair("scope", &joined);
                http.post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.finish())
            } else {
                let mut req = http.get(url.clone());
                if let Some(c) = creds {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                req
            }
        };
        let resp = self.send_retrying(registry, &build).await?;
        let status = resp.status();
        if !status.is_success() {
            let detail = error_detail(resp).await;
            let who = creds.map_or("anonymously".to_string(), |c| {
                format!("as user {:?}", c.username)
            });
            return Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                status: status.as_u16(),
                detail: format!("token server {realm} refused a token for {scope} {who}: {detail}"),
            });
        }
        let body = read_body(
            resp,
            MAX_TOKEN_RESPONSE,
            registry,
            "token response",
            self.config.request_timeout,
            &oversize_protocol(registry, "token response", MAX_TOKEN_RESPONSE),
        )
        .await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: registry.to_string(),
                detail: format!("token server {realm} sent invalid JSON: {e}"),
            })?;
        parsed.into_token().ok_or_else(|| RegistryError::Protocol {
            registry: registry.to_string(),
            detail: format!("token server {realm} sent no token"),
        })
    }
}

fn basic(creds: &Credentials) -> String {
    let raw = format!("{}:{}", creds.username, creds.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn header_value(value: &str, registry: &str) -> Result<HeaderValue, RegistryError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        RegistryError::Config(format!(
            "credentials for {registry} contain characters not allowed in an HTTP header"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_is_sensitive() {
        let creds = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        assert_eq!(basic(&creds), "Basic dTpwOnc=");
        assert!(header_value(&basic(&creds), "r").unwrap().is_sensitive());
    }
}
