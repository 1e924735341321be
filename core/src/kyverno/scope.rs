//! Where a `kyverno.io` rule applies: its `match` and `exclude` blocks
//! read into the namespaces it leaves alone, and whether it looks at pods at
//! all. imgate has one scope for the whole policy (namespace exclusions), so
//! a narrower Kyverno scope (some kinds, users, labels) is carried over as
//! "everywhere", which is stricter, and reported.

use std::collections::BTreeSet;

use serde_json::Value;

use super::model::{Imported, NsSet};
use super::report::FindingKind;

/// The kinds that carry a pod spec: what imgate checks.
const POD_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
];

/// The attributes of a filter that imgate cannot scope by.
const NARROWING: &[&str] = &[
    "names",
    "name",
    "selector",
    "namespaceSelector",
    "annotations",
    "operations",
];

/// A rule's scope.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    /// Whether it can apply to a kind that runs containers.
    pub pods: bool,
    /// Namespaces it leaves alone.
    pub unconstrained: NsSet,
}

/// Reads `match` and `exclude` of the rule at `path`; `namespace` is a
/// namespaced `Policy`'s own namespace.
pub(super) fn read(
    imported: &mut Imported,
    source: &str,
    path: &str,
    rule: &Value,
    namespace: Option<&str>,
) -> Scope {
    let mut r = Reader {
        imported,
        source,
        path,
    };
    let (pods, mut scope) = r.matched(rule.get("match"));
    if let Some(ns) = namespace {
        scope = scope.intersect(NsSet::Only(BTreeSet::from([ns.to_string()])));
    }
    let excluded = r.excluded(rule.get("exclude"));
    Scope {
        pods,
        unconstrained: scope.complement().union(excluded),
    }
}

struct Reader<'a> {
    imported: &'a mut Imported,
    source: &'a str,
    path: &'a str,
}

/// One resource filter, read.
struct Filter {
    /// Kinds it names that carry a pod spec (`None`: it names no kinds).
    pod_kinds: Option<Vec<String>>,
    /// Namespaces by name (`None`: any).
    namespaces: Option<Vec<String>>,
    /// Attributes that narrow it in ways imgate cannot follow.
    narrowing: Vec<String>,
}

impl Reader<'_> {
    fn stricter(&mut self, field: &str, message: String) {
        let path = format!("{}.{field}", self.path);
        self.imported
            .finding(FindingKind::Stricter, self.source, &path, message);
    }

    /// The filters of a `match` or `exclude` block and whether they combine
    /// with `all`.
    fn filters<'v>(&mut self, block: &'v Value, field: &str) -> Vec<(String, &'v Value, bool)> {
        let mut out = Vec::new();
        for (combiner, all) in [("any", false), ("all", true)] {
            if let Some(list) = block.get(combiner).and_then(Value::as_array) {
                for (i, f) in list.iter().enumerate() {
                    out.push((format!("{field}.{combiner}[{i}]"), f, all));
                }
            }
        }
        if block.get("resources").is_some() || block.get("subjects").is_some() {
            // The older form: one filter, the block itself.
            out.push((field.to_string(), block, false));
        }
        out
    }

    fn filter(&mut self, at: &str, f: &Value) -> Filter {
        let resources = f.get("resources").unwrap_or(&Value::Null);
        let pod_kinds = resources
            .get("kinds")
            .and_then(Value::as_array)
            .map(|kinds| {
                kinds
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(pod_kind)
                    .collect()
            });
        let namespaces = resources
            .get("namespaces")
            .and_then(Value::as_array)
            .map(|ns| {
                ns.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            });
        let mut narrowing: Vec<String> = NARROWING
            .iter()
            .filter(|a| resources.get(**a).is_some())
            .map(|a| format!("resources.{a}"))
            .collect();
        for who in ["subjects", "roles", "clusterRoles"] {
            if f.get(who).is_some() {
                narrowing.push(who.to_string());
            }
        }
        let _ = at;
        Filter {
            pod_kinds,
            namespaces,
            narrowing,
        }
    }

    /// Whether the rule can see pods, and the namespaces it applies in.
    fn matched(&mut self, block: Option<&Value>) -> (bool, NsSet) {
        let Some(block) = block else {
            return (true, NsSet::all());
        };
        let filters = self.filters(block, "match");
        let any_all = filters.iter().any(|(_, _, all)| *all);
        let mut pods = false;
        let mut scope: Option<NsSet> = None;
        for (at, f, _) in filters {
            let filter = self.filter(&at, f);
            let kinds = filter.pod_kinds.clone().unwrap_or_else(|| vec!["*".into()]);
            if kinds.is_empty() && !any_all {
                continue;
            }
            pods |= !kinds.is_empty();
            if !kinds.is_empty() && !kinds.iter().any(|k| k == "*" || k == "Pod") {
                self.stricter(
                    &format!("{at}.resources.kinds"),
                    format!(
                        "Kyverno applied this rule to {} only; imgate checks every Pod and pod template",
                        kinds.join(", ")
                    ),
                );
            }
            if !filter.narrowing.is_empty() {
                self.stricter(
                    &at,
                    format!(
                        "matched by {}, which imgate cannot scope by; imgate applies the rule everywhere",
                        filter.narrowing.join(", ")
                    ),
                );
            }
            let here = match filter.namespaces {
                Some(ns) if ns.iter().any(|n| n.contains(['*', '?'])) => {
                    self.stricter(
                        &format!("{at}.resources.namespaces"),
                        "namespace wildcards: imgate applies the rule in every namespace".into(),
                    );
                    NsSet::all()
                }
                Some(ns) => NsSet::Only(ns.into_iter().collect()),
                None => NsSet::all(),
            };
            scope = Some(match (scope, any_all) {
                (None, _) => here,
                (Some(s), true) => s.intersect(here),
                (Some(s), false) => s.union(here),
            });
        }
        (pods, scope.unwrap_or_else(NsSet::none))
    }

    /// The namespaces a whole-namespace exclusion names.
    fn excluded(&mut self, block: Option<&Value>) -> NsSet {
        let Some(block) = block else {
            return NsSet::none();
        };
        let filters = self.filters(block, "exclude");
        let all_count = filters.iter().filter(|(_, _, all)| *all).count();
        let mut out = NsSet::none();
        for (at, f, all) in filters {
            let filter = self.filter(&at, f);
            if all && all_count > 1 {
                self.stricter(
                    &at,
                    "an exclusion that needs several filters at once; imgate does not exclude it"
                        .into(),
                );
                continue;
            }
            let whole_kinds = filter
                .pod_kinds
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k == "*" || k == "Pod"));
            let Some(namespaces) = filter.namespaces else {
                self.stricter(
                    &at,
                    "an exclusion that is not by namespace name; imgate does not exclude it".into(),
                );
                continue;
            };
            if !filter.narrowing.is_empty() || !whole_kinds {
                self.stricter(
                    &at,
                    format!(
                        "namespaces excluded only together with {}; imgate does not exclude them",
                        if whole_kinds {
                            filter.narrowing.join(", ")
                        } else {
                            "some kinds".to_string()
                        }
                    ),
                );
                continue;
            }
            let (names, wild): (Vec<String>, Vec<String>) = namespaces
                .into_iter()
                .partition(|n| !n.contains(['*', '?']));
            if !wild.is_empty() {
                self.stricter(
                    &format!("{at}.resources.namespaces"),
                    format!(
                        "namespace wildcards ({}): imgate excludes namespaces by name, so these are checked",
                        wild.join(", ")
                    ),
                );
            }
            out = out.union(NsSet::Only(names.into_iter().collect()));
        }
        out
    }
}

