//! The admission engine: one object in, a decision out. Shared by the webhook
//! (`/mutate`, `/validate`), `imgate admit` and `imgate verify --policy`, so
//! CI and the cluster apply exactly the same logic through one door,
//! [`Engine::decide`], which takes an [`Admission`]: what is being decided.
//!
//! For every image of a pod-running object (every field of core's
//! `workload::IMAGE_FIELDS`: containers of each kind and image volumes):
//! parse it, deny an untrusted registry before any network call, find the
//! first matching rule, resolve the tag to a digest (a digest in the
//! reference always wins, so `repo:signedtag@sha256:<other>` is judged by
//! `<other>`), verify the signature of that digest, then either patch the
//! image to `repo:tag@digest` (mutate) or insist it already is (validate).
//! Registry work runs under one deadline per review, counted from the
//! request's arrival, and so does every credential lookup; when the
//! registry is slow or down the policy's `onRegistryError` decides, in time.
//!
//! A rule's in-toto attestations are collected with its signatures (one
//! registry pass, cached with the verdict); their CEL conditions are
//! evaluated on every review, never cached.
//!
//! Answers learnt from a registry are cached per credential: a tenant
//! without access to a private image never gets another tenant's answer
//! about it.
//!
//! Audit mode never changes objects: it allows, and says in `warnings` what
//! it would have denied and which digest it would have pinned.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use imgate_core::attestation::Evidence;
use imgate_core::digest::Digest;
use imgate_core::policy::Policy;
use imgate_core::registry::RegistryClient;
use imgate_core::signature::Verdict;
use imgate_core::workload::{self, PodImage};

use crate::cache::{FlightCache, FlightLimits};
use crate::metrics::Metrics;
use crate::pullsecrets::PodPullSecrets;
use access::{Access, CredentialId};
use report::count;

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

/// Default bound on registry computations that read attestations running
/// at once: each may hold up to the policy's `limits.attestations.maxTotalBytes`
/// (32 MiB by default) while it reads, so this bounds that memory too.
pub const DEFAULT_ATTESTATION_CONCURRENCY: usize = 4;
/// Bound on the attestation evidence the verdict cache keeps alive, in
/// bytes (statements and their CEL values): large SBOMs are cached while
/// they fit and read again when they do not.
pub const MAX_CACHED_EVIDENCE_BYTES: usize = 64 << 20;

/// Tag → digest, per credential: `(credential, reference)`.
type TagKey = (Option<CredentialId>, String);
/// Verified digests, per credential: `(credential, repository, digest, rule fingerprint)`.
type VerdictKey = (Option<CredentialId>, String, Digest, String);

/// What the registry said about a digest under a rule: the signature
/// verdict (when the rule wants a signature) and the evidence of its
/// attestations (when it wants attestations). Conditions over the evidence
/// are never part of it: they are evaluated on every review, so a reloaded
/// policy or a condition on time applies at once.
#[derive(Clone)]
pub(super) struct Checked {
    verdict: Option<Verdict>,
    evidence: Option<Arc<Evidence>>,
}

impl Checked {
    fn weight(&self) -> usize {
        self.evidence.as_ref().map_or(0, |e| e.retained_bytes())
    }
}

struct Caches {
    max_entries: usize,
    verified: FlightCache<VerdictKey, Checked, CheckError>,
    tags: FlightCache<TagKey, Digest, CheckError>,
}

