//! A `kyverno.io` rule's `validate` block, read into one condition per
//! container list on each image: `pattern` and `anyPattern` (with Kyverno's
//! anchors), `deny` conditions over image fields, and `foreach` over
//! container lists.
//!
//! What concerns images is translated or, when not understood, made unknown
//! (the images it covered are then denied). What does not concern images
//! (a securityContext pattern, a condition on the operation) is listed as
//! not imported: imgate is an image gate and does not enforce it. A
//! condition that gated an image check (a conditional anchor on `name`, a
//! non-image `all` condition of a deny) is taken as always true, which is
//! stricter, and reported.

use serde_json::{Map, Value};

use super::cond::Cond;
use super::model::{Imported, Lists};
use super::report::FindingKind;
use super::ImportError;

/// One condition per container list (`None`: the list is not checked).
#[derive(Debug, Clone, Default)]
pub(super) struct PerList {
    pub containers: Option<Cond>,
    pub init: Option<Cond>,
    pub ephemeral: Option<Cond>,
}

impl PerList {
    fn of(lists: Lists, cond: Cond) -> PerList {
        let pick = |on: bool| on.then(|| cond.clone());
        PerList {
            containers: pick(lists.containers),
            init: pick(lists.init),
            ephemeral: pick(lists.ephemeral),
        }
    }

    fn slots(&mut self) -> [&mut Option<Cond>; 3] {
        [&mut self.containers, &mut self.init, &mut self.ephemeral]
    }

    /// Both must hold.
    fn and(mut self, mut other: PerList) -> PerList {
        for (mine, theirs) in self.slots().into_iter().zip(other.slots()) {
            *mine = match (mine.take(), theirs.take()) {
                (Some(a), Some(b)) => Some(Cond::and(vec![a, b])),
                (a, b) => a.or(b),
            };
        }
        self
    }

    /// Either may hold (a list one side does not check is unchecked).
    fn or(mut self, mut other: PerList) -> PerList {
        for (mine, theirs) in self.slots().into_iter().zip(other.slots()) {
            *mine = match (mine.take(), theirs.take()) {
                (Some(a), Some(b)) => Some(Cond::or(vec![a, b])),
                _ => None,
            };
        }
        self
    }

    pub fn lists(&self) -> Lists {
        Lists {
            containers: self.containers.is_some(),
            init: self.init.is_some(),
            ephemeral: self.ephemeral.is_some(),
        }
    }

    /// The condition every image it checks must meet (one imgate allow-list
    /// serves every list, so it must satisfy all of them).
    pub fn combined(&self) -> Option<Cond> {
        let parts: Vec<Cond> = [&self.containers, &self.init, &self.ephemeral]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        (!parts.is_empty()).then(|| Cond::and(parts))
    }
}

/// Kyverno's anchors on a pattern key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    None,
    /// `=(k)`: if present.
    Equality,
    /// `X(k)`: must not be present.
    Negation,
    /// `^(k)`: at least one element.
    Existence,
    /// `(k)`: the rest applies only if this matches.
    Conditional,
    /// `<(k)`: the rule applies only if this matches.
    Global,
    /// `+(k)`: a mutation.
    AddIfNotPresent,
}

fn anchor(key: &str) -> (Anchor, &str) {
    let inner = |prefix: &str| key.strip_prefix(prefix).and_then(|k| k.strip_suffix(')'));
    for (prefix, kind) in [
        ("=(", Anchor::Equality),
        ("X(", Anchor::Negation),
        ("^(", Anchor::Existence),
        ("<(", Anchor::Global),
        ("+(", Anchor::AddIfNotPresent),
        ("(", Anchor::Conditional),
    ] {
        if let Some(name) = inner(prefix) {
            return (kind, name);
        }
    }
    (Anchor::None, key)
}

/// Reads one `validate` block.
pub(super) struct Reader<'a> {
    pub imported: &'a mut Imported,
    pub source: &'a str,
    /// Whether anything about images was found.
    pub about_images: bool,
    /// Paths of checks that are not about images.
    pub not_images: Vec<String>,
}

