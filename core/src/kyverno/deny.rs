//! A `validate` rule's `deny` conditions over image fields and its
//! `foreach` declarations over container lists, for the reader in
//! [`validate`](super::validate): a condition per image, with the
//! conditions that are not about images taken as always true where they
//! gated an image check (stricter) and listed as not imported otherwise.

use serde_json::Value;

use super::cond::Cond;
use super::model::Lists;
use super::validate::{mentions_image, PerList, Reader};
use super::ImportError;

impl Reader<'_> {
    /// A `deny` block: its conditions, of image lists (`request.object...
    /// .image`) or, in a `foreach`, of `element.image` (`scalar`).
    pub fn deny(
        &mut self,
        deny: &Value,
        path: &str,
        scalar: Option<Lists>,
    ) -> Result<PerList, ImportError> {
        let conditions = deny.get("conditions");
        let (any, all) = match conditions {
            None => {
                // No conditions: Kyverno denies every request the rule sees.
                self.about_images = true;
                return Ok(PerList::of(scalar.unwrap_or(Lists::ALL), Cond::False));
            }
            Some(Value::Array(list)) => (None, Some((list, format!("{path}.conditions")))),
            Some(Value::Object(map)) => (
                map.get("any")
                    .and_then(Value::as_array)
                    .map(|l| (l, format!("{path}.conditions.any"))),
                map.get("all")
                    .and_then(Value::as_array)
                    .map(|l| (l, format!("{path}.conditions.all"))),
            ),
            Some(_) => {
                return Ok(PerList::of(
                    Lists::ALL,
                    self.unknown(path, "conditions that are neither a list nor any/all"),
                ))
            }
        };
        let both = any.is_some() && all.is_some();
        // Each block's conditions: `Some((denied, lists, existential))` for
        // an image condition, `None` for one on something else.
        let mut blocks = Vec::new();
        let mut gates = Vec::new();
        let mut separate = Vec::new();
        let mut lists = Lists::default();
        for (block, is_all) in [(any, false), (all, true)] {
            let Some((conditions, at)) = block else {
                continue;
            };
            let mut parts = Vec::new();
            for (i, c) in conditions.iter().enumerate() {
                let at = format!("{at}[{i}]");
                let part = self.condition(c, &at, scalar)?;
                match &part {
                    Some((_, on, _)) => lists = lists.union(*on),
                    // A condition on something else that an image condition
                    // needs too (`all`, or `any` next to `all`): taken as
                    // always met, so the image check always applies.
                    None if is_all || both => gates.push(at),
                    // A denial of its own, not about images.
                    None => separate.push(at),
                }
                parts.push(part);
            }
            blocks.push((is_all, parts));
        }
        self.not_images.extend(separate);
        if lists.is_empty() {
            self.not_images.extend(gates);
            return Ok(PerList::default());
        }
        for gate in &gates {
            self.stricter(gate, "a condition not about images, taken as always true (the image check always applies)");
        }
        // Per list: a condition about another list's images is, for this
        // image, like one about something else.
        let mut out = PerList::default();
        let mut or_ified = false;
        for (field, slot) in [
            ("containers", 0),
            ("initContainers", 1),
            ("ephemeralContainers", 2),
        ] {
            let Some(this) = Lists::of_field(field) else {
                continue;
            };
            if lists.union(this) != lists {
                continue;
            }
            let on_this = |l: &Lists| l.union(this) == *l;
            let mut denied = Vec::new();
            for (is_all, parts) in &blocks {
                let mine: Vec<&(Cond, Lists, bool)> = parts
                    .iter()
                    .flatten()
                    .filter(|(_, l, _)| on_this(l))
                    .collect();
                let other = parts.len() - mine.len();
                let existential = mine.iter().filter(|(_, _, e)| *e).count();
                let conds: Vec<Cond> = mine.iter().map(|(c, _, _)| c.clone()).collect();
                denied.push(if !is_all && both && other > 0 {
                    Cond::True
                } else if *is_all && existential > 1 {
                    // "some image fails A and some image fails B" is not a
                    // condition on one image; "an image fails A or B"
                    // denies whenever it does.
                    or_ified = true;
                    Cond::or(conds)
                } else if *is_all {
                    Cond::and(conds)
                } else {
                    Cond::or(conds)
                });
            }
            let pass = Cond::and(denied).not();
            match slot {
                0 => out.containers = Some(pass),
                1 => out.init = Some(pass),
                _ => out.ephemeral = Some(pass),
            }
        }
        if or_ified {
            self.stricter(path, "several image conditions that must all hold: imgate denies an image that meets any of them");
        }
        Ok(out)
    }

    /// One deny condition as "this image is denied", with the lists it is
    /// about and whether it is existential over a list; `None` when it is
    /// not about images.
    fn condition(
        &mut self,
        c: &Value,
        path: &str,
        scalar: Option<Lists>,
    ) -> Result<Option<(Cond, Lists, bool)>, ImportError> {
        let key = c.get("key").and_then(Value::as_str).unwrap_or_default();
        let expr = jmespath_of(key);
        let (lists, is_list) = if let (Some(lists), true) = (scalar, expr == "element.image") {
            (lists, false)
        } else if let Some(lists) = list_key(&expr, ".image") {
            (lists, true)
        } else if mentions_image(c) {
            return Ok(Some((
                self.unknown(
                    path,
                    &format!("a condition on `{key}` the importer does not translate"),
                ),
                scalar.unwrap_or(Lists::ALL),
                false,
            )));
        } else {
            return Ok(None);
        };
        self.about_images = true;
        let operator = c
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values: Option<Vec<&str>> = match c.get("value") {
            Some(Value::String(s)) => Some(vec![s.as_str()]),
            Some(Value::Array(items)) => items.iter().map(Value::as_str).collect(),
            _ => None,
        };
        let Some(values) = values else {
            return Ok(Some((
                self.unknown(path, "a value that is not a string or a list of strings"),
                lists,
                is_list,
            )));
        };
        let mut globs = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let at = format!("{path}.value[{i}]");
            if v.contains("{{") {
                globs.push(self.unknown(
                    &at,
                    "a templated value ({{ }}): imgate cannot evaluate Kyverno variables",
                ));
            } else {
                let source = self.source.to_string();
                globs.push(self.imported.glob(&source, &at, v)?);
            }
        }
        let any_of = Cond::or(globs.clone());
        let denied = match (operator, is_list) {
            ("AnyIn", _) | ("In", false) | ("AllIn", false) => any_of,
            ("AnyNotIn", _) | ("NotIn", false) | ("AllNotIn", false) => any_of.not(),
            ("Equals", false) if globs.len() == 1 => any_of,
            ("NotEquals", false) if globs.len() == 1 => any_of.not(),
            ("AllIn" | "In", true) => {
                self.stricter(path, &format!("{operator}: Kyverno denied only when every image matched; imgate denies each image that matches"));
                any_of
            }
            ("AllNotIn", true) => {
                self.stricter(path, "AllNotIn: Kyverno denied only when no image was listed; imgate denies each image not listed");
                any_of.not()
            }
            _ => self.unknown(path, &format!("operator `{operator}` on an image")),
        };
        Ok(Some((denied, lists, is_list)))
    }

    /// `foreach` declarations: each applies its pattern or deny to every
    /// element of a container list.
    pub(super) fn foreach(&mut self, value: &Value, path: &str) -> Result<PerList, ImportError> {
        let Some(entries) = value.as_array() else {
            return Ok(PerList::of(Lists::ALL, self.unknown(path, "not a list")));
        };
        let mut out = PerList::default();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let list = entry
                .get("list")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(lists) = list_key(&jmespath_of(list), "") else {
                if mentions_image(entry) {
                    out = out.and(PerList::of(
                        Lists::ALL,
                        self.unknown(
                            &format!("{at}.list"),
                            &format!("a foreach list `{list}` the importer does not translate"),
                        ),
                    ));
                } else {
                    self.not_images.push(at);
                }
                continue;
            };
            let Some(map) = entry.as_object() else {
                continue;
            };
            for (key, v) in map {
                let field = format!("{at}.{key}");
                let part = match key.as_str() {
                    "list" | "elementScope" => continue,
                    "pattern" => PerList::of(lists, self.element(v, &field)?),
                    "anyPattern" => {
                        let mut any = Vec::new();
                        for (j, p) in v.as_array().into_iter().flatten().enumerate() {
                            any.push(self.element(p, &format!("{field}[{j}]"))?);
                        }
                        PerList::of(lists, Cond::or(any))
                    }
                    "deny" => self.deny(v, &field, Some(lists))?,
                    "preconditions" => {
                        self.stricter(&field, "foreach preconditions are not imported: the image check applies to every element");
                        continue;
                    }
                    "context" => {
                        let source = self.source.to_string();
                        self.imported.refuse(
                            &source,
                            &field,
                            "context lookups (apiCall, configMap, variables)",
                            false,
                        );
                        continue;
                    }
                    _ => PerList::of(
                        lists,
                        self.unknown(
                            &field,
                            &format!("`{key}` in a foreach is not understood by the importer"),
                        ),
                    ),
                };
                out = out.and(part);
            }
        }
        Ok(out)
    }
}

