//! The admission engine: one object in, a decision out. Shared by the webhook
//! (`/mutate`, `/validate`) and `imgate admit`, so CI and the cluster apply
//! exactly the same logic.
//!
//! For every image of a pod-running object: parse it, deny an untrusted
//! registry before any network call, find the first matching rule, resolve
//! the tag to a digest (a digest in the reference always wins, so
//! `repo:signedtag@sha256:<other>` is judged by `<other>`), verify the
//! signature of that digest, then either patch the image to
//! `repo:tag@digest` (mutate) or insist it already is (validate). Registry
//! work runs under one deadline per review, counted from the request's
//! arrival, and so does every credential lookup; when the registry is slow
//! or down the policy's `onRegistryError` decides, in time.
//!
//! Audit mode never changes objects: it allows, and says in `warnings` what
//! it would have denied and which digest it would have pinned.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use imgate_core::digest::Digest;
use imgate_core::policy::{HumanDuration, Mode, PinScope, Policy};
use imgate_core::reference::ImageRef;
use imgate_core::registry::{Credentials, RegistryClient};
use imgate_core::signature::Verdict;
use serde_json::Value;

use crate::cache::{FlightCache, FlightLimits, Lookup};
use crate::images::{self, ImageSite, PodCarrier};
use crate::metrics::Metrics;
use crate::pullsecrets::PodPullSecrets;
use crate::review::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use report::{assemble, count, log_decision, registry_failure, to_response, too_many_images};

/// Audit annotation listing what audit mode would have denied. The API
/// server prefixes it with the webhook's name (`<webhook name>/would-deny`,
/// e.g. `mutate.imgate.dev/would-deny`) and refuses keys that already carry
/// a prefix, so this one has none.
pub const WOULD_DENY_ANNOTATION: &str = "would-deny";
/// Default review budget: under the API server's 10 s webhook timeout.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(8);
/// Default bound on registry computations (tag resolutions and signature
/// verifications) running at once, across every review of the process: a
/// burst of objects costs queueing, not thousands of sockets.
pub const DEFAULT_REGISTRY_CONCURRENCY: usize = 32;

/// How the engine reaches registries and reports.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The registry client (policy registry settings already merged in).
    pub client: RegistryClient,
    /// Budget for one review's registry work.
    pub deadline: Duration,
    /// Where to count.
    pub metrics: Arc<Metrics>,
}

impl EngineOptions {
    /// Defaults: 8 s deadline, fresh metrics.
    pub fn new(client: RegistryClient) -> EngineOptions {
        EngineOptions {
            client,
            deadline: DEFAULT_DEADLINE,
            metrics: Metrics::new(),
        }
    }
}

type VerdictKey = (String, Digest, String);

struct Caches {
    max_entries: usize,
    verified: FlightCache<VerdictKey, Verdict, CheckError>,
    tags: FlightCache<String, Digest, CheckError>,
}

impl Caches {
    fn new(max_entries: usize, limits: FlightLimits) -> Caches {
        Caches {
            max_entries,
            verified: FlightCache::new(max_entries).with_limits(limits),
            tags: FlightCache::new(max_entries).with_limits(limits),
        }
    }
}

/// How long shared registry work may run and when a waiting review gives
/// up on it: it never outlives one review's budget, and one in flight for
/// longer than a quarter of the budget (or of the client's request
/// timeout, if shorter) is presumed hung, so a review arriving then tries
/// afresh and sees a recovered registry at once.
fn flight_limits(deadline: Duration, request_timeout: Duration) -> FlightLimits {
    FlightLimits {
        run_for: deadline,
        stale_after: deadline.min(request_timeout) / 4,
    }
}

