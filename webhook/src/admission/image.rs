//! One image field checked: trusted registry, matching rule, the tag
//! resolved to a digest (tag cache), the digest's signatures verified and
//! its attestations collected (verdict cache), both per credential, single
//! flight, under the review's deadline and the process-wide bounds on
//! registry work; the rule's attestation conditions evaluated afresh; then
//! the patch that pins it or the reason it is denied.

use std::future::Future;
use std::hash::Hash;

use imgate_core::attestation::cel::Now;
use imgate_core::policy::{HumanDuration, Mode, PinScope, Rule};
use imgate_core::reference::ImageRef;
use imgate_core::workload::PodCarrier;

use super::report::{assemble, registry_failure, too_many_images};
use super::*;
use crate::cache::Lookup;

/// The metric labels of one cache: its name, and the registry operation it
/// stands for when the registry fails.
struct CacheLabels {
    cache: &'static str,
    operation: &'static str,
    /// What was being done, should the computation be lost.
    doing: &'static str,
}

const TAGS: CacheLabels = CacheLabels {
    cache: "tag",
    operation: "resolve",
    doing: "resolving the tag",
};
const VERIFIED: CacheLabels = CacheLabels {
    cache: "verified",
    operation: "verify",
    doing: "verifying",
};

impl Engine {
    pub(super) async fn decide_images(
        &self,
        check: &ObjectCheck,
        images: &[PodImage],
    ) -> ObjectDecision {
        let distinct: std::collections::BTreeSet<&str> =
            images.iter().filter_map(|i| i.image.as_deref()).collect();
        if distinct.len() > check.policy.limits.max_images_per_object {
            // Before any registry call: each image costs requests, memory
            // and sockets, and the object, not imgate, chose how many.
            return too_many_images(&check.policy, distinct.len());
        }
        let decisions =
            futures::future::join_all(images.iter().map(|image| self.check_image(check, image)))
                .await;
        assemble(&check.policy, check.endpoint, decisions)
    }

    /// The verdict on one image field.
    async fn check_image(&self, check: &ObjectCheck, site: &PodImage) -> ImageDecision {
        let policy = &check.policy;
        let who = site.describe();
        let mut decision = ImageDecision {
            pointer: site.pointer.clone(),
            site: who.clone(),
            image: site.image.clone(),
            rule: None,
            digest: None,
            allowed: false,
            verified: false,
            reason: None,
            pinned: None,
            registry_error: false,
        };
        let Some(written) = &site.image else {
            decision.reason = Some(format!("{who}: has no image"));
            return decision;
        };
        let image = match ImageRef::parse(written) {
            Ok(image) => image,
            Err(err) => {
                decision.reason = Some(format!(
                    "{who}: image {written:?} is not a valid reference: {err}"
                ));
                return decision;
            }
        };
        // Before any network call: an untrusted registry costs nothing to deny.
        if !policy.is_trusted(&image) {
            let trusted: Vec<&str> = policy
                .trusted_registries
                .iter()
                .map(|p| p.as_str())
                .collect();
            decision.reason = Some(format!(
                "{who}: image {written:?}: {} is not in trustedRegistries ({})",
                image.name(),
                trusted.join(", ")
            ));
            return decision;
        }
        let Some(rule) = policy.rule_for(&image) else {
            decision.reason = Some(format!("{who}: image {written:?}: no rule matches it"));
            return decision;
        };
        decision.rule = Some(rule.name.clone());
        let in_pin_scope = match policy.pin_digests {
            PinScope::Pods => site.carrier == PodCarrier::Pod,
            PinScope::All => true,
            PinScope::None => false,
        };
        let needs_digest = rule.requires_signature()
            || !rule.attestations().is_empty()
            || (in_pin_scope && image.digest.is_none());
        if !needs_digest {
            // Nothing to verify and nothing to pin: no registry call at all.
            decision.digest = image.digest.clone();
            decision.allowed = true;
            return decision;
        }
        let checked = self.digest_and_verdict(check, rule, &image).await;
        let (digest, checked) = match checked {
            Ok(checked) => checked,
            Err(err) => return registry_failure(decision, policy, &who, written, &rule.name, err),
        };
        decision.digest = Some(digest.clone());
        let deny = |mut decision: ImageDecision, unmet: Vec<String>| {
            decision.reason = Some(format!(
                "{who}: image {written:?} ({digest}): rule {:?}: {}",
                rule.name,
                if unmet.is_empty() {
                    "not verified".to_string()
                } else {
                    unmet.join("; ")
                }
            ));
            decision
        };
        let checked = checked.unwrap_or(Checked {
            verdict: None,
            evidence: None,
        });
        match &checked.verdict {
            None => {}
            Some(Verdict::Verified(_)) => decision.verified = true,
            Some(Verdict::Denied { unmet, .. }) => {
                return deny(decision, unmet.iter().map(ToString::to_string).collect());
            }
        }
        // Conditions run on every review, against the (cached) evidence.
        if let Some(evidence) = &checked.evidence {
            let unmet = rule.attestations().evaluate(evidence, &Now::current());
            if !unmet.is_empty() {
                return deny(decision, unmet.iter().map(ToString::to_string).collect());
            }
        }
        decision.allowed = true;
        if in_pin_scope && image.digest.is_none() {
            match check.endpoint {
                Endpoint::Mutate => decision.pinned = Some(image.pinned(digest).to_string()),
                // Mutate pins what it admits; an unpinned image here was added
                // or changed after it (e.g. by a sidecar injector). Audit mode
                // pinned nothing, so there is nothing to hold it to.
                Endpoint::Validate if policy.mode == Mode::Enforce => {
                    decision.allowed = false;
                    decision.reason = Some(format!(
                        "{who}: image {written:?} is not pinned to a digest (pinDigests: {}); was it added or changed after the mutating webhook?",
                        pin_scope_name(policy.pin_digests)
                    ));
                }
                Endpoint::Validate => {}
            }
        }
        decision
    }