impl Reader<'_> {
    fn unknown(&mut self, path: &str, reason: &str) -> Cond {
        self.about_images = true;
        let source = self.source.to_string();
        self.imported.refuse(&source, path, reason, true);
        Cond::Unknown
    }

    fn stricter(&mut self, path: &str, message: &str) {
        let source = self.source.to_string();
        self.imported
            .finding(FindingKind::Stricter, &source, path, message);
    }

    /// The conditions of a `validate` block, by list.
    pub fn validate(&mut self, validate: &Value, path: &str) -> Result<PerList, ImportError> {
        let Some(map) = validate.as_object() else {
            return Ok(PerList::of(Lists::ALL, self.unknown(path, "not a mapping")));
        };
        let mut out: Option<PerList> = None;
        let mut and = |part: PerList| {
            out = Some(match out.take() {
                Some(o) => o.and(part),
                None => part,
            })
        };
        for (key, value) in map {
            let at = format!("{path}.{key}");
            match key.as_str() {
                "message" | "failureAction" | "failureActionOverrides" | "allowExistingViolations" => {}
                "pattern" => and(self.pattern(value, &at)?),
                "anyPattern" => {
                    let Some(patterns) = value.as_array() else {
                        and(PerList::of(Lists::ALL, self.unknown(&at, "not a list")));
                        continue;
                    };
                    let mut any: Option<PerList> = None;
                    for (i, p) in patterns.iter().enumerate() {
                        let part = self.pattern(p, &format!("{at}[{i}]"))?;
                        any = Some(match any {
                            Some(a) => a.or(part),
                            None => part,
                        });
                    }
                    if patterns.len() > 1 && self.about_images {
                        let source = self.source.to_string();
                        self.imported.finding(
                            FindingKind::Changed,
                            &source,
                            &at,
                            "Kyverno required one alternative to hold for every container of a pod; imgate checks each image against any alternative, so a pod mixing images of two alternatives is admitted",
                        );
                    }
                    and(any.unwrap_or_default());
                }
                "deny" => and(self.deny(value, &at, None)?),
                "foreach" => and(self.foreach(value, &at)?),
                "podSecurity" => {
                    let source = self.source.to_string();
                    self.imported
                        .refuse(&source, &at, "podSecurity (Pod Security Standards)", false);
                }
                _ => {
                    if mentions_image(value) {
                        and(PerList::of(
                            Lists::ALL,
                            self.unknown(&at, &format!("`{key}` is not understood by the importer")),
                        ));
                    } else {
                        self.not_images.push(at);
                    }
                }
            }
        }
        Ok(out.unwrap_or_default())
    }

    /// A `pattern`: finds the pod spec (of a Pod, a controller's template or
    /// a CronJob's job template) and its container lists.
    fn pattern(&mut self, value: &Value, path: &str) -> Result<PerList, ImportError> {
        let Some(map) = value.as_object() else {
            return Ok(PerList::of(Lists::ALL, self.unknown(path, "not a mapping")));
        };
        let mut out = PerList::default();
        for (key, v) in map {
            let (a, name) = anchor(key);
            let at = format!("{path}.{key}");
            if name == "spec" {
                out = out.and(self.structural(a, v, &at, Self::spec)?);
            } else {
                out = out.and(self.not_image(v, &at));
            }
        }
        Ok(out)
    }

    /// A structural key (spec, template): plain or `=()` is followed, any
    /// other anchor makes what is below it unknown.
    fn structural(
        &mut self,
        a: Anchor,
        value: &Value,
        path: &str,
        read: fn(&mut Self, &Map<String, Value>, &str) -> Result<PerList, ImportError>,
    ) -> Result<PerList, ImportError> {
        match (a, value.as_object()) {
            (Anchor::None | Anchor::Equality, Some(map)) => read(self, map, path),
            _ if !mentions_image(value) => {
                self.not_images.push(path.to_string());
                Ok(PerList::default())
            }
            _ => Ok(PerList::of(
                Lists::ALL,
                self.unknown(path, "an anchor or value the importer does not follow around image checks"),
            )),
        }
    }

    /// A pod spec or a controller spec (`template`, `jobTemplate`).
    fn spec(&mut self, map: &Map<String, Value>, path: &str) -> Result<PerList, ImportError> {
        let mut out = PerList::default();
        for (key, v) in map {
            let (a, name) = anchor(key);
            let at = format!("{path}.{key}");
            if let Some(lists) = Lists::of_field(name) {
                out = out.and(self.list(a, v, &at, lists)?);
            } else if name == "template" || name == "jobTemplate" {
                out = out.and(self.structural(a, v, &at, Self::template)?);
            } else {
                out = out.and(self.not_image(v, &at));
            }
        }
        Ok(out)
    }

    fn template(&mut self, map: &Map<String, Value>, path: &str) -> Result<PerList, ImportError> {
        let mut out = PerList::default();
        for (key, v) in map {
            let (a, name) = anchor(key);
            let at = format!("{path}.{key}");
            if name == "spec" {
                out = out.and(self.structural(a, v, &at, Self::spec)?);
            } else {
                out = out.and(self.not_image(v, &at));
            }
        }
        Ok(out)
    }

    fn not_image(&mut self, value: &Value, path: &str) -> PerList {
        if mentions_image(value) {
            // An image check somewhere the importer does not look.
            let unknown = self.unknown(path, "an image check outside the pod spec's container lists");
            return PerList::of(Lists::ALL, unknown);
        }
        self.not_images.push(path.to_string());
        PerList::default()
    }

    /// A container list pattern: one element every container must match.
    fn list(&mut self, a: Anchor, value: &Value, path: &str, lists: Lists) -> Result<PerList, ImportError> {
        match a {
            Anchor::Negation => {
                self.not_images.push(path.to_string());
                return Ok(PerList::default());
            }
            Anchor::Conditional | Anchor::Global | Anchor::AddIfNotPresent => {
                return Ok(PerList::of(lists, self.unknown(path, "an anchor on a container list the importer does not translate")));
            }
            Anchor::Existence => self.stricter(
                path,
                "Kyverno required one matching container (^()); imgate checks every container",
            ),
            Anchor::None | Anchor::Equality => {}
        }
        let element = match value.as_array().map(Vec::as_slice) {
            Some([element]) => element,
            _ => {
                return Ok(PerList::of(
                    lists,
                    self.unknown(path, "a container list pattern that is not exactly one element"),
                ))
            }
        };
        let cond = self.element(element, &format!("{path}[0]"))?;
        Ok(PerList::of(lists, cond))
    }

    /// One container pattern: the condition on its `image`.
    pub fn element(&mut self, value: &Value, path: &str) -> Result<Cond, ImportError> {
        let Some(map) = value.as_object() else {
            return Ok(self.unknown(path, "a container pattern that is not a mapping"));
        };
        let mut cond = Cond::True;
        let mut gated_by = Vec::new();
        let mut conditional_image = false;
        for (key, v) in map {
            let (a, name) = anchor(key);
            let at = format!("{path}.{key}");
            if name == "image" {
                self.about_images = true;
                cond = match (a, v.as_str()) {
                    (Anchor::None | Anchor::Equality, Some(text)) => {
                        let source = self.source.to_string();
                        self.imported.pattern_string(&source, &at, text)?
                    }
                    (Anchor::Conditional, Some(_)) => {
                        conditional_image = true;
                        Cond::True
                    }
                    (Anchor::None | Anchor::Equality | Anchor::Conditional, None) => {
                        self.unknown(&at, "an image pattern that is not a string")
                    }
                    _ => self.unknown(&at, "an anchor on image the importer does not translate"),
                };
            } else if matches!(a, Anchor::Conditional | Anchor::Global) {
                gated_by.push(key.clone());
            } else {
                self.not_images.push(at);
            }
        }
        if conditional_image {
            // `(image): X` makes the other fields conditions on images
            // matching X: a check of those fields, not of the image.
            let source = self.source.to_string();
            self.imported.finding(
                FindingKind::Note,
                &source,
                path,
                "a conditional anchor on image: the rule checks other fields of matching containers, not which images may run",
            );
        } else if !gated_by.is_empty() && cond != Cond::True {
            self.stricter(
                path,
                &format!(
                    "Kyverno checked the image only when {} matched; imgate checks every image",
                    gated_by.join(", ")
                ),
            );
        }
        Ok(cond)
    }

    /// A `deny` block: its conditions, of image lists (`request.object...
    /// .image`) or, in a `foreach`, of `element.image` (`scalar`).
    pub fn deny(&mut self, deny: &Value, path: &str, scalar: Option<Lists>) -> Result<PerList, ImportError> {
        let conditions = deny.get("conditions");
        let (any, all) = match conditions {
            None => {
                // No conditions: Kyverno denies every request the rule sees.
                self.about_images = true;
                return Ok(PerList::of(scalar.unwrap_or(Lists::ALL), Cond::False));
            }
            Some(Value::Array(list)) => (None, Some((list, format!("{path}.conditions")))),
            Some(Value::Object(map)) => (
                map.get("any").and_then(Value::as_array).map(|l| (l, format!("{path}.conditions.any"))),
                map.get("all").and_then(Value::as_array).map(|l| (l, format!("{path}.conditions.all"))),
            ),
            Some(_) => {
                return Ok(PerList::of(Lists::ALL, self.unknown(path, "conditions that are neither a list nor any/all")))
            }
        };
        let both = any.is_some() && all.is_some();
        let mut lists = Lists::default();
        let mut blocks = Vec::new();
        let mut gates = Vec::new();
        let mut separate = Vec::new();
        for (block, is_all) in [(any, false), (all, true)] {
            let Some((conditions, at)) = block else { continue };
            let mut parts = Vec::new();
            let mut existential = 0;
            let mut gated = false;
            for (i, c) in conditions.iter().enumerate() {
                let at = format!("{at}[{i}]");
                match self.condition(c, &at, scalar)? {
                    Some((cond, on, is_existential)) => {
                        lists = lists.union(on);
                        existential += usize::from(is_existential);
                        parts.push(cond);
                    }
                    // A condition on something else that an image condition
                    // needs too (`all`, or `any` next to `all`): taken as
                    // always met, so the image check always applies.
                    None if is_all || both => {
                        gated = true;
                        gates.push(at);
                    }
                    // A denial of its own, not about images.
                    None => separate.push(at),
                }
            }
            blocks.push(if !is_all && gated {
                Cond::True
            } else if is_all && existential > 1 {
                // "some image fails A and some image fails B" is not a
                // condition on one image; "an image fails A or B" denies
                // whenever it does.
                self.stricter(&at, "several image conditions that must all hold: imgate denies an image that meets any of them");
                Cond::or(parts)
            } else if is_all {
                Cond::and(parts)
            } else {
                Cond::or(parts)
            });
        }
        self.not_images.extend(separate);
        if lists.is_empty() {
            self.not_images.extend(gates);
            return Ok(PerList::default());
        }
        for gate in gates {
            self.stricter(&gate, "a condition not about images, taken as always true (the image check always applies)");
        }
        Ok(PerList::of(lists, Cond::and(blocks).not()))
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
            return Ok(Some((self.unknown(path, &format!("a condition on `{key}` the importer does not translate")), scalar.unwrap_or(Lists::ALL), false)));
        } else {
            return Ok(None);
        };
        self.about_images = true;
        let operator = c.get("operator").and_then(Value::as_str).unwrap_or_default();
        let values: Option<Vec<&str>> = match c.get("value") {
            Some(Value::String(s)) => Some(vec![s.as_str()]),
            Some(Value::Array(items)) => items.iter().map(Value::as_str).collect(),
            _ => None,
        };
        let Some(values) = values else {
            return Ok(Some((self.unknown(path, "a value that is not a string or a list of strings"), lists, is_list)));
        };
        let mut globs = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let at = format!("{path}.value[{i}]");
            if v.contains("{{") {
                globs.push(self.unknown(&at, "a templated value ({{ }}): imgate cannot evaluate Kyverno variables"));
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
    fn foreach(&mut self, value: &Value, path: &str) -> Result<PerList, ImportError> {
        let Some(entries) = value.as_array() else {
            return Ok(PerList::of(Lists::ALL, self.unknown(path, "not a list")));
        };
        let mut out = PerList::default();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let list = entry.get("list").and_then(Value::as_str).unwrap_or_default();
            let Some(lists) = list_key(&jmespath_of(list), "") else {
                if mentions_image(entry) {
                    out = out.and(PerList::of(Lists::ALL, self.unknown(&format!("{at}.list"), &format!("a foreach list `{list}` the importer does not translate"))));
                } else {
                    self.not_images.push(at);
                }
                continue;
            };
            let Some(map) = entry.as_object() else { continue };
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
                        self.imported.refuse(&source, &field, "context lookups (apiCall, configMap, variables)", false);
                        continue;
                    }
                    _ => PerList::of(lists, self.unknown(&field, &format!("`{key}` in a foreach is not understood by the importer"))),
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
        Some((expr, default)) if ["`[]`", "'[]'", "[]", "''", "``"].contains(&default) => expr.to_string(),
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
    names
        .iter()
        .try_fold(Lists::default(), |acc, n| Lists::of_field(n).map(|l| acc.union(l)))
}

