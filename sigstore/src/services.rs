//! The HTTP side of signing: one client for Fulcio, Rekor, the timestamp
//! authority and GitHub Actions' token endpoint, with the rules every call
//! follows.
//!
//! - **HTTPS only**, unless the host is named in [`ServiceOptions::allow_http`]
//!   (a test instance on loopback). Redirects are not followed, so an
//!   https URL cannot be bounced to plain HTTP. Certificates are checked
//!   against the system roots plus [`ServiceOptions::ca_files`] (a private
//!   instance behind an internal CA).
//! - **A time budget per call**, retries included: connection failures and
//!   429/502/503/504 answers are retried with backoff while the budget lasts;
//!   a call that has not finished when the budget runs out fails with
//!   [`SigningError::Timeout`] naming the service.
//! - **Bounded answers**: each call says how many bytes it reads at most.
//! - **Errors name the service and its answer** (status and the start of the
//!   body).
//!
//! This is imgate's own reqwest client rather than the Sigstore crates'
//! clients (`sigstore-fulcio`, `sigstore-rekor`'s `client`, `sigstore-tsa`'s
//! `client`): those bring a second reqwest major version and read answers
//! without a size bound or retries.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use super::sign_error::{Service, SigningError};

/// How imgate reaches the signing services.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Time for one call to a service, every retry included.
    pub budget: Duration,
    /// Hosts (`HOST` or `HOST:PORT`) that may be reached over plain HTTP.
    pub allow_http: Vec<String>,
    /// PEM bundles of CAs trusted for the services on top of the system roots.
    pub ca_files: Vec<PathBuf>,
}

/// Largest CA bundle read (the Debian system bundle is about 220 KiB).
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// The default budget of one service call (Rekor may take seconds to
/// integrate an entry; a stalled service must not hold CI for minutes).
pub const DEFAULT_SERVICE_BUDGET: Duration = Duration::from_secs(60);

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            budget: DEFAULT_SERVICE_BUDGET,
            allow_http: Vec::new(),
            ca_files: Vec::new(),
        }
    }
}

/// Longest part of an error body quoted in a message.
const ANSWER_EXCERPT: usize = 300;
/// First retry delay; doubled on each retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Most attempts of one call, whatever the budget.
const MAX_ATTEMPTS: u32 = 4;

/// A request body.
pub(crate) enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
    Bytes {
        content_type: &'static str,
        bytes: &'a [u8],
    },
}

/// One call: what, where, and how much of the answer to read.
pub(crate) struct Call<'a> {
    pub service: Service,
    pub url: &'a str,
    pub body: Body<'a>,
    pub bearer: Option<&'a str>,
    pub accept: &'static str,
    pub max_bytes: usize,
    /// Whether a failed attempt may be sent again (false for a log upload
    /// whose request may have been processed).
    pub retry_server_errors: bool,
}

/// The HTTP client for the signing services.
#[derive(Debug, Clone)]
pub(crate) struct ServiceClient {
    http: reqwest::Client,
    opts: ServiceOptions,
}

/// Why one attempt failed.
enum Attempt {
    /// Worth another try (connection refused, 503, ...).
    Transient(String),
    /// Final.
    Fatal(SigningError),
}

