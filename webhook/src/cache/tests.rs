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
    let cache: FlightCache<&str, u32, String> = FlightCache::new(10).with_limits(FlightLimits {
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

#[tokio::test]
async fn stored_values_stay_within_their_weight_budget() {
    let (clock, offset) = manual_clock();
    let cache: FlightCache<u32, Vec<u8>, ()> =
        FlightCache::with_clock(100, clock).with_weight(Vec::len, 10);
    cache.insert(1, vec![0; 4], Duration::from_secs(10));
    cache.insert(2, vec![0; 4], Duration::from_secs(20));
    assert_eq!(cache.weight(), 8);
    // A third of 4 goes over 10: the one expiring first makes room.
    cache.insert(3, vec![0; 4], Duration::from_secs(30));
    assert_eq!(cache.weight(), 8);
    assert!(cache.get(&1).is_none());
    assert!(cache.get(&2).is_some() && cache.get(&3).is_some());
    // Heavier than the whole budget: handed out, never stored.
    let fresh = cache
        .get_or_compute(4, async { Ok((vec![0; 11], Duration::from_secs(30))) })
        .await;
    assert_eq!(fresh, Lookup::Fresh(vec![0; 11]));
    assert!(cache.get(&4).is_none());
    assert_eq!(cache.weight(), 8);
    // Replacing an entry replaces its weight; expiry frees it.
    cache.insert(3, vec![0; 1], Duration::from_secs(30));
    assert_eq!(cache.weight(), 5);
    offset.store(25_000, Ordering::SeqCst);
    cache.insert(5, vec![0; 9], Duration::from_secs(30));
    assert_eq!(cache.weight(), 10);
    assert!(cache.get(&2).is_none(), "expired entries go first");
    assert!(cache.get(&3).is_some() && cache.get(&5).is_some());
}