/// The engine. Cheap to share behind an `Arc`; the policy can be swapped
/// while reviews run.
pub struct Engine {
    policy: RwLock<Arc<Policy>>,
    client: RegistryClient,
    deadline: Duration,
    metrics: Arc<Metrics>,
    backend: Arc<dyn Backend>,
    caches: RwLock<Arc<Caches>>,
    flight_limits: FlightLimits,
    namespace_labels: RwLock<Option<Arc<dyn NamespaceLabels>>>,
    pull_secrets: RwLock<Option<Arc<dyn PullSecrets>>>,
    /// Slots for registry computations, process-wide.
    registry_slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy().source_name().to_string())
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Everything one object's check needs.
#[derive(Clone)]
struct Ctx {
    policy: Arc<Policy>,
    endpoint: Endpoint,
    client: RegistryClient,
    caches: Arc<Caches>,
    deadline_at: tokio::time::Instant,
    /// Where the pod's pull secrets are read, and which.
    pull: Option<(Arc<dyn PullSecrets>, Arc<PodPullSecrets>)>,
}

impl Ctx {
    /// The client for a registry call to `registry`, with the pod's pull
    /// secret for it when there is one. Called inside the registry work, so
    /// a cache hit reads no secret at all.
    fn client_for(&self, registry: &str) -> BoxFuture<'static, RegistryClient> {
        let client = self.client.clone();
        let Some((source, pod)) = self.pull.clone() else {
            return futures::future::ready(client).boxed();
        };
        let registry = registry.to_string();
        async move {
            match source.credentials(&pod, &registry).await {
                Some(creds) => client.with_credentials([(registry, creds)].into()),
                None => client,
            }
        }
        .boxed()
    }
}

impl Engine {
    /// An engine talking to real registries.
    pub fn new(policy: Policy, opts: EngineOptions) -> Engine {
        Self::with_backend(policy, opts, Arc::new(RegistryBackend))
    }