/// Whether any key or string below is about image references: an `image`,
/// `images` or `imageRef...` key, or an expression reading `.image` or
/// `images.` (not `imagePullPolicy` or `imagePullSecrets`).
pub(super) fn mentions_image(value: &Value) -> bool {
    let key = |k: &str| {
        let (_, name) = anchor(k);
        name == "image" || name == "images" || name.starts_with("imageRef")
    };
    match value {
        Value::String(s) => s.contains(".image") || s.contains("images.") || s.contains("image."),
        Value::Array(items) => items.iter().any(mentions_image),
        Value::Object(map) => map.iter().any(|(k, v)| key(k) || mentions_image(v)),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn read(yaml: &str) -> (PerList, Imported, Vec<String>) {
        let mut imported = Imported::default();
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let mut r = Reader {
            imported: &mut imported,
            source: "ClusterPolicy/t",
            about_images: false,
            not_images: Vec::new(),
        };
        let per = r.validate(&value, "spec.rules[0].validate").unwrap();
        let not_images = r.not_images.clone();
        (per, imported, not_images)
    }

    fn admits(imported: &Imported, cond: &Option<Cond>, image: &str) -> bool {
        cond.as_ref().is_none_or(|c| imported.atoms.admits(&c.strict(), image))
    }

    #[test]
    fn pattern_with_anchors_by_list() {
        let (per, imported, not_images) = read(
            "pattern:\n  spec:\n    securityContext: {runAsNonRoot: true}\n    containers:\n    - image: 'ghcr.io/*'\n      imagePullPolicy: Always\n    =(initContainers):\n    - image: 'ghcr.io/* | busybox*'\n",
        );
        assert!(admits(&imported, &per.containers, "ghcr.io/a:1"));
        assert!(!admits(&imported, &per.containers, "busybox:1"));
        assert!(admits(&imported, &per.init, "busybox:1"));
        assert!(per.ephemeral.is_none());
        assert_eq!(
            not_images,
            vec![
                "spec.rules[0].validate.pattern.spec.containers[0].imagePullPolicy",
                "spec.rules[0].validate.pattern.spec.securityContext"
            ]
        );
    }

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
    fn unknown_image_constructs_deny_everything_they_cover() {
        for yaml in [
            "pattern:\n  spec:\n    containers:\n    - X(image): '*'\n",
            "pattern:\n  spec:\n    containers:\n    - image: '{{ request.object.metadata.labels.registry }}/*'\n",
            "deny:\n  conditions:\n  - key: '{{ images.containers.*.registry }}'\n    operator: AnyNotIn\n    value: [ghcr.io]\n",
            "foreach:\n- list: request.object.spec.containers[?name=='app']\n  pattern:\n    image: 'ghcr.io/*'\n",
            "manifests:\n  attestors: [{entries: [{keys: {publicKeys: k}}]}]\n  imageRef: x\n",
        ] {
            let (per, imported, _) = read(yaml);
            let all = per.combined().expect(yaml);
            assert!(all.has_unknown(), "{yaml}");
            for image in ["ghcr.io/a:1", "registry.example.com/x", "nginx"] {
                assert!(!imported.atoms.admits(&all.strict(), image), "{yaml} {image}");
            }
            assert!(imported.findings.iter().any(|f| f.kind == FindingKind::Refused), "{yaml}");
        }
    }

    #[test]
    fn list_keys() {
        let all = Lists::ALL;
        assert_eq!(list_key("request.object.spec.[ephemeralContainers,initContainers,containers][].image", ".image"), Some(all));
        assert_eq!(list_key("request.object.spec.template.spec.containers[*].image", ".image").map(|l| l.containers), Some(true));
        assert_eq!(list_key("request.object.spec.containers", ""), Lists::of_field("containers"));
        assert_eq!(list_key("request.object.spec.volumes[].image", ".image"), None);
        assert_eq!(jmespath_of("{{ request.object.spec.containers[].image || `[]` }}"), "request.object.spec.containers[].image");
    }
}
