//! A small TTL cache with a size bound (entries, and optionally what they
//! weigh) and single flight, used for verified digests and their
//! attestations (keyed by digest and rule fingerprint) and for tag → digest
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
    /// What the value weighs ([`FlightCache::with_weight`]).
    weight: usize,
}

struct State<K, V, E> {
    entries: HashMap<K, Entry<V>>,
    /// The stored entries' total weight.
    weight: usize,
    in_flight: HashMap<K, InFlight<V, E>>,
    next_id: u64,
}

/// TTL + size-bounded cache with single flight. Cheap to clone (shared state).
pub struct FlightCache<K, V, E> {
    state: Arc<Mutex<State<K, V, E>>>,
    max_entries: usize,
    /// How much a value weighs (bytes it keeps alive), and how much all
    /// stored values may weigh together.
    weigh: Option<fn(&V) -> usize>,
    max_weight: usize,
    clock: Clock,
    limits: Option<FlightLimits>,
}

impl<K, V, E> Clone for FlightCache<K, V, E> {
    fn clone(&self) -> Self {
        FlightCache {
            state: Arc::clone(&self.state),
            max_entries: self.max_entries,
            weigh: self.weigh,
            max_weight: self.max_weight,
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
                weight: 0,
                in_flight: HashMap::new(),
                next_id: 0,
            })),
            max_entries: max_entries.max(1),
            weigh: None,
            max_weight: usize::MAX,
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

    /// Bounds what the stored values weigh together (by `weigh`, e.g. the
    /// bytes a value keeps alive) to `max_weight`: storing evicts as for the
    /// entry count, and a value heavier than the whole budget is not stored
    /// (its callers still get it).
    pub fn with_weight(mut self, weigh: fn(&V) -> usize, max_weight: usize) -> Self {
        self.weigh = Some(weigh);
        self.max_weight = max_weight;
        self
    }

    /// What the stored values weigh together.
    #[cfg(test)]
    pub fn weight(&self) -> usize {
        self.state.lock().map(|s| s.weight).unwrap_or(0)
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
        let weight = self.weigh.map_or(0, |weigh| weigh(&value));
        if ttl.is_zero() || weight > self.max_weight {
            return;
        }
        let now = (self.clock)();
        if let Some(old) = state.entries.remove(&key) {
            state.weight -= old.weight;
        }
        let full = |state: &State<K, V, E>| {
            state.entries.len() >= self.max_entries || state.weight + weight > self.max_weight
        };
        if full(state) {
            state.entries.retain(|_, e| e.expires > now);
            state.weight = state.entries.values().map(|e| e.weight).sum();
        }
        // Still full: evict whatever expires first; it is the least
        // valuable entry we can identify without tracking access order.
        while full(state) {
            let oldest = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone());
            let Some(removed) = oldest.and_then(|k| state.entries.remove(&k)) else {
                break;
            };
            state.weight -= removed.weight;
        }
        state.weight += weight;
        state.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
                weight,
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
mod tests;
