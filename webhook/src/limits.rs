//! Bounds on what a client of the admission port can hold: time (TLS
//! handshake, request headers, the whole body, idle keep-alive), open
//! connections, HTTP/2 streams and the bytes of request bodies buffered at
//! once. An admission webhook that stops answering blocks every pod in the
//! cluster, so a slow or idle client must never crowd out the API server.
//!
//! - Connections: at most `max_connections` are open. When a new one
//!   arrives at the limit, the connection idle the longest (no request in
//!   flight, including ones still in their TLS handshake) is closed to make
//!   room; only when every connection is busy does accept wait. Idle
//!   connections are cheap to re-open for a client that wanted them, while
//!   waiting would let idle ones lock the API server out.
//! - Bodies: each body's first [`RESERVED_PER_BODY`] bytes (all of a
//!   typical review) come from a reserve of a quarter of
//!   `max_buffered_bytes`; bytes beyond come from the rest, and a body that
//!   finds the rest spent is refused at once with 503. Large slow bodies
//!   therefore never crowd out ordinary reviews, and the resident memory
//!   spent on raw bodies never exceeds `max_buffered_bytes`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Default time for a TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for a request's headers to arrive (HTTP/1).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time for a whole request body to arrive.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may sit without a request in flight.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default HTTP/2 keep-alive ping interval.
pub const DEFAULT_HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long an HTTP/2 keep-alive ping may go unanswered.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on concurrent HTTP/2 streams per connection.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 64;
/// Default cap on open admission connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Default cap on request-body bytes buffered at once.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;
/// Bytes of each body served from the reserve (see the module docs).
pub const RESERVED_PER_BODY: usize = 64 * 1024;
/// File descriptors kept free for everything that is not a client
/// connection (registry connections, policy and certificate reads, logs).
pub const FD_RESERVE: u64 = 128;

/// The connection and body limits of the admission port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time for a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Time for a whole request body, from the handler's first read.
    pub body_timeout: Duration,
    /// Time a connection may sit with no request in flight (HTTP/1
    /// keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (a dead peer is dropped after
    /// [`HTTP2_KEEPALIVE_TIMEOUT`] more).
    pub http2_keepalive: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_streams: u32,
    /// Open admission connections.
    pub max_connections: usize,
    /// Request-body bytes buffered at once, over all requests.
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http2_keepalive: DEFAULT_HTTP2_KEEPALIVE,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// Raises the soft limit on open files to the hard limit (containers often
/// start with 1024) and returns the soft limit in force afterwards, if it
/// can be read.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(err) => tracing::warn!(error = %err, "cannot raise the open-files limit"),
        }
    }
    // None means unlimited.
    Some(limit.current.unwrap_or(u64::MAX))
}

/// `max_connections`, lowered if the open-files limit could not hold that
/// many plus [`FD_RESERVE`].
pub fn fit_connections(max_connections: usize, fd_limit: Option<u64>) -> usize {
    let Some(fds) = fd_limit else {
        return max_connections;
    };
    let room = usize::try_from(fds.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    max_connections.min(room).max(1)
}

/// The shared budget of buffered body bytes (see the module docs).
#[derive(Debug)]
pub struct BodyBudget {
    reserve: Arc<Semaphore>,
    rest: Arc<Semaphore>,
}

/// Bytes a body holds from the budget; given back when dropped.
#[derive(Debug, Default)]
pub struct BodyPermit {
    permits: Vec<OwnedSemaphorePermit>,
    held: usize,
}

/// Why a body could not have more bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// The bytes beyond the reserve are spent: refuse now.
    Exhausted,
}

