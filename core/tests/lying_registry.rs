//! The registry client against an in-process registry that lies: wrong
//! `Docker-Content-Digest` headers, bodies that do not hash to the digest
//! asked for, truncated blobs, 500s and 429s, hangs, Bearer and Basic auth,
//! an index behind a tag, the referrers API present and absent, uploads with
//! relative `Location`s and oversized manifests.
//!
//! The server is axum on 127.0.0.1:0 with one hand-written router, so each
//! lie is explicit. Every test bounds its own run time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use imgate_core::oci;
use imgate_core::registry::{
    ClientConfig, Credentials, RegistryClient, RegistryError, RegistrySettings,
};
use imgate_core::{Digest, ImageRef};

/// The single-platform manifest every honest route serves.
const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
const BLOB: &[u8] = b"a blob the registry will cut short, or swap for another";
const TOKEN_USER: &str = "alice";
const TOKEN_PASSWORD: &str = "s3cret";

#[derive(Default)]
struct Lies {
    port: u16,
    /// Requests seen per route label.
    hits: Mutex<HashMap<&'static str, u64>>,
    /// Tokens handed out.
    tokens_issued: AtomicU64,
    /// Blobs uploaded (digest -> bytes).
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    /// The manifests pushed (reference -> (content type, bytes)).
    manifests: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl Lies {
    fn hit(&self, label: &'static str) -> u64 {
        let mut hits = self.hits.lock().unwrap();
        let n = hits.entry(label).or_default();
        *n += 1;
        *n
    }
    fn hits(&self, label: &'static str) -> u64 {
        self.hits.lock().unwrap().get(label).copied().unwrap_or(0)
    }
}

fn index_body() -> String {
    let a = Digest::sha256(b"amd64 manifest");
    let b = Digest::sha256(b"arm64 manifest");
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{a}","size":10,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{b}","size":10,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
    )
}

fn manifest_response(
    body: impl Into<Body>,
    media_type: &str,
    digest_header: Option<&Digest>,
) -> Response {
    let mut resp = (
        StatusCode::OK,
        [("content-type", media_type.to_string())],
        body.into(),
    )
        .into_response();
    if let Some(d) = digest_header {
        resp.headers_mut()
            .insert("docker-content-digest", d.as_str().parse().unwrap());
    }
    resp
}

fn basic_ok(headers: &HeaderMap) -> bool {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{TOKEN_PASSWORD}"))
    );
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

