//! The open admission connections: the global bound, the bounds per source
//! address (connections, handshakes in progress), and which connection
//! makes room for a newcomer. A connection that has completed a request is
//! never displaced by a newcomer, nor, when client certificates are
//! required, one that has authenticated: those are the API server's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::Metrics;

use super::PortLimits;

/// How long admitting waits for a shed connection to close before it
/// sheds the next.
const SHED_PATIENCE: Duration = Duration::from_millis(50);

/// What the server knows about one open connection.
#[derive(Debug)]
pub struct Activity {
    busy: AtomicUsize,
    /// Requests whose body waits for room in the body budget: not yet
    /// served, so they do not protect the connection from being displaced.
    waiting: AtomicUsize,
    /// Milliseconds since the tracker started, when the last request ended
    /// (or the connection opened).
    idle_since: AtomicU64,
    /// The client's address, once the connection is accepted.
    source: OnceLock<IpAddr>,
    /// Still in its TLS handshake (counted per source).
    handshaking: AtomicBool,
    /// Presented a client certificate the client CA signed.
    authenticated: AtomicBool,
    /// Has completed a request (a 2xx answer).
    proven: AtomicBool,
    closing: AtomicBool,
    close: Notify,
    epoch: Instant,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let activity = Activity {
            busy: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            source: OnceLock::new(),
            handshaking: AtomicBool::new(false),
            authenticated: AtomicBool::new(false),
            proven: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close: Notify::new(),
            epoch,
        };
        activity
            .idle_since
            .store(activity.now_ms(), Ordering::SeqCst);
        activity
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request started on this connection; it is busy until the guard drops.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        RequestGuard(Arc::clone(self))
    }

    /// A request's body waits for room in the body budget until the guard
    /// drops; meanwhile the connection may be displaced as if idle.
    pub fn waiting_for_budget(self: &Arc<Self>) -> WaitGuard {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        WaitGuard(Arc::clone(self))
    }

    /// A request on this connection was answered successfully: from now on
    /// no newcomer displaces it.
    pub fn completed_request(&self) {
        self.proven.store(true, Ordering::SeqCst);
    }

    /// Whether a request on this connection has been answered successfully.
    pub fn is_proven(&self) -> bool {
        self.proven.load(Ordering::SeqCst)
    }

    /// The client's address (`None` before the connection is placed).
    pub fn source(&self) -> Option<IpAddr> {
        self.source.get().copied()
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

    /// A request is being served on this connection: in flight and not
    /// just waiting for room in the body budget.
    pub fn is_serving(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > self.waiting.load(Ordering::SeqCst)
    }

    /// Resolves when the tracker wants this connection closed to make room.
    pub async fn shed(&self) {
        self.close.notified().await;
    }

    /// May be closed to make room for a newcomer.
    fn sheddable(&self, protect_authenticated: bool) -> bool {
        let protected = self.is_proven()
            || (protect_authenticated && self.authenticated.load(Ordering::SeqCst));
        self.source.get().is_some()
            && !self.closing.load(Ordering::SeqCst)
            && !self.is_serving()
            && !protected
    }

    /// Asks the connection to close; false if it was already asked.
    fn ask_to_close(&self) -> bool {
        if self.closing.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.close.notify_one();
        true
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

/// Marks the end of a wait for the body budget.
#[derive(Debug)]
pub struct WaitGuard(Arc<Activity>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request knows about its connection (a request extension).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub address: IpAddr,
    /// The connection had completed a request when this one started.
    pub proven: bool,
    /// The connection's activity record.
    pub activity: Arc<Activity>,
}

/// Why a connection was refused once its source was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source holds `max_connections_per_source` connections, none of
    /// which may be displaced.
    SourceConnections,
    /// Its source has `max_handshakes_per_source` handshakes in progress.
    SourceHandshakes,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::SourceConnections => "source_connections",
            Refusal::SourceHandshakes => "source_handshakes",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct SourceCount {
    connections: usize,
    handshakes: usize,
}

#[derive(Debug, Default)]
struct State {
    open: HashMap<u64, Arc<Activity>>,
    sources: HashMap<IpAddr, SourceCount>,
    next: u64,
}

/// The open admission connections, bounded (see the module docs).
#[derive(Debug)]
pub struct Connections {
    max: usize,
    per_source: usize,
    handshakes_per_source: usize,
    protect_authenticated: bool,
    state: Mutex<State>,
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

    /// Assigns the accepted connection from `source` to this place, within
    /// the source's bounds; at its connection bound the source's own
    /// oldest displaceable connection makes room. The connection counts as
    /// in its handshake until [`Slot::handshake_done`].
    pub fn place(&self, source: IpAddr) -> Result<(), Refusal> {
        let owner = &self.owner;
        let mut state = owner.lock();
        let count = state.sources.get(&source).copied().unwrap_or_default();
        if count.handshakes >= owner.handshakes_per_source {
            return Err(Refusal::SourceHandshakes);
        }
        if count.connections >= owner.per_source {
            let victim = state
                .open
                .values()
                .filter(|a| a.source() == Some(source) && a.sheddable(owner.protect_authenticated))
                .min_by_key(|a| a.idle_since.load(Ordering::SeqCst))
                .cloned();
            match victim {
                Some(victim) => owner.shed_one(&victim),
                None => return Err(Refusal::SourceConnections),
            }
        }
        if self.activity.source.set(source).is_err() {
            // Placed twice: the first placement stands.
            return Ok(());
        }
        self.activity.handshaking.store(true, Ordering::SeqCst);
        let count = state.sources.entry(source).or_default();
        count.connections += 1;
        count.handshakes += 1;
        Ok(())
    }

    /// The TLS handshake is over; `authenticated` when the client presented
    /// a certificate the client CA signed.
    pub fn handshake_done(&self, authenticated: bool) {
        self.activity
            .authenticated
            .store(authenticated, Ordering::SeqCst);
        let mut state = self.owner.lock();
        self.owner.end_handshake(&mut state, &self.activity);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut state = self.owner.lock();
            state.open.remove(&self.id);
            self.owner.end_handshake(&mut state, &self.activity);
            if let Some(source) = self.activity.source() {
                if let Some(count) = state.sources.get_mut(&source) {
                    count.connections = count.connections.saturating_sub(1);
                    if count.connections == 0 {
                        state.sources.remove(&source);
                    }
                }
            }
        }
        if let Some(metrics) = &self.owner.metrics {
            metrics.connections_changed(-1);
        }
        self.owner.freed.notify_one();
    }
}

enum Admit {
    Slot(Slot),
    Shed,
    AllBusy,
}

impl Connections {
    /// A tracker for the connection bounds of `limits`; with
    /// `protect_authenticated` (client certificates required), connections
    /// that authenticated are never displaced.
    pub fn new(
        limits: &PortLimits,
        protect_authenticated: bool,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Self> {
        Arc::new(Connections {
            max: limits.max_connections.max(1),
            per_source: limits.max_connections_per_source.max(1),
            handshakes_per_source: limits.max_handshakes_per_source.max(1),
            protect_authenticated,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            shed: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements: a panic elsewhere
        // while holding the lock leaves nothing half-done worth refusing.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end_handshake(&self, state: &mut State, activity: &Activity) {
        if !activity.handshaking.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(count) = activity.source().and_then(|s| state.sources.get_mut(&s)) {
            count.handshakes = count.handshakes.saturating_sub(1);
        }
    }

    fn shed_one(&self, victim: &Activity) {
        if victim.ask_to_close() {
            self.shed.fetch_add(1, Ordering::SeqCst);
            if let Some(metrics) = &self.metrics {
                metrics.connection_shed();
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Connections closed so far to make room.
    pub fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::SeqCst)
    }

    /// A place for the next connection: at once below the limit; at the
    /// limit, after a displaceable connection has closed (one of the
    /// source holding the most connections, idle the longest), or, if none
    /// may be displaced, after any has closed.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_admit() {
                Admit::Slot(slot) => return slot,
                // A connection closing gracefully may take a moment; if it
                // does, ask the next one rather than keep the caller waiting.
                Admit::Shed => {
                    let _ = tokio::time::timeout(SHED_PATIENCE, freed).await;
                }
                Admit::AllBusy => freed.await,
            }
        }
    }

    fn try_admit(self: &Arc<Self>) -> Admit {
        let mut state = self.lock();
        if state.open.len() < self.max {
            let id = state.next;
            state.next += 1;
            let activity = Arc::new(Activity::new(self.epoch));
            state.open.insert(id, Arc::clone(&activity));
            if let Some(metrics) = &self.metrics {
                metrics.connections_changed(1);
            }
            return Admit::Slot(Slot {
                id,
                activity,
                owner: Arc::clone(self),
            });
        }
        let held = |a: &Activity| {
            a.source()
                .and_then(|s| state.sources.get(&s))
                .map_or(0, |c| c.connections)
        };
        let victim = state
            .open
            .values()
            .filter(|a| a.sheddable(self.protect_authenticated))
            .max_by_key(|a| {
                (
                    held(a),
                    std::cmp::Reverse(a.idle_since.load(Ordering::SeqCst)),
                )
            })
            .cloned();
        match victim {
            Some(victim) => {
                self.shed_one(&victim);
                Admit::Shed
            }
            None => Admit::AllBusy,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn bounds(max: usize, per_source: usize, handshakes: usize) -> PortLimits {
        PortLimits {
            max_connections: max,
            max_connections_per_source: per_source,
            max_handshakes_per_source: handshakes,
            ..PortLimits::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// A connection from `source` past its handshake.
    async fn open(connections: &Arc<Connections>, source: u8) -> Slot {
        let slot = connections.admit().await;
        slot.place(ip(source)).unwrap();
        slot.handshake_done(false);
        slot
    }

    fn waiting_admit(connections: &Arc<Connections>) -> tokio::task::JoinHandle<Slot> {
        let connections = connections.clone();
        tokio::spawn(async move { connections.admit().await })
    }

    #[tokio::test]
    async fn a_newcomer_displaces_only_connections_that_never_completed_a_request() {
        let connections = Connections::new(&bounds(3, 10, 10), false, None);
        let kept = open(&connections, 1).await;
        {
            let _request = kept.activity().request();
            kept.activity().completed_request();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fresh = open(&connections, 2).await;
        let busy = open(&connections, 3).await;
        let _in_flight = busy.activity().request();
        // At the limit: the idle kept-alive connection (oldest idle) is
        // left alone; the fresh one is asked to close.
        let third = waiting_admit(&connections);
        tokio::time::timeout(Duration::from_secs(5), fresh.activity().shed())
            .await
            .unwrap();
        assert!(!third.is_finished());
        drop(fresh);
        let newcomer = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(connections.shed_count(), 1);
        // Now only the kept-alive and the busy one are left besides the
        // newcomer, still unplaced: accept waits.
        let fourth = waiting_admit(&connections);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!fourth.is_finished());
        assert_eq!(connections.shed_count(), 1);
        drop(newcomer);
        tokio::time::timeout(Duration::from_secs(5), fourth)
            .await
            .unwrap()
            .unwrap();
        drop(kept);
    }

    #[tokio::test]
    async fn the_source_holding_the_most_connections_makes_room() {
        let connections = Connections::new(&bounds(4, 10, 10), false, None);
        let api_server = open(&connections, 1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let flood: Vec<Slot> = [
            open(&connections, 2).await,
            open(&connections, 2).await,
            open(&connections, 2).await,
        ]
        .into();
        // The API server's connection is the oldest idle, but its source
        // holds one connection and the flood's three.
        let _waiting = waiting_admit(&connections);
        tokio::time::timeout(Duration::from_secs(5), flood[0].activity().shed())
            .await
            .unwrap();
        assert!(!api_server.activity().closing.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn authenticated_connections_are_never_displaced() {
        let connections = Connections::new(&bounds(2, 10, 10), true, None);
        let authenticated = connections.admit().await;
        authenticated.place(ip(1)).unwrap();
        authenticated.handshake_done(true);
        let handshaking = connections.admit().await;
        handshaking.place(ip(2)).unwrap();
        let _waiting = waiting_admit(&connections);
        tokio::time::timeout(Duration::from_secs(5), handshaking.activity().shed())
            .await
            .unwrap();
        assert!(!authenticated.activity().closing.load(Ordering::SeqCst));
        // Without client authentication, the same connection is fair game.
        let open_to_all = Connections::new(&bounds(1, 10, 10), false, None);
        let unauthenticated = open(&open_to_all, 1).await;
        let _waiting = waiting_admit(&open_to_all);
        tokio::time::timeout(Duration::from_secs(5), unauthenticated.activity().shed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_source_is_bounded_in_connections_and_handshakes() {
        let connections = Connections::new(&bounds(100, 3, 2), false, None);
        let a = connections.admit().await;
        a.place(ip(1)).unwrap();
        let b = connections.admit().await;
        b.place(ip(1)).unwrap();
        // Two handshakes in progress: a third is refused at once, while
        // another source is not affected.
        let c = connections.admit().await;
        assert_eq!(c.place(ip(1)), Err(Refusal::SourceHandshakes));
        drop(c);
        let other = connections.admit().await;
        other.place(ip(2)).unwrap();
        a.handshake_done(false);
        b.handshake_done(false);
        {
            let _request = a.activity().request();
            a.activity().completed_request();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let c = connections.admit().await;
        c.place(ip(1)).unwrap();
        c.handshake_done(false);
        // Three connections: a newcomer from the source displaces its own
        // oldest connection that never completed a request (b, not a).
        let d = connections.admit().await;
        d.place(ip(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.activity().shed())
            .await
            .unwrap();
        assert!(!a.activity().closing.load(Ordering::SeqCst));
        // With nothing left to displace, the next one is refused.
        d.handshake_done(false);
        {
            let _request = c.activity().request();
            c.activity().completed_request();
            let _request = d.activity().request();
            d.activity().completed_request();
        }
        drop(b);
        let e = connections.admit().await;
        assert_eq!(e.place(ip(1)), Err(Refusal::SourceConnections));
        drop(e);
        // Closing connections give their places back.
        drop(a);
        let f = connections.admit().await;
        f.place(ip(1)).unwrap();
        assert_eq!(connections.open(), 4);
        assert!(connections.lock().sources[&ip(1)].connections == 3);
    }
}
