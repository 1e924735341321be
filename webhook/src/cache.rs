//! A small TTL cache with a size bound and single flight, used for verified
//! digests (keyed by digest and rule fingerprint) and for tag → digest
//! resolutions.
//!
//! Single flight: the first caller for a key spawns the computation on the
//! runtime; concurrent callers for the same key await the same task instead
//! of starting their own, so a rollout of 100 pods of one new image costs
//! one verification. The task runs on even if every caller gave up (a
//! review that hit its deadline), so the retry the API server makes finds
//! the answer cached, but never past its own deadline ([`FlightLimits`]):
//! nothing runs unbounded in the background. And a caller that finds the
//! computation in flight for longer than `stale_after` (a registry request
//! that hangs) starts a fresh one instead of joining it, so a recovered
//! registry is seen at once rather than after the hung attempt gives up.
//! Failures are shared with the callers waiting at the time but never
//! stored.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

/// Where the time comes from (tests inject a manual clock).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// How a lookup was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<V, E> {
    /// From memory, no computation.
    Hit(V),
    /// Computed now (by this caller or one it joined).
    Fresh(V),
    /// The computation failed (not cached).
    Failed(E),
    /// The computation ran out of its own time ([`FlightLimits::run_for`]).
    Expired,
    /// The computation task was lost (it panicked); treat as a failure.
    Lost,
}

/// Bounds on one shared computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightLimits {
    /// The computation is abandoned after this long, whoever waits on it.
    pub run_for: Duration,
    /// A caller finding it in flight for longer than this starts a fresh one.
    pub stale_after: Duration,
}

/// How a spawned computation ended.
#[derive(Clone)]
enum Outcome<V, E> {
    Done(Result<V, E>),
    Expired,
}

type Flight<V, E> = Shared<BoxFuture<'static, Option<Outcome<V, E>>>>;

/// A computation in flight: which attempt, since when, and its result.
struct InFlight<V, E> {
    id: u64,
    started: Instant,
    flight: Flight<V, E>,
}

struct Entry<V> {
    value: V,
    expires: Instant,
}

struct State<K, V, E> {
    entries: HashMap<K, Entry<V>>,
    in_flight: HashMap<K, InFlight<V, E>>,
    next_id: u64,
}

/// TTL + size-bounded cache with single flight. Cheap to clone (shared state).
pub struct FlightCache<K, V, E> {
    state: Arc<Mutex<State<K, V, E>>>,
    max_entries: usize,
    clock: Clock,
    limits: Option<FlightLimits>,
}

impl<K, V, E> Clone for FlightCache<K, V, E> {
    fn clone(&self) -> Self {
        FlightCache {
            state: Arc::clone(&self.state),
            max_entries: self.max_entries,
            clock: Arc::clone(&self.clock),
            limits: self.limits,
        }
    }
}

impl<K, V, E> fmt::Debug for FlightCache<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlightCache")
            .field("max_entries", &self.max_entries)
            .field(
                "len",
                &self.state.lock().map(|s| s.entries.len()).unwrap_or(0),
            )
            .finish()
    }
}

