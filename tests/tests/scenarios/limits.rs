//! Scenarios: the real `imgate webhook` binary under clients that do not
//! play fair, over real TLS on loopback. Slow bodies and idle connections
//! must neither exhaust the webhook's memory or file descriptors nor keep
//! legitimate reviews from being answered in time. Also: the JSON decision
//! line carries each field once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod flood;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgate_tests::block_on;
use imgate_tests::webhook::{
    generate_certs, pod, review, Webhook, WebhookOptions, REVIEW_USER, SERVICE_NAME,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The webhook Deployment's memory limit (deploy/base).
const POD_MEMORY_LIMIT_KIB: u64 = 256 * 1024;
/// The largest body the webhook accepts (3 MiB): attackers send just that.
const BODY: usize = 3 * 1024 * 1024;
/// The legitimate review's images: untrusted, so it is denied without a registry.
const EVIL: [&str; 3] = ["evil.example/a:1", "evil.example/b:1", "evil.example/c:1"];
const SLOW_CLIENTS: usize = 100;
const IDLE_CLIENTS: usize = 1100;

/// Certificates and a policy that needs no registry: the legitimate reviews
/// name an untrusted image, denied before any network call.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    generate_certs(dir.path(), false).unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "mode: enforce\n\
         trustedRegistries: [\"registry.example.com/**\"]\n\
         rules:\n  - name: upstream\n    images: [\"registry.example.com/**\"]\n    verify: none\n",
    )
    .unwrap();
    (dir, policy)
}

