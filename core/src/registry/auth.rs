//! Registry auth pieces that need no network: parsing `WWW-Authenticate`
//! challenges, token server answers, and the bearer-token cache.
//!
//! The flow itself (anonymous first, then Basic or a token from the realm)
//! lives in `authflow.rs`; `transport.rs` owns the HTTP side.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::Credentials;

/// How long a token lives when the token server does not say (the
/// distribution token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this much before they expire, so a request never
/// leaves with a token that dies in flight.
const TOKEN_EXPIRY_SLACK: Duration = Duration::from_secs(10);
/// Tokens kept at most: a token's scope names the repository, which Pods
/// choose, and a token server's JWT is often over a kilobyte.
const MAX_TOKENS: usize = 4096;

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="…"`: send the user name and password on every request.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: get a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter to pass back, if any.
        service: Option<String>,
        /// `scope` the registry asked for, if any.
        scope: Option<String>,
    },
}

/// Parses the challenges in `WWW-Authenticate` header values and picks the
/// one to answer: Bearer over Basic (a token is scoped and short-lived).
/// Unknown schemes are skipped; `None` when there is nothing usable.
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for value in values {
        for (scheme, params) in split_challenges(value) {
            if scheme.eq_ignore_ascii_case("bearer") {
                let get = |name: &str| {
                    params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                if let Some(realm) = get("realm").filter(|r| !r.is_empty()) {
                    return Some(Challenge::Bearer {
                        realm,
                        service: get("service").filter(|s| !s.is_empty()),
                        scope: get("scope").filter(|s| !s.is_empty()),
                    });
                }
            } else if scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

/// Splits one header value into `(scheme, params)` challenges (RFC 7235):
/// parameters are `name=token` or `name="quoted, \"escaped\""`, separated by
/// commas; a token not followed by `=` starts the next challenge.
fn split_challenges(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    let skip = |i: &mut usize, pred: &dyn Fn(char) -> bool| {
        while *i < chars.len() && pred(chars[*i]) {
            *i += 1;
        }
    };
    let is_token_char = |c: char| !c.is_whitespace() && !matches!(c, ',' | '=' | '"');
    while i < chars.len() {
        skip(&mut i, &|c| c.is_whitespace() || c == ',');
        let start = i;
        skip(&mut i, &is_token_char);
        if start == i {
            // A stray '=' or '"' with no name: skip it rather than loop.
            i += 1;
            continue;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        skip(&mut j, &|c| c == ' ' || c == '\t');
        let is_param = j < chars.len() && chars[j] == '=' && !out.is_empty();
        if !is_param {
            out.push((word, Vec::new()));
            continue;
        }
        i = j + 1;
        skip(&mut i, &|c| c == ' ' || c == '\t');
        let mut val = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                val.push(chars[i]);
                i += 1;
            }
            i += 1; // closing quote (or end of input)
        } else {
            let vstart = i;
            skip(&mut i, &|c| c != ',' && !c.is_whitespace());
            val = chars[vstart..i].iter().collect();
        }
        if let Some((_, params)) = out.last_mut() {
            params.push((word, val));
        }
    }
    out
}

/// A token server's answer (`token` per the Docker spec, `access_token` per OAuth2).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long to keep it, or `None` when the answer has no token.
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = self
            .expires_in
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Some((token, lifetime))
    }
}

/// A short, non-reversible tag for a set of credentials, so tokens fetched
/// with one identity are never reused for another (e.g. two pods' pull secrets).
pub(crate) fn credentials_key(creds: Option<&Credentials>) -> String {
    match creds {
        None => "anonymous".to_string(),
        Some(c) => {
            let mut h = Sha256::new();
            h.update(c.username.as_bytes());
            h.update([0]);
            h.update(c.password.as_bytes());
            hex::encode(&h.finalize()[..12])
        }
    }
}

/// (registry, scope, credentials key).
type TokenKey = (String, String, String);

/// Bearer tokens with the instant they stop being used.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl TokenCache {
    /// A live token, if one is cached.
    pub(crate) fn get(&self, registry: &str, scope: &str, creds: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let key = (registry.to_string(), scope.to_string(), creds.to_string());
        tokens
            .get(&key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    /// Stores a token that lives `lifetime` from now (minus a safety margin).
    pub(crate) fn put(
        &self,
        registry: &str,
        scope: &str,
        creds: &str,
        token: String,
        lifetime: Duration,
    ) {
        let keep = lifetime
            .checked_sub(TOKEN_EXPIRY_SLACK.min(lifetime / 2))
            .unwrap_or_default();
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        super::make_room(&mut tokens, MAX_TOKENS, |_, (_, until)| now < *until);
        tokens.insert(
            (registry.to_string(), scope.to_string(), creds.to_string()),
            (token, now + keep),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Challenge {
        Challenge::Bearer {
            realm: realm.into(),
            service: service.map(Into::into),
            scope: scope.map(Into::into),
        }
    }

    #[rstest::rstest]
    #[case::docker_hub(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        Some(bearer("https://auth.docker.io/token", Some("registry.docker.io"), Some("repository:library/nginx:pull")))
    )]
    #[case::comma_in_scope_and_spaces(
        r#"Bearer realm="https://r.example/token", service="r.example", scope="repository:a/b:pull,push""#,
        Some(bearer("https://r.example/token", Some("r.example"), Some("repository:a/b:pull,push")))
    )]
    #[case::unquoted_and_case(
        r#"bearer Realm=https://t.example/auth,Service=reg"#,
        Some(bearer("https://t.example/auth", Some("reg"), None))
    )]
    #[case::escaped_quote(
        r#"Bearer realm="https://t.example/a\"b",error="invalid_token""#,
        Some(bearer("https://t.example/a\"b", None, None))
    )]
    #[case::basic(r#"Basic realm="Registry Realm""#, Some(Challenge::Basic))]
    #[case::basic_no_params("Basic", Some(Challenge::Basic))]
    #[case::bearer_preferred(
        r#"Basic realm="x", Bearer realm="https://t/tok",service="s""#,
        Some(bearer("https://t/tok", Some("s"), None))
    )]
    #[case::bearer_without_realm(r#"Bearer service="s""#, None)]
    #[case::unknown_scheme(r#"Negotiate abc=="#, None)]
    #[case::empty("", None)]
    #[case::garbage(r#"=,"",=="#, None)]
    fn parses_challenges(#[case] header: &str, #[case] want: Option<Challenge>) {
        assert_eq!(parse_challenges([header]), want);
    }

    #[test]
    fn picks_bearer_across_headers() {
        let got = parse_challenges([r#"Basic realm="r""#, r#"Bearer realm="https://t/x""#]);
        assert_eq!(got, Some(bearer("https://t/x", None, None)));
    }

    #[test]
    fn token_response_accepts_both_field_names() {
        let t: TokenResponse = serde_json::from_str(r#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(
            t.into_token(),
            Some(("abc".into(), Duration::from_secs(300)))
        );
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.into_token(), Some(("xyz".into(), DEFAULT_TOKEN_LIFETIME)));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert_eq!(t.into_token(), None);
    }

    #[test]
    fn token_cache_expires_and_separates_identities() {
        let cache = TokenCache::default();
        let alice = credentials_key(Some(&Credentials {
            username: "alice".into(),
            password: "a".into(),
        }));
        let bob = credentials_key(Some(&Credentials {
            username: "alice".into(),
            password: "b".into(),
        }));
        assert_ne!(alice, bob);
        cache.put("r", "s", &alice, "t1".into(), Duration::from_secs(300));
        assert_eq!(cache.get("r", "s", &alice).as_deref(), Some("t1"));
        assert_eq!(cache.get("r", "s", &bob), None);
        assert_eq!(cache.get("r", "other", &alice), None);
        // A token that lives no longer than the slack is never served.
        cache.put("r", "short", &alice, "t2".into(), Duration::from_millis(0));
        assert_eq!(cache.get("r", "short", &alice), None);
    }

    #[test]
    fn token_cache_is_bounded_and_keeps_the_newest() {
        let cache = TokenCache::default();
        let scope = |i: usize| format!("repository:team/app{i}:pull");
        for i in 0..MAX_TOKENS + 5 {
            cache.put(
                "r",
                &scope(i),
                "",
                format!("t{i}"),
                Duration::from_secs(300),
            );
        }
        let held = cache.tokens.lock().unwrap().len();
        assert!(held <= MAX_TOKENS, "{held} tokens kept");
        let last = MAX_TOKENS + 4;
        assert_eq!(
            cache.get("r", &scope(last), "").as_deref(),
            Some(format!("t{last}").as_str())
        );
    }
}