    /// The digest of `image` and, when `rule` requires a signature or
    /// attestations, what the registry says of them, all as the credential
    /// this object uses for the registry sees them.
    async fn digest_and_verdict(
        &self,
        check: &ObjectCheck,
        rule: &Rule,
        image: &ImageRef,
    ) -> Result<(Digest, Option<Checked>), CheckError> {
        // The pod's pull secrets are read (once per object) before any cache
        // is asked: the answer depends on who asks.
        let access = tokio::time::timeout_at(
            check.deadline_at,
            check.access.for_registry(&image.registry),
        );
        let Ok((client, credential)) = access.await else {
            self.metrics.registry_error("deadline");
            return Err(CheckError::Deadline(HumanDuration(self.deadline)));
        };
        let digest = match &image.digest {
            Some(digest) => digest.clone(),
            None => {
                let backend = Arc::clone(&self.backend);
                let (client, target) = (client.clone(), image.clone());
                let ttl = check.policy.cache.tag_ttl.get();
                let resolve = async move {
                    match backend.resolve(client, target).await {
                        Ok(digest) => Ok((digest, ttl)),
                        Err(err) => Err(CheckError::Resolve(Arc::new(err))),
                    }
                };
                let key = (credential, image.to_string());
                self.cached(check, &check.caches.tags, &TAGS, key, resolve)
                    .await?
            }
        };
        let attested = !rule.attestations().is_empty();
        if !rule.requires_signature() && !attested {
            return Ok((digest, None));
        }
        let subject = image.at_digest(digest.clone());
        let key = (
            credential,
            subject.name(),
            digest.clone(),
            rule.fingerprint().to_string(),
        );
        let backend = Arc::clone(&self.backend);
        let requirements = rule.requires_signature().then(|| rule.requirements());
        let wanted = attested.then(|| rule.attestations().wanted().clone());
        let metrics = Arc::clone(&self.metrics);
        let attestation_slots = Arc::clone(&self.attestation_slots);
        let (verified_ttl, denied_ttl) = (
            check.policy.cache.verified_ttl.get(),
            check.policy.cache.denied_ttl.get(),
        );
        let verify = async move {
            metrics.verification();
            let checked = match (wanted, requirements) {
                (Some(wanted), requirements) => {
                    let _reading = attestation_slots.acquire_owned().await;
                    let (verdict, evidence) = backend
                        .verify_attested(client, subject, requirements, wanted.clone())
                        .await
                        .map_err(|err| CheckError::Verify(Arc::new(err)))?;
                    // Evidence missing a wanted type is kept briefly, like a
                    // denial, so an attestation pushed after the image counts soon.
                    let complete = (0..wanted.attestations.len())
                        .all(|i| evidence.statements.iter().any(|s| s.accepted.contains(&i)));
                    (verdict, Some(Arc::new(evidence)), complete)
                }
                (None, Some(requirements)) => {
                    let verdict = backend
                        .verify(client, subject, requirements)
                        .await
                        .map_err(|err| CheckError::Verify(Arc::new(err)))?;
                    (Some(verdict), None, true)
                }
                (None, None) => (None, None, true),
            };
            let (verdict, evidence, complete) = checked;
            let verified = complete && verdict.as_ref().is_none_or(Verdict::is_verified);
            let ttl = if verified { verified_ttl } else { denied_ttl };
            Ok((Checked { verdict, evidence }, ttl))
        };
        let checked = self
            .cached(check, &check.caches.verified, &VERIFIED, key, verify)
            .await?;
        Ok((digest, Some(checked)))
    }

    /// `key` from `cache`, or computed once (single flight, in a registry
    /// slot) for every review waiting on it, within the review's deadline.
    async fn cached<K, V, Fut>(
        &self,
        check: &ObjectCheck,
        cache: &FlightCache<K, V, CheckError>,
        labels: &CacheLabels,
        key: K,
        compute: Fut,
    ) -> Result<V, CheckError>
    where
        K: Clone + Eq + Hash + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(V, Duration), CheckError>> + Send + 'static,
    {
        // A hit needs no computation, timer or slot: the warm path.
        if let Some(value) = cache.get(&key) {
            self.metrics.cache_hit(labels.cache);
            return Ok(value);
        }
        let slots = Arc::clone(&self.registry_slots);
        let compute = async move {
            let _slot = slots.acquire_owned().await;
            compute.await
        };
        let lookup = tokio::time::timeout_at(check.deadline_at, cache.get_or_compute(key, compute));
        match lookup.await {
            Err(_) => {
                self.metrics.registry_error("deadline");
                Err(CheckError::Deadline(HumanDuration(self.deadline)))
            }
            Ok(Lookup::Hit(value)) => {
                self.metrics.cache_hit(labels.cache);
                Ok(value)
            }
            Ok(Lookup::Fresh(value)) => {
                self.metrics.cache_miss(labels.cache);
                Ok(value)
            }
            Ok(Lookup::Failed(err)) => {
                self.metrics.registry_error(labels.operation);
                Err(err)
            }
            Ok(Lookup::Expired) => {
                self.metrics.registry_error("deadline");
                Err(CheckError::Deadline(HumanDuration(
                    self.flight_limits.run_for,
                )))
            }
            Ok(Lookup::Lost) => Err(CheckError::Internal(labels.doing)),
        }
    }
}

fn pin_scope_name(scope: PinScope) -> &'static str {
    match scope {
        PinScope::Pods => "pods",
        PinScope::All => "all",
        PinScope::None => "none",
    }
}