/// Posts one review on a fresh connection; the answer must be a denial
/// echoing the uid. Returns how long it took.
async fn legitimate_review(webhook: &Webhook, uid: &str) -> Result<Duration, String> {
    let client = webhook.client(true).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (status, body) = webhook
        .post(
            &client,
            "/mutate",
            &review(uid, "team", &pod("team", &EVIL)),
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
    let elapsed = started.elapsed();
    if status != 200 || body["response"]["uid"] != uid || body["response"]["allowed"] != false {
        return Err(format!("unexpected answer {status}: {body}"));
    }
    Ok(elapsed)
}

/// What the attack managed, for the failure message.
#[derive(Default)]
struct Tally {
    idle_open: AtomicUsize,
    idle_failed: AtomicUsize,
    idle_closed_by_server: AtomicUsize,
    slow_started: AtomicUsize,
    slow_bytes: AtomicU64,
    slow_ended_by_server: AtomicUsize,
}

/// One slow client: headers announcing a 3 MiB body, almost all of it at
/// once, then one byte every half second until `stop` or the webhook lets
/// go.
async fn slow_client(
    webhook: Arc<Webhook>,
    body: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let (connector, name) = webhook.tls_connector().unwrap();
    while !stop.load(Ordering::SeqCst) {
        let Ok(tcp) = tokio::net::TcpStream::connect(webhook.admission).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(mut tls) = connector.connect(name.clone(), tcp).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        tally.slow_started.fetch_add(1, Ordering::SeqCst);
        let head = format!(
            "POST /mutate HTTP/1.1\r\nhost: {SERVICE_NAME}\r\ncontent-type: application/json\r\ncontent-length: {BODY}\r\n\r\n"
        );
        let mut sent = 0usize;
        let mut failed = tls.write_all(head.as_bytes()).await.is_err();
        let fast = BODY - 1024;
        while !failed && sent < fast {
            let end = (sent + 64 * 1024).min(fast);
            failed = tls.write_all(&body[sent..end]).await.is_err();
            if !failed {
                tally
                    .slow_bytes
                    .fetch_add((end - sent) as u64, Ordering::SeqCst);
            }
            sent = end;
        }
        while !failed && sent < BODY && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            failed =
                tls.write_all(&body[sent..sent + 1]).await.is_err() || tls.flush().await.is_err();
            sent += 1;
        }
        if failed {
            tally.slow_ended_by_server.fetch_add(1, Ordering::SeqCst);
        }
        // Once is the attack; coming back at once would mostly burn the
        // test machine's CPU (other scenarios run alongside).
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One idle client: a finished TLS handshake, then nothing, until `stop`
/// or the webhook closes the connection.
async fn idle_client(
    webhook: Arc<Webhook>,
    gate: Arc<tokio::sync::Semaphore>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let (connector, name) = webhook.tls_connector().unwrap();
    let permit = gate.acquire_owned().await.unwrap();
    let connected = async {
        let tcp = tokio::net::TcpStream::connect(webhook.admission)
            .await
            .ok()?;
        tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .ok()?
            .ok()
    }
    .await;
    drop(permit);
    let Some(mut tls) = connected else {
        tally.idle_failed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    tally.idle_open.fetch_add(1, Ordering::SeqCst);
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::SeqCst) {
        match tokio::time::timeout(Duration::from_millis(250), tls.read(&mut byte)).await {
            Err(_) => continue,
            Ok(_) => {
                // EOF or an error: the webhook let go of us.
                tally.idle_closed_by_server.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
    }
    tally.idle_open.fetch_sub(1, Ordering::SeqCst);
}

/// 100 clients trickling 3 MiB bodies and 1100 idle TLS connections, while
/// legitimate reviews come in: each must be answered within the deadline,
/// and the webhook's resident memory must stay under the pod's limit. The
/// webhook starts with a soft limit of 1024 open files, as under many
/// container runtimes.
#[test]
fn slow_bodies_and_idle_connections_neither_exhaust_nor_block_the_webhook() {
    let (dir, policy) = setup();
    // Below the default 8 s, with room for a loaded test machine.
    let deadline = Duration::from_secs(5);
    let webhook = Arc::new(
        Webhook::start(
            &WebhookOptions::new(&policy, dir.path())
                .args(["--deadline", "5s"])
                .nofile_soft(1024),
        )
        .unwrap(),
    );
    block_on(async move {
        let started = Instant::now();
        // Baseline: answered quickly before the attack.
        legitimate_review(&webhook, "before").await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let body = Arc::new(
            b"{\"x\":\""
                .iter()
                .copied()
                .chain(std::iter::repeat_n(b'a', BODY))
                .collect::<Vec<u8>>(),
        );
        let peak_rss = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (webhook, stop, peak) = (webhook.clone(), stop.clone(), peak_rss.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(rss) = webhook.memory_kib("VmRSS") {
                        peak.fetch_max(rss, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut tasks = Vec::new();
        for _ in 0..SLOW_CLIENTS {
            tasks.push(tokio::spawn(slow_client(
                webhook.clone(),
                body.clone(),
                stop.clone(),
                tally.clone(),
            )));
        }
        let gate = Arc::new(tokio::sync::Semaphore::new(64));
        for _ in 0..IDLE_CLIENTS {
            tasks.push(tokio::spawn(idle_client(
                webhook.clone(),
                gate.clone(),
                stop.clone(),
                tally.clone(),
            )));
        }
        // Let the attack build up: the idle connections open, every slow
        // client has started a body (or 15 s pass).
        let build_up = Instant::now();
        while build_up.elapsed() < Duration::from_secs(15) {
            let settled = tally.idle_open.load(Ordering::SeqCst)
                + tally.idle_failed.load(Ordering::SeqCst)
                + tally.idle_closed_by_server.load(Ordering::SeqCst);
            if settled >= IDLE_CLIENTS && tally.slow_started.load(Ordering::SeqCst) >= SLOW_CLIENTS
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Then a review every second for 8 s, while the attack goes on.
        let patience = deadline + Duration::from_secs(1);
        let mut answers = Vec::new();
        for i in 0..8 {
            let uid = format!("during-{i}");
            let answer = tokio::time::timeout(patience, legitimate_review(&webhook, &uid))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {patience:?}")));
            let failed = answer.is_err();
            answers.push(answer);
            if failed {
                // One is enough, and the test stays short.
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let report = format!(
            "after {:?}: idle open {} failed {} closed by the webhook {}; slow bodies started {} ended by the webhook {} bytes sent {}; peak RSS {} KiB; answers {:?}",
            started.elapsed(),
            tally.idle_open.load(Ordering::SeqCst),
            tally.idle_failed.load(Ordering::SeqCst),
            tally.idle_closed_by_server.load(Ordering::SeqCst),
            tally.slow_started.load(Ordering::SeqCst),
            tally.slow_ended_by_server.load(Ordering::SeqCst),
            tally.slow_bytes.load(Ordering::SeqCst),
            peak_rss.load(Ordering::SeqCst),
            answers,
        );
        stop.store(true, Ordering::SeqCst);
        let _ = sampler.await;
        for task in tasks {
            task.abort();
        }
        eprintln!("{report}");
        let hwm = webhook.memory_kib("VmHWM").unwrap();
        for answer in &answers {
            match answer {
                Ok(elapsed) => assert!(*elapsed < deadline, "answered after {elapsed:?}: {report}"),
                Err(err) => panic!("legitimate review failed: {err}: {report}"),
            }
        }
        assert!(
            hwm < POD_MEMORY_LIMIT_KIB,
            "peak resident memory {hwm} KiB is over the pod limit: {report}"
        );
        // The bounds were what held: connections were shed, bodies refused.
        let shed = webhook
            .metric("imgate_admission_connections_shed_total")
            .await
            .unwrap();
        let refused = webhook
            .metric("imgate_refused_requests_total")
            .await
            .unwrap();
        assert!(shed >= 1.0, "{report}");
        assert!(refused >= 1.0, "{report}");
        // And it still serves once the attack is over.
        legitimate_review(&webhook, "after").await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(60), "{report}");
    });
}

/// Waits until a JSON log line with `message` shows up, and parses it.
fn log_line(webhook: &Webhook, message: &str) -> (String, Value) {
    let needle = format!("\"message\":\"{message}\"");
    assert!(
        webhook.wait_for_log(&needle, Duration::from_secs(10)),
        "{}",
        webhook.logs()
    );
    let logs = webhook.logs();
    let line = logs
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap()
        .to_string();
    let value = serde_json::from_str(&line).unwrap();
    (line, value)
}

#[test]
fn decision_line_carries_each_field_once() {
    let (dir, policy) = setup();
    let webhook = Webhook::start(&WebhookOptions::new(&policy, dir.path())).unwrap();
    block_on(async {
        legitimate_review(&webhook, "uid-once").await.unwrap();
    });
    let (line, value) = log_line(&webhook, "admission decision");
    // The review's span: who asked for what.
    let span = &value["span"];
    assert_eq!(span["name"], "admission", "{line}");
    assert_eq!(span["uid"], "uid-once", "{line}");
    assert_eq!(span["endpoint"], "mutate", "{line}");
    assert_eq!(span["kind"], "Pod", "{line}");
    assert_eq!(span["namespace"], "team", "{line}");
    assert_eq!(span["operation"], "CREATE", "{line}");
    // The decision itself.
    assert_eq!(value["user"], REVIEW_USER, "{line}");
    assert_eq!(value["name"], "web", "{line}");
    assert_eq!(value["allowed"], false, "{line}");
    assert_eq!(
        value["image"], "evil.example/a:1,evil.example/b:1,evil.example/c:1",
        "{line}"
    );
    // Once each: no span list repeating the span, no field twice.
    assert!(value.get("spans").is_none(), "{line}");
    for key in [
        "\"uid\"",
        "\"namespace\"",
        "\"kind\"",
        "\"endpoint\"",
        "\"operation\"",
    ] {
        assert_eq!(line.matches(key).count(), 1, "{key} in {line}");
    }
}
