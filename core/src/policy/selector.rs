//! Kubernetes label selectors (`matchLabels`, `matchExpressions`), used to
//! exclude namespaces by their labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A label selector as in Kubernetes: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default)]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One set-based requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In`/`NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Set-based operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is not one of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Checks the selector is meaningful; the error is (field, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.match_labels.is_empty() && self.match_expressions.is_empty() {
            // An empty selector matches everything: excluding every namespace
            // is never what an operator meant.
            return Err((
                "matchLabels".to_string(),
                "an empty selector would exclude every namespace".to_string(),
            ));
        }
        for (i, expr) in self.match_expressions.iter().enumerate() {
            let needs_values = matches!(
                expr.operator,
                SelectorOperator::In | SelectorOperator::NotIn
            );
            if expr.key.is_empty() {
                return Err((
                    format!("matchExpressions[{i}].key"),
                    "must not be empty".to_string(),
                ));
            }
            if needs_values == expr.values.is_empty() {
                let message = if needs_values {
                    "In and NotIn need at least one value"
                } else {
                    "Exists and DoesNotExist take no values"
                };
                return Err((format!("matchExpressions[{i}].values"), message.to_string()));
            }
        }
        Ok(())
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => !value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_like_kubernetes() {
        let selector: LabelSelector = serde_yaml::from_str(
            "matchLabels: {tier: system}\nmatchExpressions:\n- {key: env, operator: NotIn, values: [prod]}\n- {key: owner, operator: Exists}\n",
        )
        .unwrap();
        selector.validate().unwrap();
        assert!(selector.matches(&labels(&[("tier", "system"), ("owner", "ops")])));
        assert!(selector.matches(&labels(&[
            ("tier", "system"),
            ("owner", "ops"),
            ("env", "dev")
        ])));
        assert!(!selector.matches(&labels(&[
            ("tier", "system"),
            ("owner", "ops"),
            ("env", "prod")
        ])));
        assert!(!selector.matches(&labels(&[("tier", "system")])));
        assert!(!selector.matches(&labels(&[("owner", "ops")])));
    }

    #[test]
    fn refuses_meaningless_selectors() {
        assert!(LabelSelector::default().validate().is_err());
        let s: LabelSelector =
            serde_yaml::from_str("matchExpressions: [{key: a, operator: In}]").unwrap();
        assert_eq!(s.validate().unwrap_err().0, "matchExpressions[0].values");
        assert!(serde_yaml::from_str::<LabelSelector>(
            "matchExpressions: [{key: a, operator: Like}]"
        )
        .is_err());
    }
}