impl<K, V, E> FlightCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// A cache holding at most `max_entries` values (at least one), on the system clock.
    pub fn new(max_entries: usize) -> Self {
        Self::with_clock(max_entries, Arc::new(Instant::now))
    }

    /// Same, with an injected clock.
    pub fn with_clock(max_entries: usize, clock: Clock) -> Self {
        FlightCache {
            state: Arc::new(Mutex::new(State {
                entries: HashMap::new(),
                in_flight: HashMap::new(),
                next_id: 0,
            })),
            max_entries: max_entries.max(1),
            clock,
            limits: None,
        }
    }

    /// Bounds every computation by `limits` (without them a computation
    /// runs to completion and is always joined).
    pub fn with_limits(mut self, limits: FlightLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// How many computations are in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.state.lock().map(|s| s.in_flight.len()).unwrap_or(0)
    }

    /// Number of stored (possibly expired) entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.entries.len()).unwrap_or(0)
    }

    /// Whether nothing is stored.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored, unexpired value for `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        let now = (self.clock)();
        let state = self.state.lock().ok()?;
        state
            .entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    /// Stores `value` for `ttl` (a zero TTL stores nothing).
    #[cfg(test)]
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if let Ok(mut state) = self.state.lock() {
            self.store(&mut state, key, value, ttl);
        }
    }

    fn store(&self, state: &mut State<K, V, E>, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = (self.clock)();
        if !state.entries.contains_key(&key) && state.entries.len() >= self.max_entries {
            state.entries.retain(|_, e| e.expires > now);
            // Still full: evict whatever expires first; it is the least
            // valuable entry we can identify without tracking access order.
            while state.entries.len() >= self.max_entries {
                let oldest = state
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        state.entries.remove(&k);
                    }
                    None => break,
                }
            }
        }
        state.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    /// The cached value for `key`, or the result of `compute` (shared with
    /// every concurrent caller for the same key). `compute` returns the value
    /// and how long to keep it (zero: do not store). Must run inside a Tokio
    /// runtime.
    pub async fn get_or_compute<Fut>(&self, key: K, compute: Fut) -> Lookup<V, E>
    where
        Fut: Future<Output = Result<(V, Duration), E>> + Send + 'static,
    {
        let flight = {
            let Ok(mut state) = self.state.lock() else {
                return Lookup::Lost;
            };
            let now = (self.clock)();
            if let Some(entry) = state.entries.get(&key) {
                if entry.expires > now {
                    return Lookup::Hit(entry.value.clone());
                }
            }
            let stale_after = self.limits.map(|l| l.stale_after);
            let joinable = state.in_flight.get(&key).filter(|f| {
                stale_after.is_none_or(|stale| now.saturating_duration_since(f.started) <= stale)
            });
            match joinable {
                Some(in_flight) => (in_flight.id, in_flight.flight.clone()),
                None => {
                    // None in flight, or one gone stale: start afresh. A
                    // stale attempt runs on until its own deadline; whichever
                    // finishes stores its value.
                    let id = state.next_id;
                    state.next_id = state.next_id.wrapping_add(1);
                    let flight = self.spawn(key.clone(), id, compute);
                    let in_flight = InFlight {
                        id,
                        started: now,
                        flight: flight.clone(),
                    };
                    state.in_flight.insert(key.clone(), in_flight);
                    (id, flight)
                }
            }
        };
        let (id, flight) = flight;
        match flight.await {
            Some(Outcome::Done(Ok(value))) => Lookup::Fresh(value),
            Some(Outcome::Done(Err(err))) => Lookup::Failed(err),
            Some(Outcome::Expired) => Lookup::Expired,
            None => {
                // The task panicked: forget it so the next caller retries.
                if let Ok(mut state) = self.state.lock() {
                    state.forget(&key, id);
                }
                Lookup::Lost
            }
        }
    }

    /// Spawns attempt `id` for `key`, bounded by the limits' `run_for`.
    fn spawn<Fut>(&self, key: K, id: u64, compute: Fut) -> Flight<V, E>
    where
        Fut: Future<Output = Result<(V, Duration), E>> + Send + 'static,
    {
        let cache = self.clone();
        let run_for = self.limits.map(|l| l.run_for);
        let handle = tokio::spawn(async move {
            let result = match run_for {
                // Dropping the computation on timeout cancels its requests.
                Some(limit) => tokio::time::timeout(limit, compute).await.ok(),
                None => Some(compute.await),
            };
            let Ok(mut state) = cache.state.lock() else {
                return match result {
                    Some(result) => Outcome::Done(result.map(|(v, _)| v)),
                    None => Outcome::Expired,
                };
            };
            state.forget(&key, id);
            match result {
                Some(Ok((value, ttl))) => {
                    cache.store(&mut state, key, value.clone(), ttl);
                    Outcome::Done(Ok(value))
                }
                Some(Err(err)) => Outcome::Done(Err(err)),
                None => Outcome::Expired,
            }
        });
        async move { handle.await.ok() }.boxed().shared()
    }
}

