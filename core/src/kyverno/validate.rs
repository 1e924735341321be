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
    pub(super) fn of(lists: Lists, cond: Cond) -> PerList {
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
    pub(super) fn and(mut self, mut other: PerList) -> PerList {
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

/// Which structural part of a pattern a key leads to.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// A pod spec or a controller spec.
    Spec,
    /// A `template` or `jobTemplate`.
    Template,
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
    pub(super) fn unknown(&mut self, path: &str, reason: &str) -> Cond {
        self.about_images = true;
        let source = self.source.to_string();
        self.imported.refuse(&source, path, reason, true);
        Cond::Unknown
    }

    pub(super) fn stricter(&mut self, path: &str, message: &str) {
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
                "message"
                | "failureAction"
                | "failureActionOverrides"
                | "allowExistingViolations" => {}
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
                    self.imported.refuse(
                        &source,
                        &at,
                        "podSecurity (Pod Security Standards)",
                        false,
                    );
                }
                _ => {
                    if mentions_image(value) {
                        and(PerList::of(
                            Lists::ALL,
                            self.unknown(
                                &at,
                                &format!("`{key}` is not understood by the importer"),
                            ),
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
        self.template(map, path)
    }

    /// A structural key (spec, template): plain or `=()` is followed, any
    /// other anchor makes what is below it unknown.
    fn structural(
        &mut self,
        a: Anchor,
        value: &Value,
        path: &str,
        part: Part,
    ) -> Result<PerList, ImportError> {
        match (a, value.as_object()) {
            (Anchor::None | Anchor::Equality, Some(map)) => match part {
                Part::Spec => self.spec(map, path),
                Part::Template => self.template(map, path),
            },
            _ if !mentions_image(value) => {
                self.not_images.push(path.to_string());
                Ok(PerList::default())
            }
            _ => Ok(PerList::of(
                Lists::ALL,
                self.unknown(
                    path,
                    "an anchor or value the importer does not follow around image checks",
                ),
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
                out = out.and(self.structural(a, v, &at, Part::Template)?);
            } else {
                out = out.and(self.not_image(v, &at));
            }
        }
        Ok(out)
    }

    /// A mapping whose `spec` is followed: a pattern's root or a template.
    fn template(&mut self, map: &Map<String, Value>, path: &str) -> Result<PerList, ImportError> {
        let mut out = PerList::default();
        for (key, v) in map {
            let (a, name) = anchor(key);
            let at = format!("{path}.{key}");
            if name == "spec" {
                out = out.and(self.structural(a, v, &at, Part::Spec)?);
            } else {
                out = out.and(self.not_image(v, &at));
            }
        }
        Ok(out)
    }

    fn not_image(&mut self, value: &Value, path: &str) -> PerList {
        if mentions_image(value) {
            // An image check somewhere the importer does not look.
            let unknown = self.unknown(
                path,
                "an image check outside the pod spec's container lists",
            );
            return PerList::of(Lists::ALL, unknown);
        }
        self.not_images.push(path.to_string());
        PerList::default()
    }

    /// A container list pattern: one element every container must match.
    fn list(
        &mut self,
        a: Anchor,
        value: &Value,
        path: &str,
        lists: Lists,
    ) -> Result<PerList, ImportError> {
        match a {
            Anchor::Negation => {
                self.not_images.push(path.to_string());
                return Ok(PerList::default());
            }
            Anchor::Conditional | Anchor::Global | Anchor::AddIfNotPresent => {
                return Ok(PerList::of(
                    lists,
                    self.unknown(
                        path,
                        "an anchor on a container list the importer does not translate",
                    ),
                ));
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
                    self.unknown(
                        path,
                        "a container list pattern that is not exactly one element",
                    ),
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
pub(super) mod tests {
    use super::*;

    pub(in super::super) fn read(yaml: &str) -> (PerList, Imported, Vec<String>) {
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

    pub(in super::super) fn admits(imported: &Imported, cond: &Option<Cond>, image: &str) -> bool {
        cond.as_ref()
            .is_none_or(|c| imported.atoms.admits(&c.strict(), image))
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
}
