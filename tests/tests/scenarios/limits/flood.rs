//! The connection flood that locked the API server out: many clients from
//! several source addresses sending stalled 64 KiB bodies and reconnecting
//! as soon as they are let go, plus clients that never finish their TLS
//! handshake. Meanwhile an "API server" holds two kept-alive connections
//! (HTTP/1.1 and HTTP/2) opened before the flood and sends ordinary reviews
//! over exactly those: every review must be answered, within the deadline,
//! on the connection it was sent on. Twice: with the flood over the
//! connection bound (lowered, so the flood stays small), where newcomers
//! used to shed the kept-alive connections, and below it, where the stalled
//! bodies used to hold the shared body reserve and make reviews wait. Two
//! reviews also go over new connections opened during the flood.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use imgate_tests::block_on;
use imgate_tests::webhook::{pod, review, Webhook, WebhookOptions, SERVICE_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{setup, EVIL};

/// Attackers come from 127.0.0.2 ..= 127.0.0.(1 + SOURCES); the API
/// server from 127.0.0.1.
const SOURCES: u8 = 8;
/// Clients per source sending a stalled body, reconnecting when let go.
const BODY_STALLERS: usize = 30;
/// Clients per source that connect and never send a ClientHello.
const HANDSHAKE_STALLERS: usize = 8;
/// The webhook's lowered connection bound (1000 by default): the flood
/// above (304 clients) is over it, as the 1200 were over 1000.
const LOWERED_MAX_CONNECTIONS: usize = 200;
/// Buffered body bytes (64 MiB by default), scaled down with the bound.
const MAX_BUFFERED: usize = 16 * 1024 * 1024;
/// What each staller sends of the body it announces as twice as long.
const STALLED: usize = 64 * 1024;
/// The review deadline.
const DEADLINE: Duration = Duration::from_secs(5);
/// Reviews sent during the flood, one every [`PACE`], alternating between
/// the two kept-alive connections.
const REVIEWS: usize = 16;
const PACE: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Tally {
    bodies_started: AtomicUsize,
    bodies_let_go: AtomicUsize,
    handshakes_held: AtomicUsize,
    handshakes_let_go: AtomicUsize,
    refused: AtomicUsize,
}

async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

/// Reads until the webhook closes the connection (or `stop`).
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, stop: &AtomicBool) {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::SeqCst) {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Connects, completes TLS, sends a request head announcing `2 * STALLED`
/// bytes and `STALLED` of them, then stalls; reconnects once let go.
async fn body_staller(
    webhook: Arc<Webhook>,
    source: Ipv4Addr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let (connector, name) = webhook.tls_connector().unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: {SERVICE_NAME}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 * STALLED
    );
    let body = vec![b'a'; STALLED];
    while !stop.load(Ordering::SeqCst) {
        let tls = match connect_from(source, webhook.admission).await {
            Ok(tcp) => {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    connector.connect(name.clone(), tcp),
                )
                .await
            }
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(Ok(mut tls)) = tls else {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if tls.write_all(head.as_bytes()).await.is_ok()
            && tls.write_all(&body).await.is_ok()
            && tls.flush().await.is_ok()
        {
            tally.bodies_started.fetch_add(1, Ordering::SeqCst);
            until_closed(&mut tls, &stop).await;
            tally.bodies_let_go.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connects and sends nothing: the webhook waits for a ClientHello.
async fn handshake_staller(
    webhook: Arc<Webhook>,
    source: Ipv4Addr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut tcp) = connect_from(source, webhook.admission).await else {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tally.handshakes_held.fetch_add(1, Ordering::SeqCst);
        until_closed(&mut tcp, &stop).await;
        tally.handshakes_let_go.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One kept-alive connection of the API server: every request goes over
/// it, and a request fails if it was closed (no silent reconnect).
enum KeptAlive {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl KeptAlive {
    async fn open(webhook: &Webhook, h2: bool) -> anyhow::Result<KeptAlive> {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let (connector, name) = webhook.tls_connector_as(None, alpn)?;
        let tcp = TcpStream::connect(webhook.admission).await?;
        let io = TokioIo::new(connector.connect(name, tcp).await?);
        Ok(if h2 {
            let (send, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            KeptAlive::H2(send)
        } else {
            let (send, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            KeptAlive::H1(send)
        })
    }

    fn name(&self) -> &'static str {
        match self {
            KeptAlive::H1(_) => "http/1.1",
            KeptAlive::H2(_) => "h2",
        }
    }

    /// Posts an ordinary review; Ok(latency) when it is answered with the
    /// denial echoing its uid.
    async fn review(&mut self, uid: &str) -> Result<Duration, String> {
        let bytes = serde_json::to_vec(&review(uid, "team", &pod("team", &EVIL))).unwrap();
        let request = |uri: &str| {
            http::Request::post(uri)
                .header("host", SERVICE_NAME)
                .header("content-type", "application/json")
                .body(Body::from(bytes.clone()))
                .unwrap()
        };
        let started = Instant::now();
        let response = match self {
            KeptAlive::H1(send) => {
                send.ready()
                    .await
                    .map_err(|e| format!("connection lost: {e}"))?;
                send.send_request(request("/mutate")).await
            }
            KeptAlive::H2(send) => {
                send.ready()
                    .await
                    .map_err(|e| format!("connection lost: {e}"))?;
                send.send_request(request(&format!("https://{SERVICE_NAME}/mutate")))
                    .await
            }
        }
        .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = axum::body::to_bytes(Body::new(response.into_body()), 1 << 20)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        let took = started.elapsed();
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| format!("{status}: {}", String::from_utf8_lossy(&body)))?;
        if status != 200 || value["response"]["uid"] != uid || value["response"]["allowed"] != false
        {
            return Err(format!("unexpected answer {status}: {value}"));
        }
        Ok(took)
    }
}

/// Posts an ordinary review over a new connection from 127.0.0.1.
async fn new_connection_review(
    webhook: &Webhook,
    uid: &str,
    patience: Duration,
) -> Result<Duration, String> {
    let client = webhook.client(true).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let review = review(uid, "team", &pod("team", &EVIL));
    let post = webhook.post(&client, "/mutate", &review);
    match tokio::time::timeout(patience, post).await {
        Err(_) => Err(format!("no answer within {patience:?}")),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Ok(Ok((200, body))) if body["response"]["uid"] == uid => Ok(started.elapsed()),
        Ok(Ok((status, body))) => Err(format!("unexpected answer {status}: {body}")),
    }
}

#[test]
fn kept_alive_reviews_are_answered_through_a_flood_over_the_connection_bound() {
    flood(Some(LOWERED_MAX_CONNECTIONS));
}

#[test]
fn kept_alive_reviews_are_answered_through_a_flood_below_the_connection_bound() {
    flood(None);
}

/// Runs the flood against a webhook with `max_connections` (the default
/// 1000 when `None`) and checks every review over the kept-alive
/// connections.
fn flood(max_connections: Option<usize>) {
    let (dir, policy) = setup();
    let mut args = vec![
        "--deadline".to_string(),
        format!("{}s", DEADLINE.as_secs()),
        "--max-buffered-body-bytes".to_string(),
        MAX_BUFFERED.to_string(),
    ];
    if let Some(max) = max_connections {
        args.extend(["--max-connections".to_string(), max.to_string()]);
    }
    let clients = usize::from(SOURCES) * (BODY_STALLERS + HANDSHAKE_STALLERS);
    // What the webhook holds once the flood is on.
    let expected = max_connections.unwrap_or(clients).min(clients);
    let webhook =
        Arc::new(Webhook::start(&WebhookOptions::new(&policy, dir.path()).args(args)).unwrap());
    block_on(async move {
        // The API server's connections, each proven by a first review.
        let mut kept = [
            KeptAlive::open(&webhook, false).await.unwrap(),
            KeptAlive::open(&webhook, true).await.unwrap(),
        ];
        for (i, connection) in kept.iter_mut().enumerate() {
            connection.review(&format!("warm-{i}")).await.unwrap();
        }

        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut tasks = Vec::new();
        for s in 0..SOURCES {
            let source = Ipv4Addr::new(127, 0, 0, 2 + s);
            for _ in 0..BODY_STALLERS {
                tasks.push(tokio::spawn(body_staller(
                    webhook.clone(),
                    source,
                    stop.clone(),
                    tally.clone(),
                )));
            }
            for _ in 0..HANDSHAKE_STALLERS {
                tasks.push(tokio::spawn(handshake_staller(
                    webhook.clone(),
                    source,
                    stop.clone(),
                    tally.clone(),
                )));
            }
        }
        // The flood builds until the webhook holds nearly all of it (or 3 s).
        let flood = Instant::now();
        while flood.elapsed() < Duration::from_secs(3)
            && webhook
                .metric("imgate_admission_connections ")
                .await
                .unwrap()
                < (expected * 9 / 10) as f64
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let built_up = flood.elapsed();

        let patience = DEADLINE + Duration::from_secs(1);
        let mut answers = Vec::new();
        let mut fresh = Vec::new();
        for i in 0..REVIEWS {
            let connection = &mut kept[i % 2];
            let name = connection.name();
            let answer = tokio::time::timeout(patience, connection.review(&format!("during-{i}")))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {patience:?}")));
            answers.push((name, answer));
            if i % 8 == 7 {
                fresh.push(new_connection_review(&webhook, &format!("new-{i}"), patience).await);
            }
            tokio::time::sleep(PACE).await;
        }
        let open = webhook
            .metric("imgate_admission_connections ")
            .await
            .unwrap();
        let shed = webhook
            .metric("imgate_admission_connections_shed_total")
            .await
            .unwrap();
        let refused = webhook
            .metric("imgate_refused_requests_total")
            .await
            .unwrap();
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            task.abort();
        }

        let mut times: Vec<Duration> = answers
            .iter()
            .filter_map(|(_, a)| a.as_ref().ok().copied())
            .collect();
        times.sort();
        let failed: Vec<String> = answers
            .iter()
            .filter_map(|(name, a)| a.as_ref().err().map(|e| format!("{name}: {e}")))
            .collect();
        let report = format!(
            "flood of {clients} clients from {SOURCES} sources against --max-connections {}: \
             {open} open connections after {built_up:?}; stalled bodies started {} let go {}; \
             handshakes held {} let go {}; connects or handshakes failed {}; \
             webhook shed {shed} connections and refused {refused} requests; \
             reviews over kept-alive connections: {} of {REVIEWS} answered, median {:?}, max {:?}; failures: {failed:?}; \
             reviews over new connections: {fresh:?}",
            max_connections.unwrap_or(1000),
            tally.bodies_started.load(Ordering::SeqCst),
            tally.bodies_let_go.load(Ordering::SeqCst),
            tally.handshakes_held.load(Ordering::SeqCst),
            tally.handshakes_let_go.load(Ordering::SeqCst),
            tally.refused.load(Ordering::SeqCst),
            times.len(),
            times.get(times.len() / 2),
            times.last(),
        );
        eprintln!("{report}");
        assert!(failed.is_empty(), "{report}");
        assert!(times.iter().all(|t| *t < DEADLINE), "{report}");
        // A connection the API server opens during the flood gets through
        // too (it waits its turn for a place and for the body reserve).
        for answer in &fresh {
            assert!(answer.as_ref().is_ok_and(|t| *t < DEADLINE), "{report}");
        }
        // The flood was real: the webhook held most of it.
        assert!(open >= (expected / 2) as f64, "{report}");
    });
}
