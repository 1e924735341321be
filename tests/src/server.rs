//! In-process servers of the harness (token server, counting proxy) run on one
//! background runtime owned by the harness, so they keep serving whichever
//! runtime (or none) the test itself uses, and a blocking call in a test
//! (running the `imgate` binary) never starves them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The harness's background runtime.
pub fn background() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // A test harness cannot go on without its runtime; this is the one
        // place a panic is the right answer.
        #[allow(clippy::expect_used)]
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("imgate-harness")
            .enable_all()
            .build()
            .expect("building the harness runtime")
    })
}

/// Runs `future` to completion on the background runtime from any context
/// (a plain `#[test]` or inside another runtime): it blocks the calling
/// thread, driving the future on a helper thread.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| background().block_on(future));
        match handle.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A server task that is aborted when dropped.
#[derive(Debug)]
pub(crate) struct ServerTask {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on 127.0.0.1 with a free port, over TLS when `tls` is given.
pub(crate) async fn spawn_router(
    router: axum::Router,
    tls: Option<rustls::ServerConfig>,
) -> anyhow::Result<ServerTask> {
    // Bind with std and register the socket with tokio inside the background
    // runtime: a tokio listener belongs to the runtime it was created on, and
    // the caller's runtime may be a current-thread one that blocks in a test.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let task = background().spawn(async move {
        let Ok(listener) = TcpListener::from_std(std_listener) else {
            return;
        };
        match tls {
            None => {
                let _ = axum::serve(listener, router).await;
            }
            Some(config) => {
                let listener = TlsListener {
                    inner: listener,
                    acceptor: TlsAcceptor::from(Arc::new(config)),
                };
                let _ = axum::serve(listener, router).await;
            }
        }
    });
    Ok(ServerTask { addr, task })
}

/// A TLS listener for `axum::serve`. Handshakes run in the accept loop (one at
/// a time, bounded) — plenty for tests, and it keeps this dependency-free.
struct TlsListener {
    inner: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let handshake = self.acceptor.accept(stream);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