impl ServiceClient {
    pub(crate) fn new(opts: ServiceOptions) -> Result<ServiceClient, SigningError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(opts.budget.min(Duration::from_secs(15)))
            .user_agent(concat!("imgate/", env!("CARGO_PKG_VERSION")));
        for path in &opts.ca_files {
            for cert in read_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|err| SigningError::Config {
            name: "HTTP client".into(),
            reason: err.to_string(),
        })?;
        Ok(ServiceClient { http, opts })
    }

    /// `url`, parsed, if it may be used for `service`: https, or http to an
    /// allowed host.
    pub(crate) fn check_url(&self, service: Service, url: &str) -> Result<url::Url, SigningError> {
        let parsed = url::Url::parse(url).map_err(|err| SigningError::Service {
            service,
            url: url.to_string(),
            answer: format!("not a URL: {err}"),
        })?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" if http_allowed(&parsed, &self.opts.allow_http) => Ok(parsed),
            "http" => Err(SigningError::Insecure {
                service,
                url: url.to_string(),
            }),
            other => Err(SigningError::Service {
                service,
                url: url.to_string(),
                answer: format!("unsupported URL scheme {other:?}"),
            }),
        }
    }

    /// Send `call` (POST with a body, GET without), retrying transient
    /// failures within the budget; the body of a 2xx answer.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Vec<u8>, SigningError> {
        let url = self.check_url(call.service, call.url)?;
        let started = Instant::now();
        let budget = self.opts.budget;
        let mut attempts = 0u32;
        let mut backoff = FIRST_BACKOFF;
        loop {
            attempts += 1;
            let remaining = budget.saturating_sub(started.elapsed());
            let outcome = tokio::time::timeout(remaining, self.attempt(&call, &url)).await;
            let last = match outcome {
                Ok(Ok(body)) => return Ok(body),
                Ok(Err(Attempt::Fatal(err))) => return Err(err),
                Ok(Err(Attempt::Transient(why))) => why,
                Err(_) => "no answer in time".to_string(),
            };
            let remaining = budget.saturating_sub(started.elapsed());
            if attempts >= MAX_ATTEMPTS || remaining <= backoff {
                return Err(SigningError::Timeout {
                    service: call.service,
                    url: call.url.to_string(),
                    budget,
                    attempts,
                    last,
                });
            }
            tracing::debug!(service = %call.service, url = call.url, attempt = attempts, reason = %last, "retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    async fn attempt(&self, call: &Call<'_>, url: &url::Url) -> Result<Vec<u8>, Attempt> {
        let fail = |answer: String| {
            Attempt::Fatal(SigningError::Service {
                service: call.service,
                url: call.url.to_string(),
                answer,
            })
        };
        let mut req = match call.body {
            Body::None => self.http.get(url.clone()),
            Body::Json(value) => self.http.post(url.clone()).json(value),
            Body::Bytes {
                content_type,
                bytes,
            } => self
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, content_type)
                .body(bytes.to_vec()),
        };
        req = req.header(ACCEPT, call.accept);
        if let Some(token) = call.bearer {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| fail("the bearer token is not a valid header value".into()))?;
            value.set_sensitive(true);
            req = req.header(AUTHORIZATION, value);
        }
        let mut resp = match req.send().await {
            Ok(resp) => resp,
            // A certificate the client refuses is refused again: no retry.
            Err(err) if imgate_keys::find_in_chain::<rustls::Error>(&err).is_some() => {
                return Err(fail(format!(
                    "TLS failed: {} (a private instance's CA is named with --sigstore-ca)",
                    source_text(&err)
                )))
            }
            // Nothing reached the service: always safe to send again.
            Err(err) if err.is_connect() => {
                return Err(Attempt::Transient(format!(
                    "cannot connect: {}",
                    source_text(&err)
                )))
            }
            Err(err) if call.retry_server_errors => {
                return Err(Attempt::Transient(source_text(&err)))
            }
            Err(err) => return Err(fail(source_text(&err))),
        };
        let status = resp.status();
        let body = read_bounded(&mut resp, call.max_bytes)
            .await
            .map_err(|why| fail(format!("answered {status} and then {why}")))?;
        if status.is_success() {
            return Ok(body);
        }
        let answer = format!("answered {status}: {}", excerpt(&body));
        // 429 and 503 say the request was not processed, so even a log
        // upload may be sent again; 502 and 504 leave that open.
        let unprocessed = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let gateway = matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
        );
        if unprocessed || gateway && call.retry_server_errors {
            return Err(Attempt::Transient(answer));
        }
        Err(fail(answer))
    }
}

