//! The shared budget of buffered request-body bytes: two reserves for each
//! body's first [`RESERVED_PER_BODY`] bytes (one for connections that have
//! completed a request, one for the others), the rest for bytes beyond,
//! and one share per source address. A body takes its reserved bytes in
//! one step (as many as its declared length needs), so no body holds part
//! of a reserve while waiting for more; the reserves are granted fairly,
//! to the waiting body whose source holds the least, so neither a crowd of
//! new connections nor one busy source can make an ordinary review wait
//! behind held bodies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::RESERVED_PER_BODY;

/// Per-source shares kept when idle before the map is swept.
const IDLE_SOURCES_KEPT: usize = 256;

/// The shared budget of buffered body bytes (see the module docs).
#[derive(Debug)]
pub struct BodyBudget {
    proven: Arc<FairPool>,
    reserve: Arc<FairPool>,
    rest: Arc<Semaphore>,
    per_source: usize,
    sources: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// Where a body comes from, as far as the budget cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodySource {
    /// The client's address (`None`: unknown, no per-source share).
    pub address: Option<IpAddr>,
    /// Its connection has completed a request before this one.
    pub proven: bool,
}

/// Bytes a body holds from the budget; given back when dropped.
#[derive(Debug, Default)]
pub struct BodyPermit {
    reserved: Option<PoolPermit>,
    semaphores: Vec<OwnedSemaphorePermit>,
    held: usize,
}

impl BodyPermit {
    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }
}

/// Why a body could not have more bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetError {
    /// The bytes beyond the reserves, or its source's share, are spent:
    /// refuse now.
    Exhausted,
}

fn semaphore(bytes: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)))
}