    /// An engine with another backend (tests, benchmarks).
    pub fn with_backend(policy: Policy, opts: EngineOptions, backend: Arc<dyn Backend>) -> Engine {
        opts.metrics.track_client(&opts.client);
        let limits = flight_limits(opts.deadline, opts.client.config().request_timeout);
        Engine {
            caches: RwLock::new(Arc::new(Caches::new(policy.cache.max_entries, limits))),
            flight_limits: limits,
            policy: RwLock::new(Arc::new(policy)),
            client: opts.client,
            deadline: opts.deadline,
            metrics: opts.metrics,
            backend,
            namespace_labels: RwLock::new(None),
            pull_secrets: RwLock::new(None),
            registry_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_REGISTRY_CONCURRENCY)),
        }
    }

    /// Bounds registry computations running at once to `slots` (at least
    /// one); the default is [`DEFAULT_REGISTRY_CONCURRENCY`]. Waiting for a
    /// slot counts against the review's deadline.
    pub fn with_registry_concurrency(mut self, slots: usize) -> Engine {
        self.registry_slots = Arc::new(tokio::sync::Semaphore::new(slots.max(1)));
        self
    }

    /// Swaps the policy (hot reload). Cached verdicts are keyed by rule
    /// fingerprint, so none reached under an old rule is reused by a changed one.
    pub fn replace_policy(&self, policy: Policy) {
        let max_entries = policy.cache.max_entries;
        if let Ok(mut current) = self.policy.write() {
            *current = Arc::new(policy);
        }
        if let Ok(mut caches) = self.caches.write() {
            if caches.max_entries != max_entries {
                *caches = Arc::new(Caches::new(max_entries, self.flight_limits));
            }
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(policy) => Arc::clone(&policy),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The metrics this engine counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where to read namespace labels for `namespaces.excludeSelector`.
    pub fn set_namespace_labels(&self, provider: Arc<dyn NamespaceLabels>) {
        if let Ok(mut current) = self.namespace_labels.write() {
            *current = Some(provider);
        }
    }

    /// Where to read pods' pull secrets (`--kube-pull-secrets`).
    pub fn set_pull_secrets(&self, source: Arc<dyn PullSecrets>) {
        if let Ok(mut current) = self.pull_secrets.write() {
            *current = Some(source);
        }
    }

    fn caches(&self) -> Arc<Caches> {
        match self.caches.read() {
            Ok(caches) => Arc::clone(&caches),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn context(&self, endpoint: Endpoint, client: RegistryClient, arrived: Instant) -> Ctx {
        Ctx {
            policy: self.policy(),
            endpoint,
            client,
            caches: self.caches(),
            deadline_at: tokio::time::Instant::from_std(arrived + self.deadline),
            pull: None,
        }
    }

    /// Answers a review that arrives now, with static `credentials` on top
    /// of the client's (tests, `imgate admit`-like callers).
    pub async fn review(
        &self,
        review: AdmissionReview,
        endpoint: Endpoint,
        credentials: BTreeMap<String, Credentials>,
    ) -> AdmissionReview {
        self.answer(review, endpoint, Instant::now(), credentials)
            .await
    }

    /// Answers a review that `arrived` at the server: the deadline counts
    /// from then, so time spent reading the body is not granted twice.
    /// Pull secrets come from [`Engine::set_pull_secrets`], read lazily.
    /// The response review echoes the uid, always. Policy denials are
    /// `allowed: false` with a 403 status; a request the engine cannot use
    /// is `invalid` (400).
    pub async fn review_at(
        &self,
        review: AdmissionReview,
        endpoint: Endpoint,
        arrived: Instant,
    ) -> AdmissionReview {
        self.answer(review, endpoint, arrived, BTreeMap::new())
            .await
    }

    async fn answer(
        &self,
        review: AdmissionReview,
        endpoint: Endpoint,
        arrived: Instant,
        credentials: BTreeMap<String, Credentials>,
    ) -> AdmissionReview {
        let started = arrived;
        let Some(request) = review.request else {
            return AdmissionResponse::invalid("", "admission review has no request").into_review();
        };
        let client = if credentials.is_empty() {
            self.client.clone()
        } else {
            self.client.with_credentials(credentials)
        };
        let ctx = self.context(endpoint, client, arrived);
        let decision = self.decide_request(&ctx, &request).await;
        let response = match &decision {
            Err(message) => AdmissionResponse::invalid(&request.uid, message.clone()),
            Ok(decision) => to_response(&request.uid, &ctx.policy, decision),
        };
        let latency = started.elapsed();
        if request.dry_run != Some(true) {
            count(&self.metrics, &ctx.policy, decision.as_ref().ok());
        }
        self.metrics
            .observe_review(endpoint.as_str(), latency.as_secs_f64());
        log_decision(&request, &response, decision.as_ref().ok(), latency);
        response.into_review()
    }

    async fn decide_request(
        &self,
        ctx: &Ctx,
        request: &AdmissionRequest,
    ) -> Result<ObjectDecision, String> {
        if matches!(request.operation.as_str(), "DELETE" | "CONNECT") {
            return Ok(ObjectDecision::untouched(format!(
                "{} runs no image",
                request.operation
            )));
        }
        let only_ephemeral = match request.sub_resource.as_deref() {
            None | Some("") => false,
            Some("ephemeralcontainers") => true,
            Some(other) => {
                return Ok(ObjectDecision::untouched(format!(
                    "subresource {other} runs no image"
                )))
            }
        };
        let Some(object) = &request.object else {
            return Err(format!("{} request has no object", request.operation));
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        if self.namespace_excluded(ctx, &namespace).await {
            return Ok(ObjectDecision::untouched(format!(
                "namespace {namespace} is excluded"
            )));
        }
        let group = request.kind.group.as_str();
        let kind = request.kind.kind.as_str();
        let mut ctx = ctx.clone();
        let mut notes = Vec::new();
        let sites = if kind == "EphemeralContainers" {
            images::legacy_ephemeral_sites(object)
        } else {
            match images::pod_spec_pointer(group, kind) {
                Some((pointer, carrier)) => {
                    if let Some(spec) = object.pointer(pointer) {
                        notes = self.attach_pull_secrets(&mut ctx, &namespace, spec);
                    }
                    images::image_sites(object, pointer, carrier, only_ephemeral)
                }
                None => {
                    return Ok(ObjectDecision::untouched(format!(
                        "kind {kind} runs no pods"
                    )))
                }
            }
        };
        // On UPDATE, an image the object already had was judged when it was
        // set; judging it again would block unrelated edits (labels, scale)
        // of objects admitted under an older policy, and patching it would
        // restart a running container. Only new or changed images count.
        let sites = match (&request.old_object, request.operation.as_str()) {
            (Some(old), "UPDATE") => sites
                .into_iter()
                .filter(|site| {
                    site.image.is_none()
                        || old.pointer(&site.pointer).and_then(Value::as_str)
                            != site.image.as_deref()
                })
                .collect(),
            _ => sites,
        };
        let mut decision = self.decide_sites(&ctx, &sites).await;
        decision.warnings.extend(notes);
        Ok(decision)
    }

    /// Lets `ctx` read the pull secrets of the pod spec `spec` in
    /// `namespace`, when a source is configured; returns warnings about
    /// references that are skipped.
    fn attach_pull_secrets(&self, ctx: &mut Ctx, namespace: &str, spec: &Value) -> Vec<String> {
        let source = self.pull_secrets.read().ok().and_then(|p| p.clone());
        let Some(source) = source else {
            return Vec::new();
        };
        let (pod, warnings) = PodPullSecrets::from_pod_spec(namespace, spec);
        if let Some(pod) = pod {
            ctx.pull = Some((source, Arc::new(pod)));
        }
        warnings
    }

    async fn namespace_excluded(&self, ctx: &Ctx, namespace: &str) -> bool {
        let no_labels = BTreeMap::new();
        if ctx.policy.namespace_excluded(namespace, &no_labels) {
            return true;
        }
        if namespace.is_empty() || !ctx.policy.uses_namespace_labels() {
            return false;
        }
        let provider = self.namespace_labels.read().ok().and_then(|p| p.clone());
        let Some(provider) = provider else {
            return false;
        };
        match tokio::time::timeout_at(ctx.deadline_at, provider.labels(namespace)).await {
            Ok(Some(labels)) => ctx.policy.namespace_excluded(namespace, &labels),
            // Unknown labels: check the object rather than wave it through.
            _ => {
                tracing::warn!(namespace, "cannot read namespace labels; not excluding it");
                false
            }
        }
    }

    /// For `imgate admit`: one object of any kind, created in `namespace`
    /// (its own `metadata.namespace` wins), offline from the cluster.
    pub async fn admit_object(
        &self,
        object: &Value,
        namespace: &str,
        endpoint: Endpoint,
    ) -> ObjectDecision {
        let ctx = self.context(endpoint, self.client.clone(), Instant::now());
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(namespace);
        if ctx.policy.namespace_excluded(namespace, &BTreeMap::new()) {
            return ObjectDecision::untouched(format!("namespace {namespace} is excluded"));
        }
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let sites = match images::pod_spec_pointer(images::group_of(api_version), kind) {
            Some((pointer, carrier)) => images::image_sites(object, pointer, carrier, false),
            None => return ObjectDecision::untouched(format!("kind {kind} runs no pods")),
        };
        let decision = self.decide_sites(&ctx, &sites).await;
        count(&self.metrics, &ctx.policy, Some(&decision));
        decision
    }
}

mod backend;
mod decision;
mod image;
mod report;

pub use crate::kube::NamespaceLabels;
pub use crate::pullsecrets::PullSecrets;
pub use backend::{Backend, CheckError, RegistryBackend};
pub use decision::{Endpoint, ImageDecision, ObjectDecision, PatchOp};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
