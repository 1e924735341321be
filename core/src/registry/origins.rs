//! First contact with an HTTPS origin goes alone.
//!
//! Requests to one registry share one HTTP/2 connection once it is open,
//! but the HTTP client learns whether a server speaks HTTP/2 only from the
//! TLS handshake: requests started together before any connection is up
//! each open their own (a digest's signature lookups, a Pod's tag lookups),
//! and all but one are thrown away once the handshakes are done. So while
//! nothing recent is known about an origin, its requests take turns: one
//! goes, and the rest follow once its answer shows whether the connection
//! can be shared. That costs at most one round trip, once per origin while
//! its connection stays open (the webhook keeps it), and keeps a review on
//! one connection per registry.
//!
//! An origin that answered over HTTP/1.1 cannot share a connection, and one
//! that failed may be down: their requests go at once, in parallel, so a
//! hanging registry costs one timeout, not one per waiting request.
//! Plain-HTTP origins are never gated (no ALPN: HTTP/1.1 only).
//!
//! Origins come from image references Pod authors write, so the memory is
//! bounded ([`MAX_ORIGINS`]): at the bound, origins nothing waits on and
//! with no fresh answer are forgotten first, then all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Version;

/// How long an HTTP/2 answer is taken to mean a pooled connection: less
/// than the HTTP client's 90 s idle timeout, after which it closes idle
/// connections.
const SHARED_FOR: Duration = Duration::from_secs(60);
/// How long an HTTP/1.1 answer is believed (servers rarely change).
const SEPARATE_FOR: Duration = Duration::from_secs(600);
/// How long after a failure requests go ungated.
const FAILED_FOR: Duration = Duration::from_secs(10);
/// Origins remembered at most.
pub(crate) const MAX_ORIGINS: usize = 1024;

/// Per-origin turns and what each origin's last answer showed.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    map: Mutex<HashMap<String, Arc<Origin>>>,
}

#[derive(Debug, Default)]
struct Origin {
    /// Held by the one request making first contact.
    turn: tokio::sync::Mutex<()>,
    /// Until when requests need not take turns.
    free_until: Mutex<Option<Instant>>,
}

impl Origin {
    fn is_free(&self, now: Instant) -> bool {
        self.free_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| until > now)
    }

    fn free_for(&self, period: Duration) {
        *self.free_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + period);
    }

    /// Learns from how a request ended.
    fn learn(&self, outcome: &reqwest::Result<reqwest::Response>) {
        self.free_for(match outcome {
            Ok(resp) if resp.version() == Version::HTTP_2 => SHARED_FOR,
            Ok(_) => SEPARATE_FOR,
            Err(_) => FAILED_FOR,
        });
    }
}

impl Origins {
    /// Sends `request`, taking a turn first when its origin needs one.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> reqwest::Result<reqwest::Response> {
        let (client, request) = request.build_split();
        let request = request?;
        let Some(origin) = self.origin(request.url()) else {
            return client.execute(request).await;
        };
        if origin.is_free(Instant::now()) {
            let outcome = client.execute(request).await;
            origin.learn(&outcome);
            return outcome;
        }
        let turn = origin.turn.lock().await;
        if origin.is_free(Instant::now()) {
            // The request before answered meanwhile: no need to wait more.
            drop(turn);
        }
        let outcome = client.execute(request).await;
        origin.learn(&outcome);
        outcome
    }

    /// The state of `url`'s origin, if it is HTTPS.
    fn origin(&self, url: &url::Url) -> Option<Arc<Origin>> {
        if url.scheme() != "https" {
            return None;
        }
        let key = format!(
            "{}:{}",
            url.host_str()?.to_ascii_lowercase(),
            url.port_or_known_default()?
        );
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(origin) = map.get(&key) {
            return Some(Arc::clone(origin));
        }
        let now = Instant::now();
        // Origins in use or with a fresh answer go last; forgetting one
        // costs at most a connection more on its next first contact.
        super::make_room(&mut map, MAX_ORIGINS, |_, origin| {
            Arc::strong_count(origin) > 1 || origin.is_free(now)
        });
        let origin = Arc::new(Origin::default());
        map.insert(key, Arc::clone(&origin));
        Some(origin)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_https_origins_are_tracked_and_the_memory_is_bounded() {
        let origins = Origins::default();
        let url = |text: &str| url::Url::parse(text).unwrap();
        assert!(origins.origin(&url("http://reg:5000/v2/")).is_none());
        let a = origins.origin(&url("https://Reg.example/v2/a")).unwrap();
        let b = origins
            .origin(&url("https://reg.example:443/v2/b"))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b), "same origin, same state");
        drop((a, b));
        for n in 1..MAX_ORIGINS {
            origins
                .origin(&url(&format!("https://r{n}.example/v2/")))
                .unwrap();
        }
        assert_eq!(origins.len(), MAX_ORIGINS);
        // Full of stale origins: they are forgotten for a new one.
        let fresh = origins.origin(&url("https://new.example/v2/")).unwrap();
        assert_eq!(origins.len(), 1);
        // Full of origins with a fresh answer: all are forgotten, so the
        // memory stays bounded.
        fresh.free_for(SHARED_FOR);
        for n in 1..MAX_ORIGINS {
            let origin = origins
                .origin(&url(&format!("https://f{n}.example/v2/")))
                .unwrap();
            origin.free_for(SHARED_FOR);
        }
        assert_eq!(origins.len(), MAX_ORIGINS);
        assert!(origins.origin(&url("https://late.example/v2/")).is_some());
        assert_eq!(origins.len(), 1);
    }
}