impl BodyBudget {
    /// A budget of `max_bytes` (a quarter reserved for bodies' first
    /// [`RESERVED_PER_BODY`] bytes on proven connections, a quarter for
    /// those on others, half for the rest), at most `per_source` of it for
    /// one source address.
    pub fn new(max_bytes: usize, per_source: usize) -> Self {
        let quarter = (max_bytes / 4).max(RESERVED_PER_BODY);
        BodyBudget {
            proven: FairPool::new(quarter),
            reserve: FairPool::new(quarter),
            rest: semaphore(max_bytes.saturating_sub(2 * quarter)),
            per_source: per_source.max(RESERVED_PER_BODY),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// The share of `address`, created on first use; shares nobody holds
    /// are swept once there are many.
    fn share(&self, address: IpAddr) -> Arc<Semaphore> {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= IDLE_SOURCES_KEPT && !sources.contains_key(&address) {
            // Only the map holds an idle share: nothing is lost.
            sources.retain(|_, share| Arc::strong_count(share) > 1);
        }
        Arc::clone(
            sources
                .entry(address)
                .or_insert_with(|| semaphore(self.per_source)),
        )
    }

    /// The first bytes of a body from `from`: `bytes` (at most
    /// [`RESERVED_PER_BODY`]) from its source's share and from the reserve
    /// of its kind of connection, waiting for both (the caller bounds the
    /// wait by the body's deadline and does not count it against its pace).
    pub async fn reserve(&self, from: BodySource, bytes: usize) -> Result<BodyPermit, BudgetError> {
        let bytes = bytes.min(RESERVED_PER_BODY);
        let mut permit = BodyPermit::default();
        if bytes == 0 {
            return Ok(permit);
        }
        let count = u32::try_from(bytes).map_err(|_| BudgetError::Exhausted)?;
        if let Some(address) = from.address {
            let share = self
                .share(address)
                .acquire_many_owned(count)
                .await
                .map_err(|_| BudgetError::Exhausted)?;
            permit.semaphores.push(share);
        }
        let pool = if from.proven {
            &self.proven
        } else {
            &self.reserve
        };
        permit.reserved = Some(pool.acquire(from.address, bytes).await?);
        permit.held = bytes;
        Ok(permit)
    }

    /// Grows `permit` to cover `total` bytes of a body from `from`, from
    /// its source's share and the rest; refused at once when either is
    /// spent (a queue of large bodies must not form).
    pub fn grow(
        &self,
        permit: &mut BodyPermit,
        from: BodySource,
        total: usize,
    ) -> Result<(), BudgetError> {
        if total <= permit.held {
            return Ok(());
        }
        let count = u32::try_from(total - permit.held).map_err(|_| BudgetError::Exhausted)?;
        let mut semaphores = vec![Arc::clone(&self.rest)];
        semaphores.extend(from.address.map(|address| self.share(address)));
        for semaphore in semaphores {
            let taken = semaphore
                .try_acquire_many_owned(count)
                .map_err(|_| BudgetError::Exhausted)?;
            permit.semaphores.push(taken);
        }
        permit.held = total;
        Ok(())
    }
}

/// A pool of bytes granted fairly among sources: of the bodies waiting,
/// the one whose source holds the least goes first (the earliest among
/// equals), so a source that just arrived is served ahead of one holding
/// many stalled bodies.
#[derive(Debug)]
struct FairPool {
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    available: usize,
    held: HashMap<Option<IpAddr>, usize>,
    waiting: Vec<Waiter>,
    next: u64,
}

#[derive(Debug)]
struct Waiter {
    order: u64,
    source: Option<IpAddr>,
    bytes: usize,
    granted: oneshot::Sender<PoolPermit>,
}

/// Bytes held from a [`FairPool`]; given back (and granted to the next
/// waiter) when dropped.
#[derive(Debug)]
struct PoolPermit {
    pool: Arc<FairPool>,
    source: Option<IpAddr>,
    bytes: usize,
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        self.pool.release(self.source, self.bytes);
    }
}

impl FairPool {
    fn new(bytes: usize) -> Arc<Self> {
        Arc::new(FairPool {
            state: Mutex::new(PoolState {
                available: bytes,
                held: HashMap::new(),
                waiting: Vec::new(),
                next: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Every update is complete between statements: a poisoned lock
        // still holds consistent numbers.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `bytes` for a body from `source`, in the pool's order.
    async fn acquire(
        self: &Arc<Self>,
        source: Option<IpAddr>,
        bytes: usize,
    ) -> Result<PoolPermit, BudgetError> {
        let (granted, receiver) = oneshot::channel();
        let undelivered = {
            let mut state = self.lock();
            let order = state.next;
            state.next += 1;
            state.waiting.push(Waiter {
                order,
                source,
                bytes,
                granted,
            });
            self.grant(&mut state)
        };
        drop(undelivered);
        // A waiter is dropped unanswered only with the pool itself.
        receiver.await.map_err(|_| BudgetError::Exhausted)
    }

    fn release(self: &Arc<Self>, source: Option<IpAddr>, bytes: usize) {
        let undelivered = {
            let mut state = self.lock();
            state.available += bytes;
            if let Some(held) = state.held.get_mut(&source) {
                *held = held.saturating_sub(bytes);
                if *held == 0 {
                    state.held.remove(&source);
                }
            }
            self.grant(&mut state)
        };
        // Dropped with the lock released: each gives its bytes back.
        drop(undelivered);
    }

    /// Grants waiting bodies in order while the next one fits; returns the
    /// permits whose waiter gave up meanwhile, to be dropped by the caller
    /// once the lock is released.
    fn grant(self: &Arc<Self>, state: &mut PoolState) -> Vec<PoolPermit> {
        let mut undelivered = Vec::new();
        state.waiting.retain(|w| !w.granted.is_closed());
        loop {
            let next = state
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| (state.held.get(&w.source).copied().unwrap_or(0), w.order))
                .map(|(i, w)| (i, w.bytes));
            let Some((index, bytes)) = next else { break };
            if bytes > state.available {
                break;
            }
            let waiter = state.waiting.swap_remove(index);
            state.available -= bytes;
            *state.held.entry(waiter.source).or_default() += bytes;
            let permit = PoolPermit {
                pool: Arc::clone(self),
                source: waiter.source,
                bytes,
            };
            if let Err(permit) = waiter.granted.send(permit) {
                undelivered.push(permit);
            }
        }
        undelivered
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;

    fn from(last: u8, proven: bool) -> BodySource {
        BodySource {
            address: Some(IpAddr::from([10, 0, 0, last])),
            proven,
        }
    }

    fn waiting(
        budget: &Arc<BodyBudget>,
        source: BodySource,
        bytes: usize,
    ) -> tokio::task::JoinHandle<BodyPermit> {
        let budget = budget.clone();
        tokio::spawn(async move { budget.reserve(source, bytes).await.unwrap() })
    }

    #[tokio::test]
    async fn bodies_beyond_the_reserve_are_refused_when_the_rest_is_spent() {
        // 2 MiB: 512 KiB for each reserve, 1 MiB rest.
        let budget = BodyBudget::new(2 * MIB, 2 * MIB);
        let mut big = budget.reserve(from(1, false), 64 * KIB).await.unwrap();
        budget.grow(&mut big, from(1, false), 1088 * KIB).unwrap();
        let mut second = budget.reserve(from(2, false), 64 * KIB).await.unwrap();
        assert_eq!(
            budget.grow(&mut second, from(2, false), 128 * KIB),
            Err(BudgetError::Exhausted)
        );
        // A small body still gets in: the reserve is not spent.
        budget.reserve(from(2, false), 8 * KIB).await.unwrap();
        drop(big);
        let mut third = budget.reserve(from(3, false), 64 * KIB).await.unwrap();
        budget.grow(&mut third, from(3, false), 512 * KIB).unwrap();
        assert_eq!(third.held(), 512 * KIB);
    }

    #[tokio::test]
    async fn held_bodies_on_new_connections_never_delay_a_proven_one() {
        let budget = Arc::new(BodyBudget::new(2 * MIB, 2 * MIB));
        // Eight stalled bodies from new connections spend their reserve...
        let mut held = Vec::new();
        for i in 0..8 {
            held.push(budget.reserve(from(i, false), 64 * KIB).await.unwrap());
        }
        // ...so the next new connection's body waits,
        let next = waiting(&budget, from(9, false), KIB);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!next.is_finished());
        // but a review on a connection that has completed one does not.
        tokio::time::timeout(
            Duration::from_millis(100),
            budget.reserve(from(20, true), 8 * KIB),
        )
        .await
        .expect("no wait")
        .unwrap();
        drop(held);
        next.await.unwrap();
    }

    #[tokio::test]
    async fn a_newcomer_goes_ahead_of_sources_holding_many_bodies() {
        // 256 KiB per reserve: four 64 KiB bodies.
        let budget = Arc::new(BodyBudget::new(MIB, MIB));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(budget.reserve(from(1, false), 64 * KIB).await.unwrap());
        }
        // Source 1 queues three more bodies, then source 2 arrives.
        let flood: Vec<_> = (0..3)
            .map(|_| waiting(&budget, from(1, false), 64 * KIB))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let newcomer = waiting(&budget, from(2, false), 2 * KIB);
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One body of source 1 ends: the newcomer is served first.
        held.pop();
        tokio::time::timeout(Duration::from_secs(1), newcomer)
            .await
            .expect("served before the flood")
            .unwrap();
        assert!(flood.iter().all(|f| !f.is_finished()));
        drop(held);
        for f in flood {
            f.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_body_that_gives_up_waiting_takes_nothing() {
        let budget = Arc::new(BodyBudget::new(MIB, MIB));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(budget.reserve(from(1, false), 64 * KIB).await.unwrap());
        }
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            budget.reserve(from(2, false), 64 * KIB),
        )
        .await;
        assert!(gave_up.is_err());
        drop(held);
        // All four places are free again.
        for i in 0..4 {
            tokio::time::timeout(
                Duration::from_millis(100),
                budget.reserve(from(3 + i, false), 64 * KIB),
            )
            .await
            .expect("free")
            .unwrap();
        }
    }

    #[tokio::test]
    async fn one_source_holds_at_most_its_share() {
        // A 256 KiB share per source.
        let budget = Arc::new(BodyBudget::new(16 * MIB, 256 * KIB));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(budget.reserve(from(1, false), 64 * KIB).await.unwrap());
        }
        // Its fifth body waits for its own share, not for anyone else's.
        let fifth = waiting(&budget, from(1, false), KIB);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!fifth.is_finished());
        budget.reserve(from(2, false), 64 * KIB).await.unwrap();
        // Bytes beyond the first 64 KiB are refused at once past the share.
        let first = &mut held[0];
        assert_eq!(
            budget.grow(first, from(1, false), 128 * KIB),
            Err(BudgetError::Exhausted)
        );
        held.pop();
        fifth.await.unwrap();
    }

    #[tokio::test]
    async fn idle_shares_are_swept() {
        let budget = BodyBudget::new(16 * MIB, MIB);
        for i in 0..=IDLE_SOURCES_KEPT {
            let address = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            let source = BodySource {
                address: Some(address),
                proven: false,
            };
            budget.reserve(source, KIB).await.unwrap();
        }
        assert!(budget.sources.lock().unwrap().len() <= IDLE_SOURCES_KEPT);
    }
}