impl BodyBudget {
    /// A budget of `max_bytes`, a quarter of it reserved for bodies' first
    /// [`RESERVED_PER_BODY`] bytes.
    pub fn new(max_bytes: usize) -> Self {
        let reserve = (max_bytes / 4).max(RESERVED_PER_BODY);
        let rest = max_bytes.saturating_sub(reserve);
        BodyBudget {
            reserve: Arc::new(Semaphore::new(reserve.min(Semaphore::MAX_PERMITS))),
            rest: Arc::new(Semaphore::new(rest.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Grows `permit` to cover `total` bytes. The reserved part waits for
    /// room (the caller bounds the wait by the body deadline); the rest is
    /// refused at once when it is spent.
    pub async fn grow(&self, permit: &mut BodyPermit, total: usize) -> Result<(), BudgetError> {
        if total <= permit.held {
            return Ok(());
        }
        let reserved_now = permit.held.min(RESERVED_PER_BODY);
        let reserved_want = total.min(RESERVED_PER_BODY);
        let beyond = (total - permit.held) - (reserved_want - reserved_now);
        if beyond > 0 {
            let count = u32::try_from(beyond).map_err(|_| BudgetError::Exhausted)?;
            let extra = Arc::clone(&self.rest)
                .try_acquire_many_owned(count)
                .map_err(|_| BudgetError::Exhausted)?;
            permit.permits.push(extra);
        }
        if reserved_want > reserved_now {
            let count =
                u32::try_from(reserved_want - reserved_now).map_err(|_| BudgetError::Exhausted)?;
            let reserved = Arc::clone(&self.reserve)
                .acquire_many_owned(count)
                .await
                .map_err(|_| BudgetError::Exhausted)?;
            permit.permits.push(reserved);
        }
        permit.held = total;
        Ok(())
    }
}

/// What the server knows about one open connection.
#[derive(Debug)]
pub struct Activity {
    busy: AtomicUsize,
    /// Milliseconds since the tracker started, when the last request ended
    /// (or the connection opened).
    idle_since: AtomicU64,
    closing: AtomicBool,
    close: Notify,
    epoch: Instant,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request started on this connection; it is busy until the guard drops.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        RequestGuard(Arc::clone(self))
    }

    /// How long the connection has had no request in flight (zero if busy).
    pub fn idle_for(&self) -> Duration {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.idle_since.load(Ordering::SeqCst)),
        )
    }

    /// A request is in flight on this connection.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// Resolves when the tracker wants this connection closed to make room.
    pub async fn shed(&self) {
        self.close.notified().await;
    }
}

/// Marks the end of a request on its connection.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The open admission connections, bounded (see the module docs).
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
    freed: Notify,
    shed: AtomicU64,
    epoch: Instant,
    metrics: Option<Arc<Metrics>>,
}

/// One open connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    activity: Arc<Activity>,
    owner: Arc<Connections>,
}

impl Slot {
    /// The connection's activity record.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.owner.open.lock() {
            open.remove(&self.id);
        }
        if let Some(metrics) = &self.owner.metrics {
            metrics.connections_changed(-1);
        }
        self.owner.freed.notify_one();
    }
}

impl Connections {
    /// A tracker allowing `max` open connections.
    pub fn new(max: usize) -> Arc<Self> {
        Self::build(max, None)
    }

    /// A tracker that also counts into `metrics`.
    pub fn with_metrics(max: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Self::build(max, Some(metrics))
    }

    fn build(max: usize, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        Arc::new(Connections {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            freed: Notify::new(),
            shed: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().map(|open| open.len()).unwrap_or(0)
    }

    /// Connections closed so far to make room.
    pub fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::SeqCst)
    }