impl<K: Hash + Eq, V, E> State<K, V, E> {
    /// Drops the in-flight record of `key` if it is still attempt `id` (a
    /// fresher attempt may have replaced a stale one).
    fn forget(&mut self, key: &K, id: u64) {
        if self.in_flight.get(key).is_some_and(|f| f.id == id) {
            self.in_flight.remove(key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    fn manual_clock() -> (Clock, Arc<AtomicU64>) {
        let start = Instant::now();
        let offset = Arc::new(AtomicU64::new(0));
        let o = Arc::clone(&offset);
        (
            Arc::new(move || start + Duration::from_millis(o.load(Ordering::SeqCst))),
            offset,
        )
    }

    #[tokio::test]
    async fn values_expire_after_their_ttl() {
        let (clock, offset) = manual_clock();
        let cache: FlightCache<&str, u32, String> = FlightCache::with_clock(10, clock);
        let calls = Arc::new(AtomicUsize::new(0));
        let compute = |calls: Arc<AtomicUsize>| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok((7, Duration::from_secs(60)))
        };
        assert_eq!(
            cache.get_or_compute("a", compute(calls.clone())).await,
            Lookup::Fresh(7)
        );
        assert_eq!(
            cache.get_or_compute("a", compute(calls.clone())).await,
            Lookup::Hit(7)
        );
        offset.store(59_000, Ordering::SeqCst);
        assert_eq!(cache.get(&"a"), Some(7));
        offset.store(60_001, Ordering::SeqCst);
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(
            cache.get_or_compute("a", compute(calls.clone())).await,
            Lookup::Fresh(7)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failures_and_zero_ttls_are_not_stored() {
        let cache: FlightCache<&str, u32, String> = FlightCache::new(10);
        assert_eq!(
            cache
                .get_or_compute("a", async { Err("down".to_string()) })
                .await,
            Lookup::Failed("down".to_string())
        );
        assert!(cache.is_empty());
        assert_eq!(
            cache
                .get_or_compute("a", async { Ok((1, Duration::ZERO)) })
                .await,
            Lookup::Fresh(1)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded_and_the_soonest_to_expire_goes_first() {
        let (clock, offset) = manual_clock();
        let cache: FlightCache<u32, u32, ()> = FlightCache::with_clock(3, clock);
        cache.insert(1, 1, Duration::from_secs(10));
        cache.insert(2, 2, Duration::from_secs(5));
        cache.insert(3, 3, Duration::from_secs(20));
        cache.insert(4, 4, Duration::from_secs(20));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&2), None, "the soonest to expire is evicted");
        assert_eq!(cache.get(&1), Some(1));
        // Expired entries are dropped before anything live is evicted.
        offset.store(11_000, Ordering::SeqCst);
        cache.insert(5, 5, Duration::from_secs(20));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&3), Some(3));
        assert_eq!(cache.get(&4), Some(4));
        assert_eq!(cache.get(&5), Some(5));
        for i in 100..200 {
            cache.insert(i, i, Duration::from_secs(30));
        }
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_share_one_computation() {
        let cache: FlightCache<&str, u32, String> = FlightCache::new(10);
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            let mut gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_compute("img", async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        Ok((42, Duration::from_secs(60)))
                    })
                    .await
            }));
        }
        // Let every caller join before the computation may finish.
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(true).unwrap();
        for task in tasks {
            let lookup = task.await.unwrap();
            assert!(
                matches!(lookup, Lookup::Fresh(42) | Lookup::Hit(42)),
                "{lookup:?}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_computation_outlives_callers_that_gave_up() {
        let cache: FlightCache<&str, u32, String> = FlightCache::new(10);
        let slow = cache.get_or_compute("a", async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok((9, Duration::from_secs(60)))
        });
        assert!(tokio::time::timeout(Duration::from_millis(5), slow)
            .await
            .is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(cache.get(&"a"), Some(9));
    }

    /// Sets `flag` when dropped: shows a computation was cancelled, not left running.
    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_hung_computation_is_abandoned_at_its_own_deadline() {
        let cache: FlightCache<&str, u32, String> =
            FlightCache::new(10).with_limits(FlightLimits {
                run_for: Duration::from_millis(100),
                stale_after: Duration::from_secs(3600),
            });
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = DropFlag(Arc::clone(&dropped));
        let started = Instant::now();
        let lookup = cache.get_or_compute("a", async move {
            let _guard = guard;
            futures::future::pending::<Result<(u32, Duration), String>>().await
        });
        // A regression would hang here; fail instead.
        let lookup = tokio::time::timeout(Duration::from_secs(5), lookup)
            .await
            .expect("the computation was not bounded");
        assert_eq!(lookup, Lookup::Expired);
        assert!(started.elapsed() < Duration::from_secs(2));
        // Nothing left running in the background, nothing left in flight.
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(cache.in_flight(), 0);
        assert_eq!(
            cache
                .get_or_compute("a", async { Ok((1, Duration::from_secs(60))) })
                .await,
            Lookup::Fresh(1)
        );
    }

    #[tokio::test]
    async fn a_stale_flight_is_not_joined() {
        let (clock, offset) = manual_clock();
        let cache: FlightCache<&str, u32, String> =
            FlightCache::with_clock(10, clock).with_limits(FlightLimits {
                run_for: Duration::from_secs(60),
                stale_after: Duration::from_secs(2),
            });
        let calls = Arc::new(AtomicUsize::new(0));
        // The first attempt hangs until released (a registry request that hangs).
        let (release, gate) = tokio::sync::watch::channel(false);
        let hung = {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            let mut gate = gate.clone();
            tokio::spawn(async move {
                cache
                    .get_or_compute("img", async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        Ok((1, Duration::from_secs(60)))
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // While it is young, a second caller joins it rather than computing.
        offset.store(1_000, Ordering::SeqCst);
        let joined = tokio::time::timeout(
            Duration::from_millis(50),
            cache.get_or_compute("img", {
                let calls = Arc::clone(&calls);
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok((2, Duration::from_secs(60)))
                }
            }),
        )
        .await;
        assert!(joined.is_err(), "joined the hung attempt and waited");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Once it is stale, the next caller starts afresh and gets an answer.
        offset.store(2_500, Ordering::SeqCst);
        let fresh = cache.get_or_compute("img", {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok((2, Duration::from_secs(60)))
            }
        });
        let fresh = tokio::time::timeout(Duration::from_secs(5), fresh)
            .await
            .expect("joined the stale attempt");
        assert_eq!(fresh, Lookup::Fresh(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.get(&"img"), Some(2));
        // The old attempt finishing later neither hangs nor corrupts the
        // in-flight records.
        release.send(true).unwrap();
        assert_eq!(hung.await.unwrap(), Lookup::Fresh(1));
        assert_eq!(cache.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_old_attempt_does_not_forget_a_newer_one() {
        let (clock, offset) = manual_clock();
        let cache: FlightCache<&str, u32, String> =
            FlightCache::with_clock(10, clock).with_limits(FlightLimits {
                run_for: Duration::from_secs(60),
                stale_after: Duration::from_secs(2),
            });
        let (release_old, old_gate) = tokio::sync::watch::channel(false);
        let (release_new, new_gate) = tokio::sync::watch::channel(false);
        let attempt = |mut gate: tokio::sync::watch::Receiver<bool>, value: u32| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_compute("img", async move {
                        let _ = gate.wait_for(|open| *open).await;
                        Err::<(u32, Duration), String>(format!("attempt {value} failed"))
                    })
                    .await
            })
        };
        let old = attempt(old_gate, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        offset.store(3_000, Ordering::SeqCst);
        let new = attempt(new_gate, 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        release_old.send(true).unwrap();
        assert_eq!(
            old.await.unwrap(),
            Lookup::Failed("attempt 1 failed".into())
        );
        // The newer attempt is still the one in flight, and is joined.
        assert_eq!(cache.in_flight(), 1);
        let joiner = attempt(tokio::sync::watch::channel(true).1, 3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        release_new.send(true).unwrap();
        assert_eq!(
            new.await.unwrap(),
            Lookup::Failed("attempt 2 failed".into())
        );
        assert_eq!(
            joiner.await.unwrap(),
            Lookup::Failed("attempt 2 failed".into())
        );
        assert_eq!(cache.in_flight(), 0);
    }
}