/// The kind a Kyverno kind string names, if it carries a pod spec (`*` for
/// a wildcard): `Pod`, `v1/Pod`, `apps/v1/Deployment`, `Pod/ephemeralcontainers`.
fn pod_kind(text: &str) -> Option<String> {
    if text == "*" || text == "*/*" {
        return Some("*".into());
    }
    let kind = text
        .split('/')
        .find(|part| part.starts_with(|c: char| c.is_ascii_uppercase()))?;
    POD_KINDS.contains(&kind).then(|| kind.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn scope(rule: &str, namespace: Option<&str>) -> (Scope, Imported) {
        let mut imported = Imported::default();
        let rule: Value = serde_yaml::from_str(rule).unwrap();
        let s = read(
            &mut imported,
            "ClusterPolicy/t",
            "spec.rules[0]",
            &rule,
            namespace,
        );
        (s, imported)
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exclusions_by_namespace_name() {
        let (s, imported) = scope(
            "match: {any: [{resources: {kinds: [Pod]}}]}\nexclude: {any: [{resources: {namespaces: [kube-system, keel]}}]}",
            None,
        );
        assert!(s.pods);
        assert_eq!(s.unconstrained, NsSet::Only(set(&["keel", "kube-system"])));
        assert!(imported.findings.is_empty(), "{:?}", imported.findings);
    }

    #[test]
    fn narrower_scopes_are_reported_stricter() {
        let (s, imported) = scope(
            "match: {any: [{resources: {kinds: [Deployment], namespaces: [prod]}}]}\nexclude: {any: [{subjects: [{kind: User, name: ci}]}, {resources: {namespaces: ['kube-*']}}]}",
            None,
        );
        assert_eq!(s.unconstrained, NsSet::AllBut(set(&["prod"])));
        let kinds: Vec<FindingKind> = imported.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            vec![FindingKind::Stricter; 3],
            "{:?}",
            imported.findings
        );
    }

    #[test]
    fn kinds_without_pods_and_namespaced_policies() {
        let (s, _) = scope("match: {resources: {kinds: [ConfigMap]}}", None);
        assert!(!s.pods);
        let (s, _) = scope("match: {resources: {kinds: [v1/Pod]}}", Some("team"));
        assert!(s.pods);
        assert_eq!(s.unconstrained, NsSet::AllBut(set(&["team"])));
        assert_eq!(
            pod_kind("apps/v1/Deployment").as_deref(),
            Some("Deployment")
        );
        assert_eq!(pod_kind("Pod/ephemeralcontainers").as_deref(), Some("Pod"));
        assert_eq!(pod_kind("Service"), None);
    }
}