async fn route(
    State(lies): State<Arc<Lies>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let good = Digest::sha256(MANIFEST.as_bytes());
    match (method.clone(), parts.as_slice()) {
        // (a) a wrong Docker-Content-Digest header for an honest body.
        (Method::GET, ["v2", "wrongheader", "manifests", "v1"]) => manifest_response(
            MANIFEST,
            oci::OCI_MANIFEST,
            Some(&Digest::sha256(b"something else")),
        ),
        // (b) asked by digest, answers other bytes (with a header that agrees
        // with the request, as a lying cache would).
        (Method::GET, ["v2", "badbody", "manifests", reference]) => {
            let asked = Digest::parse(reference).unwrap();
            manifest_response(
                r#"{"schemaVersion":2,"evil":true}"#,
                oci::OCI_MANIFEST,
                Some(&asked),
            )
        }
        (Method::GET, ["v2", "good", "manifests", _]) => {
            manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
        }
        // (c) a blob cut off half way through its announced length.
        (Method::GET, ["v2", "trunc", "blobs", _]) => {
            let half = Bytes::from_static(&BLOB[..BLOB.len() / 2]);
            // The pause lets the headers and first half reach the client
            // before the connection drops.
            let stream = futures::stream::unfold(0, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Some((Err(std::io::Error::other("connection dropped")), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut()
                .insert("content-length", BLOB.len().to_string().parse().unwrap());
            resp
        }
        // A full-length blob whose bytes are not the ones asked for.
        (Method::GET, ["v2", "swapped", "blobs", _]) => {
            (StatusCode::OK, b"other bytes".to_vec()).into_response()
        }
        (Method::GET, ["v2", "good", "blobs", _]) => {
            (StatusCode::OK, BLOB.to_vec()).into_response()
        }
        // (d) 500 on the first request, then the truth.
        (Method::GET, ["v2", "flaky", "manifests", "v1"]) => {
            if lies.hit("flaky") == 1 {
                (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
            } else {
                manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
            }
        }
        // 429 with Retry-After on the first request.
        (Method::GET, ["v2", "ratelimited", "manifests", "v1"]) => {
            if lies.hit("ratelimited") == 1 {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "slow down",
                )
                    .into_response()
            } else {
                manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
            }
        }
        (Method::GET, ["v2", "alwaysdown", "manifests", "v1"]) => {
            lies.hit("alwaysdown");
            (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
        }
        // (e) never answers.
        (Method::GET, ["v2", "hang", "manifests", "v1"]) => {
            lies.hit("hang");
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        // (f) Bearer: a token from /token, which wants alice's password.
        (Method::GET, ["v2", "private", "manifests", "v1"]) => {
            lies.hit("private");
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth.starts_with("Bearer tok-") {
                manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
            } else {
                let challenge = format!(
                    r#"Bearer realm="http://127.0.0.1:{}/token",service="lying",scope="repository:private:pull""#,
                    lies.port
                );
                (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", challenge)],
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )
                    .into_response()
            }
        }
        (Method::GET, ["token"]) => {
            lies.hit("token");
            let query = uri.query().unwrap_or("");
            if !query.contains("service=lying")
                || !query.contains("scope=repository%3Aprivate%3Apull")
            {
                return (StatusCode::BAD_REQUEST, format!("bad query {query}")).into_response();
            }
            if !basic_ok(&headers) {
                return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
            }
            let n = lies.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
            // `access_token` (OAuth2 style) rather than `token`, on purpose.
            axum::Json(serde_json::json!({"access_token": format!("tok-{n}"), "expires_in": 300}))
                .into_response()
        }
        // (g) Basic.
        (Method::GET, ["v2", "basic", "manifests", "v1"]) => {
            lies.hit("basic");
            if basic_ok(&headers) {
                manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", r#"Basic realm="lying""#)],
                    "",
                )
                    .into_response()
            }
        }
        // (h) an index behind a tag, with a Content-Type that says otherwise.
        (Method::GET, ["v2", "multi", "manifests", _]) => {
            let body = index_body();
            let d = Digest::sha256(body.as_bytes());
            manifest_response(body, "application/json", Some(&d))
        }
        // (i) referrers: absent for one repository, present for another.
        (Method::GET, ["v2", "noreferrers", "referrers", _]) => {
            StatusCode::NOT_FOUND.into_response()
        }
        (Method::GET, ["v2", "good", "referrers", _]) => {
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{good}","size":{},"artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json"}}]}}"#,
                MANIFEST.len()
            );
            (StatusCode::OK, [("content-type", oci::OCI_INDEX)], body).into_response()
        }
        // A manifest larger than any real one.
        (Method::GET, ["v2", "huge", "manifests", _]) => {
            manifest_response(vec![b' '; 5 << 20], oci::OCI_MANIFEST, None)
        }
        // Uploads: HEAD, POST (relative Location with its own query), PUT.
        (Method::HEAD, ["v2", "push", "blobs", digest]) => {
            if lies.blobs.lock().unwrap().contains_key(*digest) {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        }
        (Method::POST, ["v2", "push", "blobs", "uploads", ""]) => {
            lies.hit("upload-start");
            (
                StatusCode::ACCEPTED,
                [("location", "/v2/push/blobs/uploads/u1?_state=opaque")],
            )
                .into_response()
        }
        (Method::PUT, ["v2", "push", "blobs", "uploads", "u1"]) => {
            let query: HashMap<String, String> =
                url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            let Some(digest) = query.get("digest") else {
                return (StatusCode::BAD_REQUEST, "no digest").into_response();
            };
            if query.get("_state").map(String::as_str) != Some("opaque") {
                return (StatusCode::BAD_REQUEST, "lost _state").into_response();
            }
            if Digest::sha256(&body).as_str() != digest {
                return (StatusCode::BAD_REQUEST, "digest does not match body").into_response();
            }
            lies.blobs
                .lock()
                .unwrap()
                .insert(digest.clone(), body.to_vec());
            (
                StatusCode::CREATED,
                [("docker-content-digest", digest.clone())],
            )
                .into_response()
        }
        (Method::PUT, ["v2", "push", "manifests", reference]) => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let d = Digest::sha256(&body);
            lies.manifests
                .lock()
                .unwrap()
                .insert(reference.to_string(), (ct, body.to_vec()));
            (
                StatusCode::CREATED,
                [("docker-content-digest", d.to_string())],
            )
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, format!("no route {method} {path}")).into_response(),
    }
}

struct Server {
    lies: Arc<Lies>,
    host: String,
}

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let lies = Arc::new(Lies {
        port,
        ..Lies::default()
    });
    let app = axum::Router::new()
        .fallback(route)
        .with_state(Arc::clone(&lies));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        lies,
        host: format!("127.0.0.1:{port}"),
    }
}

impl Server {
    fn config(&self) -> ClientConfig {
        let mut registries = BTreeMap::new();
        registries.insert(
            self.host.clone(),
            RegistrySettings {
                http: true,
                ca_file: None,
            },
        );
        ClientConfig {
            registries,
            use_docker_config: false,
            request_timeout: Duration::from_secs(5),
            retries: 2,
            ..ClientConfig::default()
        }
    }
    fn client(&self) -> RegistryClient {
        RegistryClient::new(self.config()).unwrap()
    }
    fn image(&self, repo_and_ref: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{repo_and_ref}", self.host)).unwrap()
    }
    fn creds(&self, password: &str) -> BTreeMap<String, Credentials> {
        BTreeMap::from([(
            self.host.clone(),
            Credentials {
                username: TOKEN_USER.into(),
                password: password.into(),
            },
        )])
    }
}

/// Every test gets at most this long, so a hang is a failure, not a stuck CI job.
async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test took longer than 30s")
}

