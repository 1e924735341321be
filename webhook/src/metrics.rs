//! Prometheus metrics of the admission engine and the server: decisions by
//! result and rule, review latency, cache hits and misses, registry requests
//! and errors, policy and certificate reloads.
//!
//! One [`Metrics`] per process, shared by `Arc`; [`Metrics::encode`] renders
//! the text exposition format for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use imgate_core::registry::RegistryClient;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: from a cache hit (~1 ms) to the 10 s API
/// server timeout, with a bucket at the default 8 s deadline.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 8.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    result: &'static str,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// All metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    review_latency: Family<EndpointLabels, Histogram>,
    reviews_in_flight: Gauge,
    invalid_reviews: Counter,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    verifications: Counter,
    registry_requests: Counter,
    registry_errors: Family<OperationLabels, Counter>,
    policy_reloads: Family<ResultLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    connections: Gauge,
    connections_shed: Counter,
    refused_connections: Family<ReasonLabels, Counter>,
    refused_requests: Family<ReasonLabels, Counter>,
    /// The client whose request counter feeds `registry_requests` (read at encode time).
    tracked_client: Mutex<Option<RegistryClient>>,
    /// The client's count at the previous encode, so the counter only moves forward.
    requests_seen: AtomicU64,
}

impl Metrics {
    /// Creates and registers every metric (prefix `imgate_`).
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("imgate");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "admission_decisions",
            "Per-image admission decisions by result (allowed, denied, audit_denied, excluded) and rule",
            decisions.clone(),
        );
        let review_latency = Family::<EndpointLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "review_duration_seconds",
            "Time to answer one AdmissionReview, by endpoint",
            review_latency.clone(),
        );
        let reviews_in_flight = Gauge::default();
        registry.register(
            "reviews_in_flight",
            "AdmissionReviews being answered right now",
            reviews_in_flight.clone(),
        );
        let invalid_reviews = Counter::default();
        registry.register(
            "invalid_reviews",
            "Request bodies that were not a usable AdmissionReview",
            invalid_reviews.clone(),
        );
        let cache_hits = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_hits",
            "Cache hits by cache (verified, tag)",
            cache_hits.clone(),
        );
        let cache_misses = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_misses",
            "Cache misses by cache (verified, tag)",
            cache_misses.clone(),
        );
        let verifications = Counter::default();
        registry.register(
            "signature_verifications",
            "Signature verifications that went to the registry",
            verifications.clone(),
        );
        let registry_requests = Counter::default();
        registry.register(
            "registry_requests",
            "HTTP requests sent to registries",
            registry_requests.clone(),
        );
        let registry_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "registry_errors",
            "Registry failures (unreachable, timeout, protocol) by operation (resolve, verify, deadline)",
            registry_errors.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads by result (success, failure)",
            policy_reloads.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "TLS certificate reloads by result (success, failure)",
            tls_reloads.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "admission_connections",
            "Open connections on the admission port",
            connections.clone(),
        );
        let connections_shed = Counter::default();
        registry.register(
            "admission_connections_shed",
            "Admission connections that never completed a request, closed to admit a new one at a connection bound",
            connections_shed.clone(),
        );
        let refused_connections = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admission_connections_refused",
            "Admission connections closed before any request by reason (source_connections, source_handshakes, client_certificate)",
            refused_connections.clone(),
        );
        let refused_requests = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refused_requests",
            "Admission requests refused before review by reason (body_timeout, body_too_slow, body_budget, body_too_large)",
            refused_requests.clone(),
        );
        Arc::new(Metrics {
            registry,
            connections,
            connections_shed,
            refused_connections,
            refused_requests,
            decisions,
            review_latency,
            reviews_in_flight,
            invalid_reviews,
            cache_hits,
            cache_misses,
            verifications,
            registry_requests,
            registry_errors,
            policy_reloads,
            tls_reloads,
            tracked_client: Mutex::new(None),
            requests_seen: AtomicU64::new(0),
        })
    }

    /// An admission connection opened (`+1`) or closed (`-1`).
    pub fn connections_changed(&self, by: i64) {
        self.connections.inc_by(by);
    }

    /// An idle admission connection was closed to make room.
    pub fn connection_shed(&self) {
        self.connections_shed.inc();
    }

    /// An admission connection closed before any request:
    /// `source_connections`, `source_handshakes` or `client_certificate`.
    pub fn refused_connection(&self, reason: &'static str) {
        self.refused_connections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A request refused before review: `body_timeout`, `body_too_slow`,
    /// `body_budget` or `body_too_large`.
    pub fn refused(&self, reason: &'static str) {
        self.refused_requests
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Renders every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        self.sync_registry_requests();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one per-image decision. `result`: `allowed`, `denied`,
    /// `audit_denied` or `excluded`; `rule` empty when no rule applied.
    pub fn decision(&self, result: &'static str, rule: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                result,
                rule: rule.to_string(),
            })
            .inc();
    }

    /// How many decisions were counted with this result and rule (for tests).
    pub fn decision_count(&self, result: &'static str, rule: &str) -> u64 {
        self.decisions
            .get_or_create(&DecisionLabels {
                result,
                rule: rule.to_string(),
            })
            .get()
    }

    /// Records the time one review took on `endpoint` (`mutate`, `validate`).
    pub fn observe_review(&self, endpoint: &'static str, seconds: f64) {
        self.review_latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
    }

    /// A review started (the server calls [`Metrics::review_finished`] after).
    pub fn review_started(&self) {
        self.reviews_in_flight.inc();
    }

    /// A review finished.
    pub fn review_finished(&self) {
        self.reviews_in_flight.dec();
    }

    /// A request body was not a usable review.
    pub fn invalid_review(&self) {
        self.invalid_reviews.inc();
    }

    /// A cache (`verified`, `tag`) answered from memory.
    pub fn cache_hit(&self, cache: &'static str) {
        self.cache_hits.get_or_create(&CacheLabels { cache }).inc();
    }

    /// A cache (`verified`, `tag`) had to go to the registry.
    pub fn cache_miss(&self, cache: &'static str) {
        self.cache_misses
            .get_or_create(&CacheLabels { cache })
            .inc();
    }

    /// One signature verification went to the registry.
    pub fn verification(&self) {
        self.verifications.inc();
    }

    /// Verifications so far (for tests).
    pub fn verification_count(&self) -> u64 {
        self.verifications.get()
    }

    /// A registry operation (`resolve`, `verify`, `deadline`) failed.
    pub fn registry_error(&self, operation: &'static str) {
        self.registry_errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// Feeds `imgate_registry_requests_total` from this client's request
    /// counter (and its clones'), read whenever metrics are encoded.
    pub fn track_client(&self, client: &RegistryClient) {
        if let Ok(mut tracked) = self.tracked_client.lock() {
            self.requests_seen
                .store(client.request_count(), Ordering::SeqCst);
            *tracked = Some(client.clone());
        }
    }

    fn sync_registry_requests(&self) {
        let Ok(tracked) = self.tracked_client.lock() else {
            return;
        };
        if let Some(client) = tracked.as_ref() {
            let now = client.request_count();
            let before = self.requests_seen.swap(now, Ordering::SeqCst);
            if now > before {
                self.registry_requests.inc_by(now - before);
            }
        }
    }

    /// A policy reload succeeded or failed (the old policy keeps serving).
    pub fn policy_reload(&self, ok: bool) {
        self.policy_reloads.get_or_create(&result_label(ok)).inc();
    }

    /// A TLS certificate reload succeeded or failed (the old one keeps serving).
    pub fn tls_reload(&self, ok: bool) {
        self.tls_reloads.get_or_create(&result_label(ok)).inc();
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn result_label(ok: bool) -> ResultLabels {
    ResultLabels {
        result: if ok { "success" } else { "failure" },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_was_counted() {
        let metrics = Metrics::new();
        metrics.decision("denied", "ours");
        metrics.decision("denied", "ours");
        metrics.observe_review("mutate", 0.003);
        metrics.cache_hit("verified");
        metrics.policy_reload(false);
        metrics.tls_reload(true);
        let text = metrics.encode();
        assert!(
            text.contains(r#"imgate_admission_decisions_total{result="denied",rule="ours"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"imgate_review_duration_seconds_count{endpoint="mutate"} 1"#));
        assert!(text.contains(r#"imgate_cache_hits_total{cache="verified"} 1"#));
        assert!(text.contains(r#"imgate_policy_reloads_total{result="failure"} 1"#));
        assert!(text.contains(r#"imgate_tls_reloads_total{result="success"} 1"#));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(metrics.decision_count("denied", "ours"), 2);
    }
}