/// The JMESPath inside `{{ }}`, without spaces or a `|| []` default.
fn jmespath_of(text: &str) -> String {
    let inner = text
        .trim()
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .unwrap_or(text);
    let compact: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    match compact.split_once("||") {
        Some((expr, default)) if ["`[]`", "'[]'", "[]", "''", "``"].contains(&default) => {
            expr.to_string()
        }
        _ => compact,
    }
}

/// The container lists a JMESPath names, followed by `suffix` (`.image`
/// for the images, empty for the containers themselves):
/// `request.object.spec.containers[].image`, the same under
/// `template.spec.` or `jobTemplate.spec.template.spec.`, and the
/// multi-select `request.object.spec.[initContainers,containers][]`.
fn list_key(expr: &str, suffix: &str) -> Option<Lists> {
    let rest = expr.strip_prefix("request.object.spec.")?;
    let rest = rest
        .strip_prefix("jobTemplate.spec.template.spec.")
        .or_else(|| rest.strip_prefix("template.spec."))
        .unwrap_or(rest);
    let rest = rest.strip_suffix(suffix)?;
    let (names, tail) = match rest.strip_prefix('[') {
        Some(multi) => {
            let (names, tail) = multi.split_once(']')?;
            (names.split(',').collect::<Vec<_>>(), tail)
        }
        None => {
            let end = rest.find('[').unwrap_or(rest.len());
            (vec![&rest[..end]], &rest[end..])
        }
    };
    // A projection or flattening over the list; an empty tail only for the
    // list itself (no `.image`).
    let tail_ok = matches!(tail, "[]" | "[*]" | "[][]") || (tail.is_empty() && suffix.is_empty());
    if !tail_ok {
        return None;
    }
    names.iter().try_fold(Lists::default(), |acc, n| {
        Lists::of_field(n).map(|l| acc.union(l))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::validate::tests::{admits, read};
    use super::*;

    #[test]
    fn deny_conditions_over_image_lists() {
        let (per, imported, _) = read(
            "deny:\n  conditions:\n    any:\n    - key: '{{ request.object.spec.[ephemeralContainers, initContainers, containers][].image }}'\n      operator: AnyNotIn\n      value: ['ghcr.io/*', 'quay.io/*']\n    - key: '{{ request.object.spec.containers[].image }}'\n      operator: AnyIn\n      value: '*:latest'\n",
        );
        assert!(admits(&imported, &per.containers, "ghcr.io/a:1"));
        assert!(!admits(&imported, &per.containers, "ghcr.io/a:latest"));
        assert!(admits(&imported, &per.init, "quay.io/a:latest"));
        assert!(!admits(&imported, &per.ephemeral, "docker.io/a:1"));
    }

    #[test]
    fn foreach_with_element_conditions() {
        let (per, imported, _) = read(
            "foreach:\n- list: request.object.spec.initContainers\n  deny:\n    conditions:\n    - key: '{{ element.image }}'\n      operator: NotEquals\n      value: 'registry.example.com/*'\n- list: \"request.object.spec.containers\"\n  pattern:\n    image: '!*:latest'\n",
        );
        assert!(admits(&imported, &per.init, "registry.example.com/x"));
        assert!(!admits(&imported, &per.init, "ghcr.io/x"));
        assert!(!admits(&imported, &per.containers, "ghcr.io/x:latest"));
        assert!(admits(&imported, &per.containers, "ghcr.io/x:1"));
    }

    #[test]
    fn list_keys() {
        let all = Lists::ALL;
        assert_eq!(
            list_key(
                "request.object.spec.[ephemeralContainers,initContainers,containers][].image",
                ".image"
            ),
            Some(all)
        );
        assert_eq!(
            list_key(
                "request.object.spec.template.spec.containers[*].image",
                ".image"
            )
            .map(|l| l.containers),
            Some(true)
        );
        assert_eq!(
            list_key("request.object.spec.containers", ""),
            Lists::of_field("containers")
        );
        assert_eq!(
            list_key("request.object.spec.volumes[].image", ".image"),
            None
        );
        assert_eq!(
            jmespath_of("{{ request.object.spec.containers[].image || `[]` }}"),
            "request.object.spec.containers[].image"
        );
    }
}