#[tokio::test]
async fn honest_tag_resolves_to_the_hash_of_its_bytes() {
    let s = start().await;
    let r = bounded(s.client().resolve(&s.image("good:v1")))
        .await
        .unwrap();
    let want = Digest::sha256(MANIFEST.as_bytes());
    assert_eq!(r.manifest.digest, want);
    assert_eq!(r.pinned.digest.as_ref(), Some(&want));
    assert_eq!(r.pinned.tag.as_deref(), Some("v1"));
    assert_eq!(r.manifest.media_type, oci::OCI_MANIFEST);
    assert!(r.platforms.is_empty());
    assert_eq!(r.manifest.bytes, MANIFEST.as_bytes());
}

#[tokio::test]
async fn wrong_digest_header_is_a_mismatch_naming_both() {
    let s = start().await;
    let err = bounded(s.client().resolve(&s.image("wrongheader:v1")))
        .await
        .unwrap_err();
    let lie = Digest::sha256(b"something else");
    let truth = Digest::sha256(MANIFEST.as_bytes());
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(lie.as_str()) && msg.contains(truth.as_str()),
        "{msg}"
    );
}

#[tokio::test]
async fn body_not_matching_the_requested_digest_is_a_mismatch() {
    let s = start().await;
    let asked = Digest::sha256(MANIFEST.as_bytes());
    let image = s.image(&format!("badbody@{asked}"));
    let err = bounded(s.client().resolve(&image)).await.unwrap_err();
    let got = Digest::sha256(br#"{"schemaVersion":2,"evil":true}"#);
    match &err {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &asked);
            assert_eq!(actual, &got);
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains(asked.as_str()) && err.to_string().contains(got.as_str()));
    // get_manifest by digest says the same.
    let err = bounded(s.client().get_manifest(&image, asked.as_str()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn blobs_are_checked_and_truncation_is_an_error() {
    let s = start().await;
    let client = s.client();
    let d = Digest::sha256(BLOB);
    assert_eq!(
        bounded(client.get_blob(&s.image("good:x"), &d))
            .await
            .unwrap(),
        BLOB
    );
    let err = bounded(client.get_blob(&s.image("trunc:x"), &d))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("ended early"), "{err}");
    let err = bounded(client.get_blob(&s.image("swapped:x"), &d))
        .await
        .unwrap_err();
    match err {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, d);
            assert_eq!(actual, Digest::sha256(b"other bytes"));
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
}

#[tokio::test]
async fn a_500_is_retried_and_counted() {
    let s = start().await;
    let client = s.client();
    let r = bounded(client.resolve(&s.image("flaky:v1"))).await.unwrap();
    assert_eq!(r.manifest.digest, Digest::sha256(MANIFEST.as_bytes()));
    assert_eq!(s.lies.hits("flaky"), 2);
    assert_eq!(client.request_count(), 2);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let s = start().await;
    let started = Instant::now();
    bounded(s.client().resolve(&s.image("ratelimited:v1")))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.lies.hits("ratelimited"), 2);
}

#[tokio::test]
async fn retries_give_up_with_the_status() {
    let s = start().await;
    let client = s.client();
    let err = bounded(client.resolve(&s.image("alwaysdown:v1")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 503, .. }),
        "{err}"
    );
    // One try and the configured two retries.
    assert_eq!(s.lies.hits("alwaysdown"), 3);
    assert_eq!(client.request_count(), 3);
}