/// Whether `url`'s host (or `host:port`) is in `allowed`.
fn http_allowed(url: &url::Url, allowed: &[String]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let with_port = url.port().map(|port| format!("{host}:{port}"));
    allowed.iter().any(|entry| {
        let entry = entry.trim().trim_end_matches('/');
        entry.eq_ignore_ascii_case(host)
            || with_port
                .as_deref()
                .is_some_and(|hp| entry.eq_ignore_ascii_case(hp))
    })
}

/// Read at most `limit` bytes of the body, failing when there are more.
async fn read_bounded(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|len| len > limit as u64) {
        return Err(format!("sent more than the {limit} bytes imgate reads"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|err| source_text(&err))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("sent more than the {limit} bytes imgate reads"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error body, printable on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ANSWER_EXCERPT)
        .collect();
    out = out.trim().to_string();
    if text.chars().count() > ANSWER_EXCERPT {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    out
}

/// The certificates of a PEM bundle; an unreadable, oversized or empty file
/// is an error naming it, before any service is called.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, SigningError> {
    let bad = |reason: String| SigningError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = super::trust::read_bounded(path, MAX_CA_FILE_BYTES).map_err(bad)?;
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| bad(source_text(&err)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificates found".into()));
    }
    Ok(certs)
}

/// A reqwest error with its causes (reqwest's own text is often just
/// "error sending request").
fn source_text(err: &reqwest::Error) -> String {
    imgate_keys::error_chain(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn http_is_refused_unless_the_host_is_allowed() {
        let client = ServiceClient::new(ServiceOptions {
            budget: Duration::from_secs(1),
            allow_http: vec!["127.0.0.1".into(), "fulcio.test:8080".into()],
            ca_files: Vec::new(),
        })
        .unwrap();
        assert!(client
            .check_url(Service::Fulcio, "https://fulcio.example")
            .is_ok());
        assert!(client
            .check_url(Service::Fulcio, "http://127.0.0.1:9/x")
            .is_ok());
        assert!(client
            .check_url(Service::Fulcio, "http://fulcio.test:8080")
            .is_ok());
        for bad in [
            "http://fulcio.test:8081",
            "http://fulcio.example",
            "http://127.0.0.2",
        ] {
            let err = client.check_url(Service::Rekor, bad).unwrap_err();
            assert!(matches!(err, SigningError::Insecure { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("Rekor"), "{err}");
        }
        assert!(client
            .check_url(Service::Tsa, "file:///etc/passwd")
            .is_err());
    }

    /// Serve `router` on loopback; its base URL.
    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    fn client() -> ServiceClient {
        ServiceClient::new(ServiceOptions {
            budget: Duration::from_secs(5),
            allow_http: vec!["127.0.0.1".into()],
            ca_files: Vec::new(),
        })
        .unwrap()
    }

    fn get(url: &str, max_bytes: usize) -> Call<'_> {
        Call {
            service: Service::Rekor,
            url,
            body: Body::None,
            bearer: None,
            accept: "application/json",
            max_bytes,
            retry_server_errors: true,
        }
    }

    #[tokio::test]
    async fn answers_over_the_bound_are_refused() {
        use axum::routing::get as route;
        let base =
            serve(axum::Router::new().route("/big", route(|| async { vec![b'x'; 4096] }))).await;
        let url = format!("{base}/big");
        let err = client()
            .send(get(&url, 1024))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than the 1024 bytes"), "{err}");
        assert_eq!(client().send(get(&url, 4096)).await.unwrap().len(), 4096);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        use axum::routing::get as route;
        let base = serve(axum::Router::new().route(
            "/moved",
            route(|| async { axum::response::Redirect::temporary("http://example.invalid/") }),
        ))
        .await;
        let url = format!("{base}/moved");
        let err = client()
            .send(get(&url, 1024))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("answered 307"), "{err}");
    }

    #[test]
    fn excerpts_are_one_bounded_line() {
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(
            excerpt(b"{\"code\":403,\n\"message\":\"no\"}"),
            "{\"code\":403, \"message\":\"no\"}"
        );
        let long = "x".repeat(1000);
        let short = excerpt(long.as_bytes());
        assert_eq!(short.chars().count(), ANSWER_EXCERPT + 1);
    }
}