    /// A place for the next connection: at once below the limit; at the
    /// limit, after the longest-idle connection has closed, or, if every
    /// connection is busy, after any has.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_admit() {
                Admit::Slot(slot) => return slot,
                // A connection closing gracefully may take a moment; if it
                // does, ask the next idle one rather than keep the caller
                // waiting.
                Admit::Shed => {
                    let _ = tokio::time::timeout(SHED_PATIENCE, freed).await;
                }
                Admit::AllBusy => freed.await,
            }
        }
    }

    fn try_admit(self: &Arc<Self>) -> Admit {
        let Ok(mut open) = self.open.lock() else {
            return Admit::AllBusy;
        };
        if open.len() < self.max {
            let id = self.next.fetch_add(1, Ordering::SeqCst);
            let activity = Arc::new(Activity {
                busy: AtomicUsize::new(0),
                idle_since: AtomicU64::new(0),
                closing: AtomicBool::new(false),
                close: Notify::new(),
                epoch: self.epoch,
            });
            activity
                .idle_since
                .store(activity.now_ms(), Ordering::SeqCst);
            open.insert(id, Arc::clone(&activity));
            if let Some(metrics) = &self.metrics {
                metrics.connections_changed(1);
            }
            return Admit::Slot(Slot {
                id,
                activity,
                owner: Arc::clone(self),
            });
        }
        let oldest = open
            .values()
            .filter(|a| !a.is_busy() && !a.closing.load(Ordering::SeqCst))
            .min_by_key(|a| a.idle_since.load(Ordering::SeqCst));
        match oldest {
            Some(victim) => {
                victim.closing.store(true, Ordering::SeqCst);
                victim.close.notify_one();
                self.shed.fetch_add(1, Ordering::SeqCst);
                if let Some(metrics) = &self.metrics {
                    metrics.connection_shed();
                }
                Admit::Shed
            }
            None => Admit::AllBusy,
        }
    }
}

/// How long admitting waits for a shed connection to close before it
/// sheds the next.
const SHED_PATIENCE: Duration = Duration::from_millis(50);

enum Admit {
    Slot(Slot),
    Shed,
    AllBusy,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_idle_connection_makes_room() {
        let connections = Connections::new(2);
        let first = connections.admit().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = connections.admit().await;
        let _busy = second.activity().request();
        assert_eq!(connections.open(), 2);
        // At the limit: the idle first one is asked to close, the busy
        // second one is left alone.
        let third = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        tokio::time::timeout(Duration::from_secs(5), first.activity().shed())
            .await
            .unwrap();
        assert!(!third.is_finished());
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connections.open(), 2);
        assert_eq!(connections.shed_count(), 1);
        drop(third);
        assert_eq!(connections.open(), 1);
    }

    #[tokio::test]
    async fn accept_waits_when_every_connection_is_busy() {
        let connections = Connections::new(1);
        let only = connections.admit().await;
        let busy = only.activity().request();
        let waiting = tokio::spawn({
            let connections = connections.clone();
            async move { connections.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        assert_eq!(connections.shed_count(), 0);
        drop(busy);
        drop(only);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn bodies_beyond_the_reserve_are_refused_when_the_rest_is_spent() {
        // 1 MiB: 256 KiB reserve (four bodies' first 64 KiB), 768 KiB rest.
        let budget = BodyBudget::new(1024 * 1024);
        let mut big = BodyPermit::default();
        budget.grow(&mut big, 64 * 1024).await.unwrap();
        budget.grow(&mut big, 832 * 1024).await.unwrap();
        let mut second = BodyPermit::default();
        assert_eq!(
            budget.grow(&mut second, 128 * 1024).await,
            Err(BudgetError::Exhausted)
        );
        // A small body still gets in: the reserve is not spent.
        let mut small = BodyPermit::default();
        budget.grow(&mut small, 8 * 1024).await.unwrap();
        drop(big);
        let mut third = BodyPermit::default();
        budget.grow(&mut third, 512 * 1024).await.unwrap();
    }

    #[test]
    fn connections_fit_the_open_files_limit() {
        assert_eq!(fit_connections(1000, Some(1024)), 896);
        assert_eq!(fit_connections(1000, Some(20_000)), 1000);
        assert_eq!(fit_connections(1000, None), 1000);
        assert_eq!(fit_connections(1000, Some(10)), 1);
    }
}
