//! One image field checked: trusted registry, matching rule, the tag
//! resolved to a digest (tag cache), the digest verified (verdict cache,
//! single flight, under the review's deadline and the process-wide bound on
//! registry work), then the patch that pins it or the reason it is denied.

use super::*;

impl Engine {
    pub(super) async fn decide_sites(&self, ctx: &Ctx, sites: &[ImageSite]) -> ObjectDecision {
        let distinct: std::collections::BTreeSet<&str> =
            sites.iter().filter_map(|s| s.image.as_deref()).collect();
        if distinct.len() > ctx.policy.limits.max_images_per_object {
            // Before any registry call: each image costs requests, memory
            // and sockets, and the object, not imgate, chose how many.
            return too_many_images(&ctx.policy, distinct.len());
        }
        let images =
            futures::future::join_all(sites.iter().map(|site| self.check_site(ctx, site))).await;
        assemble(&ctx.policy, ctx.endpoint, images)
    }

    /// The verdict on one image field.
    pub(super) async fn check_site(&self, ctx: &Ctx, site: &ImageSite) -> ImageDecision {
        let policy = &ctx.policy;
        let who = site.describe();
        let mut decision = ImageDecision {
            pointer: site.pointer.clone(),
            container: who.clone(),
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
        let needs_digest = rule.requires_signature() || (in_pin_scope && image.digest.is_none());
        let digest = if needs_digest {
            match self.digest_of(ctx, &image).await {
                Ok(digest) => digest,
                Err(err) => {
                    return registry_failure(decision, policy, &who, written, &rule.name, err)
                }
            }
        } else {
            // Nothing to verify and nothing to pin: no registry call at all.
            decision.digest = image.digest.clone();
            decision.allowed = true;
            return decision;
        };
        decision.digest = Some(digest.clone());
        if rule.requires_signature() {
            let subject = image.at_digest(digest.clone());
            match self.verdict(ctx, rule, &subject).await {
                Ok(Verdict::Verified(_)) => decision.verified = true,
                Ok(Verdict::Denied { unmet, .. }) => {
                    let unmet: Vec<String> = unmet.iter().map(ToString::to_string).collect();
                    decision.reason = Some(format!(
                        "{who}: image {written:?} ({digest}): rule {:?}: {}",
                        rule.name,
                        if unmet.is_empty() {
                            "not verified".to_string()
                        } else {
                            unmet.join("; ")
                        }
                    ));
                    return decision;
                }
                Err(err) => {
                    return registry_failure(decision, policy, &who, written, &rule.name, err)
                }
            }
        }
        decision.allowed = true;
        if in_pin_scope && image.digest.is_none() {
            match ctx.endpoint {
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

    /// The digest of `image`: its own if pinned, else the tag's (cached briefly).
    pub(super) async fn digest_of(
        &self,
        ctx: &Ctx,
        image: &ImageRef,
    ) -> Result<Digest, CheckError> {
        if let Some(digest) = &image.digest {
            return Ok(digest.clone());
        }
        let key = image.to_string();
        // A hit needs no computation, timer or credentials: the warm path.
        if let Some(digest) = ctx.caches.tags.get(&key) {
            self.metrics.cache_hit("tag");
            return Ok(digest);
        }
        let backend = Arc::clone(&self.backend);
        let client = ctx.client_for(&image.registry);
        let target = image.clone();
        let ttl = ctx.policy.cache.tag_ttl.get();
        let slots = Arc::clone(&self.registry_slots);
        let compute = async move {
            let _slot = slots.acquire_owned().await;
            let client = client.await;
            match backend.resolve(client, target).await {
                Ok(digest) => Ok((digest, ttl)),
                Err(err) => Err(CheckError::Resolve(Arc::new(err))),
            }
        };
        let lookup = tokio::time::timeout_at(
            ctx.deadline_at,
            ctx.caches.tags.get_or_compute(key, compute),
        );
        match lookup.await {
            Err(_) => {
                self.metrics.registry_error("deadline");
                Err(CheckError::Deadline(HumanDuration(self.deadline)))
            }
            Ok(Lookup::Hit(digest)) => {
                self.metrics.cache_hit("tag");
                Ok(digest)
            }
            Ok(Lookup::Fresh(digest)) => {
                self.metrics.cache_miss("tag");
                Ok(digest)
            }
            Ok(Lookup::Failed(err)) => {
                self.metrics.registry_error("resolve");
                Err(err)
            }
            Ok(Lookup::Expired) => {
                self.metrics.registry_error("deadline");
                Err(CheckError::Deadline(HumanDuration(
                    self.flight_limits.run_for,
                )))
            }
            Ok(Lookup::Lost) => Err(CheckError::Internal("resolving the tag")),
        }
    }

    /// The verdict for `subject` (pinned) under `rule`, cached by
    /// (repository, digest, rule fingerprint), one verification in flight per key.
    pub(super) async fn verdict(
        &self,
        ctx: &Ctx,
        rule: &imgate_core::policy::Rule,
        subject: &ImageRef,
    ) -> Result<Verdict, CheckError> {
        let Some(digest) = subject.digest.clone() else {
            return Err(CheckError::Internal("verifying an unpinned reference"));
        };
        let key = (subject.name(), digest, rule.fingerprint().to_string());
        if let Some(verdict) = ctx.caches.verified.get(&key) {
            self.metrics.cache_hit("verified");
            return Ok(verdict);
        }
        let backend = Arc::clone(&self.backend);
        let client = ctx.client_for(&subject.registry);
        let target = subject.clone();
        let requirements = rule.requirements();
        let metrics = Arc::clone(&self.metrics);
        let verified_ttl = ctx.policy.cache.verified_ttl.get();
        let denied_ttl = ctx.policy.cache.denied_ttl.get();
        let slots = Arc::clone(&self.registry_slots);
        let compute = async move {
            let _slot = slots.acquire_owned().await;
            metrics.verification();
            let client = client.await;
            let verdict = backend
                .verify(client, target, requirements)
                .await
                .map_err(|err| CheckError::Verify(Arc::new(err)))?;
            let ttl = if verdict.is_verified() {
                verified_ttl
            } else {
                denied_ttl
            };
            Ok((verdict, ttl))
        };
        match tokio::time::timeout_at(
            ctx.deadline_at,
            ctx.caches.verified.get_or_compute(key, compute),
        )
        .await
        {
            Err(_) => {
                self.metrics.registry_error("deadline");
                Err(CheckError::Deadline(HumanDuration(self.deadline)))
            }
            Ok(Lookup::Hit(verdict)) => {
                self.metrics.cache_hit("verified");
                Ok(verdict)
            }
            Ok(Lookup::Fresh(verdict)) => {
                self.metrics.cache_miss("verified");
                Ok(verdict)
            }
            Ok(Lookup::Failed(err)) => {
                self.metrics.registry_error("verify");
                Err(err)
            }
            Ok(Lookup::Expired) => {
                self.metrics.registry_error("deadline");
                Err(CheckError::Deadline(HumanDuration(
                    self.flight_limits.run_for,
                )))
            }
            Ok(Lookup::Lost) => Err(CheckError::Internal("verifying")),
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
