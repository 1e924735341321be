//! The one in-process registry of core's tests: an honest OCI store (one
//! namespace: repositories share storage, which is all these tests need)
//! with the referrers API, plus switches and lies.
//!
//! - Switches: `fail` answers 500 to everything; `referrers_api` off makes
//!   the referrers API answer 404 (as Distribution 2.8 does).
//! - Lies live on fixed repository names (`wrongheader`, `badbody`, `trunc`,
//!   `swapped`, `flaky`, `ratelimited`, `alwaysdown`, `hang`, `hangonce`, `private`,
//!   `basic`, `multi`, `noreferrers`, `huge`, `endless` (blobs without end),
//!   and `good` for canned honest
//!   answers), so each lie is explicit and every other repository is honest.
//!
//! The server is axum on 127.0.0.1:0; it counts requests per label and the
//! TCP connections it accepted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use imgate_core::oci;
use imgate_core::registry::{ClientConfig, Credentials, RegistryClient, RegistrySettings};
use imgate_core::{Digest, ImageRef};

/// The single-platform manifest every canned honest route serves.
pub const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
pub const BLOB: &[u8] = b"a blob the registry will cut short, or swap for another";
pub const TOKEN_USER: &str = "alice";
pub const TOKEN_PASSWORD: &str = "s3cret";

/// What the honest part of the registry holds.
#[derive(Default)]
pub struct Store {
    /// digest -> (content type, bytes)
    pub manifests: HashMap<String, (String, Vec<u8>)>,
    /// tag -> digest
    pub tags: HashMap<String, String>,
    /// digest -> bytes
    pub blobs: HashMap<String, Vec<u8>>,
    /// Manifest digests in the order they were first pushed (the referrers
    /// API lists in this order, so tests can place a signature past a cap).
    pub pushed: Vec<String>,
}

pub struct Registry {
    pub port: u16,
    /// Requests seen per route label.
    hits: Mutex<HashMap<String, u64>>,
    /// Tokens handed out.
    pub tokens_issued: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    pub store: Mutex<Store>,
    /// Answer 500 to every request.
    pub fail: AtomicBool,
    /// Serve the OCI referrers API (else 404 there).
    pub referrers_api: AtomicBool,
    /// Hold each `.sig` manifest request until a referrers lookup (API or
    /// tag schema) has arrived too, up to 5 s, and count whether one did
    /// (`sig paired`) or not (`sig alone`): proof that a client asks for both
    /// at once, without asserting on timings.
    pub pairing: AtomicBool,
    referrers_seen: AtomicBool,
    referrers_arrived: tokio::sync::Notify,
}

impl Registry {
    pub fn hit(&self, label: &str) -> u64 {
        let mut hits = self.hits.lock().unwrap();
        let n = hits.entry(label.to_string()).or_default();
        *n += 1;
        *n
    }
    pub fn hits(&self, label: &str) -> u64 {
        self.hits.lock().unwrap().get(label).copied().unwrap_or(0)
    }
    /// Forgets the request and connection counts so far.
    pub fn reset_counts(&self) {
        self.hits.lock().unwrap().clear();
        self.connections.store(0, Ordering::SeqCst);
    }
    pub fn set_fail(&self, on: bool) {
        self.fail.store(on, Ordering::SeqCst);
    }
    pub fn set_referrers_api(&self, on: bool) {
        self.referrers_api.store(on, Ordering::SeqCst);
    }
    pub fn set_pairing(&self, on: bool) {
        self.referrers_seen.store(false, Ordering::SeqCst);
        self.pairing.store(on, Ordering::SeqCst);
    }
    /// Every label's count, for asserting on a whole run.
    pub fn all_hits(&self) -> BTreeMap<String, u64> {
        self.hits.lock().unwrap().clone().into_iter().collect()
    }

    /// With `pairing` on: notes referrers lookups and holds `.sig` requests
    /// until one arrived.
    async fn pair(&self, method: &Method, path: &str) {
        if !self.pairing.load(Ordering::SeqCst) || *method != Method::GET {
            return;
        }
        let reference = path.rsplit_once("/manifests/").map(|(_, r)| r);
        let lookup = path.contains("/referrers/")
            || reference.is_some_and(|r| r.starts_with("sha256-") && !r.ends_with(".sig"));
        if lookup {
            self.referrers_seen.store(true, Ordering::SeqCst);
            self.referrers_arrived.notify_waiters();
            return;
        }
        if !reference.is_some_and(|r| r.ends_with(".sig")) {
            return;
        }
        let wait = async {
            loop {
                let arrived = self.referrers_arrived.notified();
                let mut arrived = std::pin::pin!(arrived);
                arrived.as_mut().enable();
                if self.referrers_seen.load(Ordering::SeqCst) {
                    return;
                }
                arrived.await;
            }
        };
        let paired = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_ok();
        self.hit(if paired { "sig paired" } else { "sig alone" });
    }
}