impl Caches {
    fn new(max_entries: usize, limits: FlightLimits) -> Caches {
        Caches {
            max_entries,
            verified: FlightCache::new(max_entries)
                .with_limits(limits)
                .with_weight(Checked::weight, MAX_CACHED_EVIDENCE_BYTES),
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

/// The engine. Cheap to share behind an `Arc`. Built once by
/// [`EngineBuilder`] with everything it talks to; afterwards only the
/// policy changes (hot reload, [`Engine::replace_policy`]).
pub struct Engine {
    policy: RwLock<Arc<Policy>>,
    client: RegistryClient,
    deadline: Duration,
    metrics: Arc<Metrics>,
    backend: Arc<dyn Backend>,
    namespace_labels: Option<Arc<dyn NamespaceLabels>>,
    pull_secrets: Option<Arc<dyn PullSecrets>>,
    caches: RwLock<Arc<Caches>>,
    flight_limits: FlightLimits,
    /// Slots for registry computations, process-wide.
    registry_slots: Arc<tokio::sync::Semaphore>,
    /// Slots for those that read attestations, process-wide.
    attestation_slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy().source_name().to_string())
            .field("deadline", &self.deadline)
            .field("namespace_labels", &self.namespace_labels.is_some())
            .field("pull_secrets", &self.pull_secrets.is_some())
            .finish()
    }
}

/// Builds an [`Engine`]: the policy and the registry client are required,
/// every port has a default (the real registry backend, no namespace labels,
/// no pull secrets).
pub struct EngineBuilder {
    policy: Policy,
    client: RegistryClient,
    deadline: Duration,
    metrics: Option<Arc<Metrics>>,
    backend: Arc<dyn Backend>,
    namespace_labels: Option<Arc<dyn NamespaceLabels>>,
    pull_secrets: Option<Arc<dyn PullSecrets>>,
    registry_concurrency: usize,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("deadline", &self.deadline)
            .field("registry_concurrency", &self.registry_concurrency)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// The budget for one review's registry work (default [`DEFAULT_DEADLINE`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Where to count (default: fresh metrics).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Another registry backend (tests, benchmarks).
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = backend;
        self
    }

    /// Where to read namespace labels for `namespaces.excludeSelector`.
    pub fn namespace_labels(mut self, source: Arc<dyn NamespaceLabels>) -> Self {
        self.namespace_labels = Some(source);
        self
    }

    /// Where to read pods' pull secrets (`--kube-pull-secrets`).
    pub fn pull_secrets(mut self, source: Arc<dyn PullSecrets>) -> Self {
        self.pull_secrets = Some(source);
        self
    }

    /// Bounds registry computations running at once to `slots` (at least
    /// one); the default is [`DEFAULT_REGISTRY_CONCURRENCY`]. Waiting for a
    /// slot counts against the review's deadline.
    pub fn registry_concurrency(mut self, slots: usize) -> Self {
        self.registry_concurrency = slots.max(1);
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        let metrics = self.metrics.unwrap_or_else(Metrics::new);
        metrics.track_client(&self.client);
        let limits = flight_limits(self.deadline, self.client.config().request_timeout);
        Engine {
            caches: RwLock::new(Arc::new(Caches::new(self.policy.cache.max_entries, limits))),
            flight_limits: limits,
            policy: RwLock::new(Arc::new(self.policy)),
            client: self.client,
            deadline: self.deadline,
            metrics,
            backend: self.backend,
            namespace_labels: self.namespace_labels,
            pull_secrets: self.pull_secrets,
            registry_slots: Arc::new(tokio::sync::Semaphore::new(self.registry_concurrency)),
            attestation_slots: Arc::new(tokio::sync::Semaphore::new(
                DEFAULT_ATTESTATION_CONCURRENCY,
            )),
        }
    }
}

/// Everything one object's check needs.
#[derive(Clone)]
struct ObjectCheck {
    policy: Arc<Policy>,
    endpoint: Endpoint,
    caches: Arc<Caches>,
    deadline_at: tokio::time::Instant,
    /// Which credential each registry call uses.
    access: Access,
}