#[tokio::test]
async fn a_hanging_registry_times_out() {
    let s = start().await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(500),
        ..s.config()
    };
    let client = RegistryClient::new(config).unwrap();
    let started = Instant::now();
    let err = bounded(client.resolve(&s.image("hang:v1")))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(err.to_string().contains(&s.host), "{err}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    // Bind and drop to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let config = ClientConfig {
        registries: BTreeMap::from([(
            host.clone(),
            RegistrySettings {
                http: true,
                ca_file: None,
            },
        )]),
        use_docker_config: false,
        retries: 1,
        ..ClientConfig::default()
    };
    let client = RegistryClient::new(config).unwrap();
    let image = ImageRef::parse(&format!("{host}/x:v1")).unwrap();
    let err = bounded(client.resolve(&image)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&host), "{err}");
    assert_eq!(client.request_count(), 2, "one try and one retry");
}

#[tokio::test]
async fn bearer_flow_fetches_one_token_and_reuses_it() {
    let s = start().await;
    let base = s.client();
    let client = base.with_credentials(s.creds(TOKEN_PASSWORD));
    let image = s.image("private:v1");
    let r = bounded(client.resolve(&image)).await.unwrap();
    assert_eq!(r.manifest.digest, Digest::sha256(MANIFEST.as_bytes()));
    // 401, token, retry with the token.
    assert_eq!(client.request_count(), 3);
    bounded(client.resolve(&image)).await.unwrap();
    // The token is cached and sent up front: one request.
    assert_eq!(client.request_count(), 4);
    assert_eq!(s.lies.tokens_issued.load(Ordering::SeqCst), 1);
    assert_eq!(s.lies.hits("private"), 3);
    // Clones share the counter.
    assert_eq!(base.request_count(), 4);

    // Without credentials the token server refuses: Unauthorized, naming the registry.
    let err = bounded(base.resolve(&image)).await.unwrap_err();
    match &err {
        RegistryError::Unauthorized {
            registry, status, ..
        } => {
            assert_eq!(registry, &s.host);
            assert_eq!(*status, 401);
        }
        other => panic!("expected unauthorized, got {other}"),
    }
    // A clone with other credentials does not reuse alice's token.
    let err = bounded(base.with_credentials(s.creds("wrong")).resolve(&image))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert_eq!(s.lies.tokens_issued.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn basic_auth_with_wrong_credentials_is_unauthorized() {
    let s = start().await;
    let image = s.image("basic:v1");
    let err = bounded(
        s.client()
            .with_credentials(s.creds("wrong"))
            .resolve(&image),
    )
    .await
    .unwrap_err();
    match &err {
        RegistryError::Unauthorized {
            registry,
            status,
            detail,
        } => {
            assert_eq!(registry, &s.host);
            assert_eq!(*status, 401);
            assert!(!detail.contains("wrong"), "the password leaked: {detail}");
        }
        other => panic!("expected unauthorized, got {other}"),
    }
    assert!(
        err.to_string().contains(&s.host) && err.to_string().contains("401"),
        "{err}"
    );
    // No credentials at all: also unauthorized, and says so.
    let err = bounded(s.client().resolve(&image)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    // The right ones work, and later requests send them up front.
    let client = s.client().with_credentials(s.creds(TOKEN_PASSWORD));
    bounded(client.resolve(&image)).await.unwrap();
    assert_eq!(client.request_count(), 2);
    bounded(client.resolve(&image)).await.unwrap();
    assert_eq!(client.request_count(), 3);
}

#[tokio::test]
async fn an_index_stays_an_index() {
    let s = start().await;
    let r = bounded(s.client().resolve(&s.image("multi:v1")))
        .await
        .unwrap();
    let body = index_body();
    assert_eq!(r.manifest.digest, Digest::sha256(body.as_bytes()));
    assert_eq!(r.pinned.digest, Some(Digest::sha256(body.as_bytes())));
    assert!(
        oci::is_index(&r.manifest.media_type),
        "{}",
        r.manifest.media_type
    );
    let platforms: Vec<(String, Digest)> = r
        .platforms
        .iter()
        .map(|(p, d)| (p.as_ref().unwrap().to_string(), d.clone()))
        .collect();
    assert_eq!(
        platforms,
        vec![
            ("linux/amd64".to_string(), Digest::sha256(b"amd64 manifest")),
            (
                "linux/arm64/v8".to_string(),
                Digest::sha256(b"arm64 manifest")
            ),
        ]
    );
}

#[tokio::test]
async fn referrers_absent_and_present() {
    let s = start().await;
    let client = s.client();
    let d = Digest::sha256(MANIFEST.as_bytes());
    assert!(bounded(client.referrers(&s.image("noreferrers:v1"), &d))
        .await
        .unwrap()
        .is_none());
    let index = bounded(client.referrers(&s.image("good:v1"), &d))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(index.manifests.len(), 1);
    assert_eq!(index.manifests[0].digest, d);
    assert_eq!(
        index.manifests[0].artifact_type.as_deref(),
        Some("application/vnd.dev.sigstore.bundle.v0.3+json")
    );
}

#[tokio::test]
async fn oversized_manifests_are_refused() {
    let s = start().await;
    let err = bounded(s.client().resolve(&s.image("huge:v1")))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn uploads_follow_relative_locations_and_skip_existing_blobs() {
    let s = start().await;
    let client = s.client();
    let image = s.image("push:v1");
    let d = bounded(client.put_blob(&image, BLOB)).await.unwrap();
    assert_eq!(d, Digest::sha256(BLOB));
    assert_eq!(s.lies.blobs.lock().unwrap().get(d.as_str()).unwrap(), BLOB);
    assert_eq!(s.lies.hits("upload-start"), 1);
    // Already there: a HEAD and nothing else.
    let before = client.request_count();
    bounded(client.put_blob(&image, BLOB)).await.unwrap();
    assert_eq!(client.request_count(), before + 1);
    assert_eq!(s.lies.hits("upload-start"), 1);

    let md = bounded(client.put_manifest(&image, "v1", oci::OCI_MANIFEST, MANIFEST.as_bytes()))
        .await
        .unwrap();
    assert_eq!(md, Digest::sha256(MANIFEST.as_bytes()));
    let (ct, bytes) = s.lies.manifests.lock().unwrap().get("v1").cloned().unwrap();
    assert_eq!(ct, oci::OCI_MANIFEST);
    assert_eq!(bytes, MANIFEST.as_bytes());
    // Pushing by a digest the bytes do not have is refused before sending.
    let wrong = Digest::sha256(b"nope");
    let err = bounded(client.put_manifest(
        &image,
        wrong.as_str(),
        oci::OCI_MANIFEST,
        MANIFEST.as_bytes(),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn not_found_names_the_tag_and_repository() {
    let s = start().await;
    let err = bounded(s.client().resolve(&s.image("nothere:v9")))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("v9") && msg.contains("nothere"), "{msg}");
}

#[tokio::test]
async fn docker_config_credentials_answer_basic_challenges() {
    let s = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{TOKEN_PASSWORD}"));
    std::fs::write(
        &path,
        format!(
            r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
            s.host
        ),
    )
    .unwrap();
    let config = ClientConfig {
        use_docker_config: true,
        docker_config: Some(path.clone()),
        ..s.config()
    };
    let client = RegistryClient::new(config.clone()).unwrap();
    bounded(client.resolve(&s.image("basic:v1"))).await.unwrap();
    // Explicit credentials win over the docker config.
    let err = bounded(
        client
            .with_credentials(s.creds("wrong"))
            .resolve(&s.image("basic:v1")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    // A malformed file, or a CA file that is not one, fails construction naming the file.
    std::fs::write(&path, "{\"auths\": ").unwrap();
    let err = RegistryClient::new(config.clone()).unwrap_err();
    assert!(matches!(err, RegistryError::Config(_)), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    let bad_ca = dir.path().join("ca.pem");
    std::fs::write(&bad_ca, "nothing here").unwrap();
    let err = RegistryClient::new(ClientConfig {
        extra_ca_files: vec![bad_ca.clone()],
        ..s.config()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains(&bad_ca.display().to_string()),
        "{err}"
    );
}