pub fn index_body() -> String {
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
    State(reg): State<Arc<Registry>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if reg.fail.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "failing on purpose").into_response();
    }
    reg.pair(&method, uri.path()).await;
    if let Some(resp) = lie(&reg, &method, &uri, &headers).await {
        return resp;
    }
    honest(&reg, &method, &uri, &headers, &body)
}

/// The lies, each on its own repository name; `None` for everything else.
async fn lie(reg: &Registry, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let path = uri.path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let good = Digest::sha256(MANIFEST.as_bytes());
    Some(match (method.clone(), parts.as_slice()) {
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
        // A blob that never ends and announces no length (bounded at 1 GiB
        // so a client without a cap fails the test instead of the machine).
        (Method::GET, ["v2", "endless", "blobs", _]) => {
            reg.hit("endless");
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            let stream = futures::stream::iter(
                (0..(1u64 << 30) / (64 << 10))
                    .map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone())),
            );
            Response::new(Body::from_stream(stream))
        }
        (Method::GET, ["v2", "good", "blobs", _]) => {
            (StatusCode::OK, BLOB.to_vec()).into_response()
        }
        // (d) 500 on the first request, then the truth.
        (Method::GET, ["v2", "flaky", "manifests", "v1"]) => {
            if reg.hit("flaky") == 1 {
                (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
            } else {
                manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
            }
        }
        // 429 with Retry-After on the first request.
        (Method::GET, ["v2", "ratelimited", "manifests", "v1"]) => {
            if reg.hit("ratelimited") == 1 {
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
            reg.hit("alwaysdown");
            (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
        }
        // (e) never answers.
        (Method::GET, ["v2", "hang", "manifests", "v1"]) => {
            reg.hit("hang");
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        // Hangs on the first request only, as a registry coming back from an
        // outage with one stuck connection.
        (Method::GET, ["v2", "hangonce", "manifests", "v1"]) => {
            if reg.hit("hangonce") == 1 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
        }
        // (f) Bearer: a token from /token, which wants alice's password.
        (Method::GET, ["v2", "private", "manifests", "v1"]) => {
            reg.hit("private");
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if auth.starts_with("Bearer tok-") {
                manifest_response(MANIFEST, oci::OCI_MANIFEST, Some(&good))
            } else {
                let challenge = format!(
                    r#"Bearer realm="http://127.0.0.1:{}/token",service="lying",scope="repository:private:pull""#,
                    reg.port
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
            reg.hit("token");
            let query = uri.query().unwrap_or("");
            if !query.contains("service=lying")
                || !query.contains("scope=repository%3Aprivate%3Apull")
            {
                return Some(
                    (StatusCode::BAD_REQUEST, format!("bad query {query}")).into_response(),
                );
            }
            if !basic_ok(headers) {
                return Some((StatusCode::UNAUTHORIZED, "bad credentials").into_response());
            }
            let n = reg.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
            // `access_token` (OAuth2 style) rather than `token`, on purpose.
            axum::Json(serde_json::json!({"access_token": format!("tok-{n}"), "expires_in": 300}))
                .into_response()
        }
        // (g) Basic.
        (Method::GET, ["v2", "basic", "manifests", "v1"]) => {
            reg.hit("basic");
            if basic_ok(headers) {
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
        // (i) referrers: absent for one repository, canned for another.
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
        _ => return None,
    })
}

/// The honest registry: manifests by tag and digest, blobs, uploads (with a
/// relative `Location` carrying its own query, as Distribution sends) and,
/// when switched on, the referrers API.
fn honest(
    reg: &Registry,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let path = uri.path().to_string();
    if path == "/v2/" {
        return StatusCode::OK.into_response();
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return (StatusCode::NOT_FOUND, format!("no route {method} {path}")).into_response();
    };
    let mut s = reg.store.lock().unwrap();
    if let Some((_, reference)) = rest.rsplit_once("/manifests/") {
        reg.hit(&format!("{method} manifest"));
        if *method == Method::PUT {
            let digest = Digest::sha256(body).to_string();
            let media_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if s.manifests
                .insert(digest.clone(), (media_type, body.to_vec()))
                .is_none()
            {
                s.pushed.push(digest.clone());
            }
            if !reference.contains(':') {
                s.tags.insert(reference.to_string(), digest.clone());
            }
            return ([("docker-content-digest", digest)], StatusCode::CREATED).into_response();
        }
        let digest = if reference.contains(':') {
            reference.to_string()
        } else {
            match s.tags.get(reference) {
                Some(d) => d.clone(),
                None => return (StatusCode::NOT_FOUND, "manifest unknown").into_response(),
            }
        };
        return match s.manifests.get(&digest) {
            Some((mt, bytes)) => (
                [
                    ("content-type", mt.clone()),
                    ("docker-content-digest", digest.clone()),
                ],
                bytes.clone(),
            )
                .into_response(),
            None => (StatusCode::NOT_FOUND, "manifest unknown").into_response(),
        };
    }
    if let Some((_, digest)) = rest.rsplit_once("/referrers/") {
        reg.hit("GET referrers");
        if !reg.referrers_api.load(Ordering::SeqCst) {
            return (StatusCode::NOT_FOUND, "no referrers API").into_response();
        }
        // Entries carry no `artifactType`, as ghcr.io's do.
        let manifests: Vec<serde_json::Value> = s
            .pushed
            .iter()
            .filter_map(|d| {
                let (mt, bytes) = s.manifests.get(d)?;
                let m: serde_json::Value = serde_json::from_slice(bytes).ok()?;
                (m["subject"]["digest"] == digest)
                    .then(|| serde_json::json!({"mediaType": mt, "digest": d, "size": bytes.len()}))
            })
            .collect();
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": manifests});
        return ([("content-type", oci::OCI_INDEX)], index.to_string()).into_response();
    }
    if rest.ends_with("/blobs/uploads/") && *method == Method::POST {
        reg.hit("upload-start");
        let location = format!("/v2/{rest}u1?_state=opaque");
        return (StatusCode::ACCEPTED, [("location", location)]).into_response();
    }
    if rest.contains("/blobs/uploads/") && *method == Method::PUT {
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
        if Digest::sha256(body).as_str() != digest {
            return (StatusCode::BAD_REQUEST, "digest does not match body").into_response();
        }
        s.blobs.insert(digest.clone(), body.to_vec());
        return (
            StatusCode::CREATED,
            [("docker-content-digest", digest.clone())],
        )
            .into_response();
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        reg.hit(&format!("{method} blob"));
        return match s.blobs.get(digest) {
            Some(bytes) if *method == Method::HEAD => (
                [("content-length", bytes.len().to_string())],
                StatusCode::OK,
            )
                .into_response(),
            Some(bytes) => bytes.clone().into_response(),
            None => (StatusCode::NOT_FOUND, "blob unknown").into_response(),
        };
    }
    (StatusCode::NOT_FOUND, format!("no route {method} {path}")).into_response()
}

/// A listener that counts the connections it accepts.
struct Counting {
    inner: tokio::net::TcpListener,
    registry: Arc<Registry>,
}

impl axum::serve::Listener for Counting {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = axum::serve::Listener::accept(&mut self.inner).await;
        self.registry.connections.fetch_add(1, Ordering::SeqCst);
        accepted
    }
    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

pub struct Server {
    pub registry: Arc<Registry>,
    pub host: String,
}

pub async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let registry = Arc::new(Registry {
        port,
        hits: Mutex::default(),
        tokens_issued: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        store: Mutex::default(),
        fail: AtomicBool::new(false),
        referrers_api: AtomicBool::new(true),
        pairing: AtomicBool::new(false),
        referrers_seen: AtomicBool::new(false),
        referrers_arrived: tokio::sync::Notify::new(),
    });
    let app = axum::Router::new()
        .fallback(route)
        .with_state(Arc::clone(&registry));
    let counting = Counting {
        inner: listener,
        registry: Arc::clone(&registry),
    };
    tokio::spawn(async move {
        axum::serve(counting, app).await.unwrap();
    });
    Server {
        registry,
        host: format!("127.0.0.1:{port}"),
    }
}

impl Server {
    pub fn config(&self) -> ClientConfig {
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
    pub fn client(&self) -> RegistryClient {
        RegistryClient::new(self.config()).unwrap()
    }
    pub fn image(&self, repo_and_ref: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{repo_and_ref}", self.host)).unwrap()
    }
    pub fn creds(&self, password: &str) -> BTreeMap<String, Credentials> {
        BTreeMap::from([(
            self.host.clone(),
            Credentials {
                username: TOKEN_USER.into(),
                password: password.into(),
            },
        )])
    }
    /// The manifest a tag names: (content type, bytes).
    pub fn manifest_at(&self, tag: &str) -> Option<(String, Vec<u8>)> {
        let s = self.registry.store.lock().unwrap();
        s.tags.get(tag).and_then(|d| s.manifests.get(d)).cloned()
    }
}

/// Every test gets at most this long, so a hang is a failure, not a stuck CI job.
pub async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test took longer than 30s")
}