impl Engine {
    /// Starts building an engine for `policy` over `client` (the policy's
    /// registry settings already merged into the client's configuration).
    pub fn builder(policy: Policy, client: RegistryClient) -> EngineBuilder {
        EngineBuilder {
            policy,
            client,
            deadline: DEFAULT_DEADLINE,
            metrics: None,
            backend: Arc::new(RegistryBackend),
            namespace_labels: None,
            pull_secrets: None,
            registry_concurrency: DEFAULT_REGISTRY_CONCURRENCY,
        }
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

    /// The review budget.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn caches(&self) -> Arc<Caches> {
        match self.caches.read() {
            Ok(caches) => Arc::clone(&caches),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Decides on `admission`: the one way in, for the webhook's reviews and
    /// for `imgate admit` and `verify --policy`. Counts the decision (unless
    /// it is a dry run). `Err` is a request the engine cannot use (answered
    /// `invalid`); a malformed object is a denial naming what is wrong.
    pub async fn decide(&self, admission: &Admission<'_>) -> Result<ObjectDecision, String> {
        self.decide_under(&self.policy(), admission).await
    }

    /// [`Engine::decide`] under `policy` (the reviewer answers with the
    /// same policy it decided under, even if a reload lands meanwhile).
    async fn decide_under(
        &self,
        policy: &Arc<Policy>,
        admission: &Admission<'_>,
    ) -> Result<ObjectDecision, String> {
        let decision = self.decide_object(policy, admission).await;
        if admission.counted {
            count(&self.metrics, policy, decision.as_ref().ok());
        }
        decision
    }

    async fn decide_object(
        &self,
        policy: &Arc<Policy>,
        admission: &Admission<'_>,
    ) -> Result<ObjectDecision, String> {
        if let Some(why) = admission.skipped() {
            return Ok(ObjectDecision::untouched(why));
        }
        let Some(object) = admission.object else {
            return Err(format!("{} request has no object", admission.operation));
        };
        let deadline_at = tokio::time::Instant::from_std(admission.arrived + self.deadline);
        let namespace = admission.namespace;
        if self
            .namespace_excluded(policy, namespace, deadline_at)
            .await
        {
            return Ok(ObjectDecision::untouched(format!(
                "namespace {namespace} is excluded"
            )));
        }
        let Some(kind) = workload::workload(admission.group, admission.kind) else {
            return Ok(ObjectDecision::untouched(format!(
                "kind {} runs no pods",
                admission.kind
            )));
        };
        let images = match workload::pod_images(object, kind, admission.only_ephemeral()) {
            Ok(images) => images,
            Err(err) => return Ok(malformed(policy, admission.kind, &err.to_string())),
        };
        let mut notes = Vec::new();
        let pod = match (&self.pull_secrets, object.pointer(&kind.pointer())) {
            (Some(source), Some(spec)) => {
                let (pod, warnings) = PodPullSecrets::from_pod_spec(namespace, spec);
                notes = warnings;
                pod.map(|pod| (Arc::clone(source), pod))
            }
            _ => None,
        };
        let check = ObjectCheck {
            policy: Arc::clone(policy),
            endpoint: admission.endpoint,
            caches: self.caches(),
            deadline_at,
            access: Access::new(self.client.clone(), pod),
        };
        let images = admission.changed(images);
        let mut decision = self.decide_images(&check, &images).await;
        decision.warnings.extend(notes);
        Ok(decision)
    }

    async fn namespace_excluded(
        &self,
        policy: &Policy,
        namespace: &str,
        deadline_at: tokio::time::Instant,
    ) -> bool {
        let no_labels = BTreeMap::new();
        if policy.namespace_excluded(namespace, &no_labels) {
            return true;
        }
        if namespace.is_empty() || !policy.uses_namespace_labels() {
            return false;
        }
        let Some(provider) = &self.namespace_labels else {
            return false;
        };
        match tokio::time::timeout_at(deadline_at, provider.labels(namespace)).await {
            Ok(Some(labels)) => policy.namespace_excluded(namespace, &labels),
            // Unknown labels: check the object rather than wave it through.
            _ => {
                tracing::warn!(namespace, "cannot read namespace labels; not excluding it");
                false
            }
        }
    }
}

/// The decision on an object whose shape hides its images: denied (in
/// audit mode, reported), never skipped.
fn malformed(policy: &Policy, kind: &str, what: &str) -> ObjectDecision {
    let reason = format!("{kind} is malformed: {what}; its images cannot be checked");
    report::object_denial(policy, reason)
}

mod access;
mod backend;
mod decision;
mod image;
mod ports;
mod report;
mod request;

pub use backend::{CheckError, RegistryBackend};
pub use decision::{Endpoint, ImageDecision, ObjectDecision, PatchOp};
pub use ports::{Backend, NamespaceLabels, PullSecrets};
pub use report::answer_review;
pub use request::{Admission, Operation};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
