//! The policy's validation: the checks serde cannot express (cross-field
//! rules, key files that must load, trust roots, names), each refusal naming
//! the field. `Policy::parse` runs it on every load and reload, so a policy
//! that fails it never replaces the one in force.

use std::collections::BTreeSet;

use super::{keyless, Policy, PolicyError, VerifyMode};

impl Policy {
    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            source_name: self.source_name.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Checks cross-field rules, loads keys and computes rule fingerprints.
    /// Called by the constructors; call again after editing fields by hand.
    pub fn validate(&mut self) -> Result<(), PolicyError> {
        self.warnings.clear();
        let mut trusted = Vec::with_capacity(self.trusted_specs.len());
        for (i, spec) in self.trusted_specs.iter().enumerate() {
            match &spec.0 {
                Ok(pattern) => trusted.push(pattern.clone()),
                Err(err) => {
                    return Err(self.invalid(format!("trustedRegistries[{i}]"), err.to_string()))
                }
            }
        }
        self.trusted_registries = trusted;
        if self.trusted_registries.is_empty() {
            return Err(self.invalid(
                "trustedRegistries",
                "empty: every image would be denied; list the registries images may come from",
            ));
        }
        for (i, name) in self.namespaces.exclude.iter().enumerate() {
            if !crate::workload::is_dns1123_label(name) {
                return Err(self.invalid(
                    format!("namespaces.exclude[{i}]"),
                    format!("{name:?} is not a namespace name"),
                ));
            }
        }
        if let Some(selector) = &self.namespaces.exclude_selector {
            if let Err((field, message)) = selector.validate() {
                return Err(self.invalid(format!("namespaces.excludeSelector.{field}"), message));
            }
        }
        for (host, settings) in &self.registries {
            let field = format!("registries.{host:?}");
            if host.is_empty() || host.contains(['/', '*', ' ']) {
                return Err(self.invalid(field, "not a registry host[:port]"));
            }
            if let Some(ca) = &settings.ca_file {
                if let Err(err) = std::fs::metadata(ca) {
                    return Err(self.invalid(
                        format!("{field}.caFile"),
                        format!("cannot read {}: {err}", ca.display()),
                    ));
                }
            }
        }
        if self.limits.max_images_per_object == 0 {
            return Err(self.invalid(
                "limits.maxImagesPerObject",
                "must be at least 1: every object with an image would be denied",
            ));
        }
        if self.cache.max_entries == 0 {
            return Err(self.invalid("cache.maxEntries", "must be at least 1"));
        }
        self.loaded_trust_root = match &self.trust_root {
            Some(path) => Some(
                keyless::load_root(path).map_err(|message| self.invalid("trustRoot", message))?,
            ),
            None => None,
        };
        let mut names = BTreeSet::new();
        for i in 0..self.rules.len() {
            self.validate_rule(i)?;
            if !names.insert(self.rules[i].name.clone()) {
                return Err(self.invalid(
                    format!("rules[{i}].name"),
                    format!("duplicate rule name {:?}", self.rules[i].name),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            for (j, pattern) in rule.images.iter().enumerate() {
                if !self.trusted_registries.iter().any(|t| t.covers(pattern)) {
                    self.warnings.push(format!(
                        "rules[{i}].images[{j}]: {pattern} is not covered by trustedRegistries; images it matches outside them are denied before the rule applies"
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_rule(&mut self, i: usize) -> Result<(), PolicyError> {
        let source_name = self.source_name.clone();
        let rule = &self.rules[i];
        let at = |field: &str| format!("rules[{i}].{field}");
        if rule.name.trim().is_empty() {
            return Err(self.invalid(at("name"), "must not be empty"));
        }
        if rule.image_specs.is_empty() {
            return Err(self.invalid(at("images"), "must list at least one image pattern"));
        }
        let mut images = Vec::with_capacity(rule.image_specs.len());
        for (j, spec) in rule.image_specs.iter().enumerate() {
            match &spec.0 {
                Ok(pattern) => images.push(pattern.clone()),
                Err(err) => return Err(self.invalid(at(&format!("images[{j}]")), err.to_string())),
            }
        }
        match rule.verify {
            VerifyMode::None => {
                if !rule.keys.is_empty() {
                    return Err(self.invalid(
                        at("keys"),
                        "a rule with verify: none checks no signature; remove the keys or the verify: none",
                    ));
                }
                if !rule.keyless.is_empty() {
                    return Err(self.invalid(
                        at("keyless"),
                        "a rule with verify: none checks no signature; remove the keyless authorities or the verify: none",
                    ));
                }
                if !rule.annotations.is_empty() {
                    return Err(self.invalid(
                        at("annotations"),
                        "a rule with verify: none checks no signature, so it cannot require annotations",
                    ));
                }
                if rule.match_repository {
                    return Err(self.invalid(
                        at("matchRepository"),
                        "a rule with verify: none checks no signature",
                    ));
                }
            }
            VerifyMode::Signature => {
                if rule.keys.is_empty() && rule.keyless.is_empty() {
                    return Err(self.invalid(
                        at("keys"),
                        "a rule that verifies signatures needs at least one key or keyless authority (or verify: none)",
                    ));
                }
            }
        }
        let mut loaded = Vec::with_capacity(rule.keys.len());
        for (k, key) in rule.keys.iter().enumerate() {
            let name = format!("rule {} key {}", rule.name, k + 1);
            loaded.push(super::attestation::load_key(
                key,
                &name,
                &source_name,
                &at(&format!("keys[{k}]")),
            )?);
        }
        let mut keyless = Vec::with_capacity(rule.keyless.len());
        for (k, authority) in rule.keyless.iter().enumerate() {
            match authority.load() {
                Ok(loaded) => keyless.push(loaded),
                Err((field, message)) => {
                    return Err(self.invalid(at(&format!("keyless[{k}].{field}")), message))
                }
            }
        }
        let trust_root = self.loaded_trust_root.clone();
        let rule = &mut self.rules[i];
        rule.images = images;
        rule.loaded_keys = loaded;
        rule.loaded_keyless = keyless;
        rule.trust_root = trust_root.clone();
        rule.loaded_attestations =
            super::attestation::load(rule, i, &self.limits.attestations, trust_root, &source_name)?;
        rule.fingerprint = rule.compute_fingerprint();
        Ok(())
    }
}
