//! The reviewed object, read sparsely: only the members the engine looks at
//! become JSON values; everything else is skipped while parsing.
//!
//! A real object is mostly what admission never reads (managedFields,
//! labels and annotations, env, probes, resources…), often tens of
//! kilobytes, and building all of it into a `serde_json::Value` tree costs
//! an allocation per member. What is kept derives from core's workload
//! tables, so a field added there is read here too:
//!
//! - `apiVersion`, `kind`, `metadata.{name, generateName, namespace}`;
//! - the members on the way to a pod spec, for every kind of
//!   `workload::WORKLOADS` (`spec`, `spec.template.spec`,
//!   `spec.jobTemplate.spec.template.spec`, `template.spec`, and the legacy
//!   `EphemeralContainers` object's top level);
//! - in a pod spec, every list of `workload::IMAGE_FIELDS` (each element's
//!   `name` and the first member of its image path, every element kept so
//!   JSON pointers by index still point at the same element), the pull
//!   secrets and the service account.
//!
//! A member of an unexpected type (a `containers` that is a string) is kept
//! whole, as the full parse would have kept it, so the engine judges the
//! same value either way.

use std::borrow::Cow;
use std::fmt;

use imgate_core::workload::{IMAGE_FIELDS, PULL_SECRETS, SERVICE_ACCOUNT, WORKLOADS};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// `object` / `oldObject` of a request: `None` when absent or `null`.
pub fn object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    let value = Sparse(Shape::OBJECT).deserialize(deserializer)?;
    Ok((!value.is_null()).then_some(value))
}

/// Which members of a JSON value the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// On the way to pod specs: `depth` members below the object, with
    /// `workloads` (bit `i` for `WORKLOADS[i]`) the kinds whose pod-spec
    /// path has come this way.
    Trail {
        depth: usize,
        workloads: u32,
    },
    Metadata,
    /// A list of [`IMAGE_FIELDS`]: every element, each an
    /// [`Shape::ImageElement`].
    ImageList,
    ImageElement,
    /// The whole value.
    Whole,
}

// One bit per workload kind.
const _: () = assert!(WORKLOADS.len() <= 32);

impl Shape {
    /// The object itself: every kind's path starts here.
    const OBJECT: Shape = Shape::Trail {
        depth: 0,
        workloads: u32::MAX >> (32 - WORKLOADS.len()),
    };

    /// The shape of member `key`, or `None` to skip it.
    fn member(self, key: &str) -> Option<Shape> {
        match self {
            Shape::Trail { depth, workloads } => {
                if depth == 0 {
                    match key {
                        "apiVersion" | "kind" => return Some(Shape::Whole),
                        "metadata" => return Some(Shape::Metadata),
                        _ => {}
                    }
                }
                let on_trail = || {
                    WORKLOADS
                        .iter()
                        .enumerate()
                        .filter(move |(i, _)| workloads & (1 << i) != 0)
                };
                if on_trail().any(|(_, w)| w.pod_spec.len() == depth) {
                    if IMAGE_FIELDS.iter().any(|f| f.list == key) {
                        return Some(Shape::ImageList);
                    }
                    if key == PULL_SECRETS || SERVICE_ACCOUNT.contains(&key) {
                        return Some(Shape::Whole);
                    }
                }
                let next = on_trail()
                    .filter(|(_, w)| w.pod_spec.get(depth) == Some(&key))
                    .fold(0, |bits, (i, _)| bits | (1 << i));
                (next != 0).then_some(Shape::Trail {
                    depth: depth + 1,
                    workloads: next,
                })
            }
            Shape::Metadata => {
                matches!(key, "name" | "generateName" | "namespace").then_some(Shape::Whole)
            }
            Shape::ImageElement => (key == "name"
                || IMAGE_FIELDS.iter().any(|f| f.image.first() == Some(&key)))
            .then_some(Shape::Whole),
            Shape::ImageList | Shape::Whole => None,
        }
    }

    /// The shape of an array element.
    fn element(self) -> Shape {
        match self {
            Shape::ImageList => Shape::ImageElement,
            _ => Shape::Whole,
        }
    }
}

/// Reads a value of `Shape`.
struct Sparse(Shape);

impl<'de> DeserializeSeed<'de> for Sparse {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.0 {
            Shape::Whole => Value::deserialize(deserializer),
            shape => deserializer.deserialize_any(SparseVisitor(shape)),
        }
    }
}

struct SparseVisitor(Shape);

impl<'de> Visitor<'de> for SparseVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Sparse(self.0).deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(value) = seq.next_element_seed(Sparse(self.0.element()))? {
            out.push(value);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match self.0.member(&key) {
                Some(shape) => {
                    let value = map.next_value_seed(Sparse(shape))?;
                    out.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A member name, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use imgate_core::workload::{example_object, pod_images, workload};

    use super::*;

    fn sparse(value: &Value) -> Option<Value> {
        let text = serde_json::to_string(value).unwrap();
        object(&mut serde_json::Deserializer::from_str(&text)).unwrap()
    }

    fn pod_spec() -> Value {
        json!({
            "serviceAccountName": "builder",
            "imagePullSecrets": [{"name": "regcred"}],
            "initContainers": [{"name": "init", "image": "i:1", "command": ["sh"]}],
            "containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}],
                 "resources": {"limits": {"cpu": "1"}}},
                {"name": "no-image"},
                {"name": "b", "image": "b:1", "ports": [{"containerPort": 80}]}
            ],
            "ephemeralContainers": [{"name": "debug", "image": "busybox", "tty": true}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "models", "image": {"reference": "m:1"}}],
            "nodeSelector": {"disk": "ssd"}
        })
    }

    fn metadata() -> Value {
        json!({
            "name": "web", "generateName": "web-", "namespace": "shop",
            "labels": {"app": "web"}, "annotations": {"a": "b"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
        })
    }

    /// Every kind the engine reads: the sparse object gives the same image
    /// sites (pointers, names, images), pull secrets and name as the full one.
    #[test]
    fn the_engine_reads_the_same_from_the_sparse_object() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()});
        let cases = [
            (
                "",
                "Pod",
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata(), "spec": pod_spec(), "status": {"phase": "Running"}}),
            ),
            (
                "apps",
                "Deployment",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(), "spec": {"replicas": 3, "selector": {}, "template": template.clone()}}),
            ),
            (
                "batch",
                "Job",
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(), "spec": {"backoffLimit": 1, "template": template.clone()}}),
            ),
            (
                "batch",
                "CronJob",
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata(), "spec": {"schedule": "* * * * *", "jobTemplate": {"metadata": {}, "spec": {"template": template.clone()}}}}),
            ),
        ];
        for (group, kind, full) in cases {
            let thin = sparse(&full).unwrap();
            let workload = workload(group, kind).unwrap();
            let sites = pod_images(&full, workload, false).unwrap();
            assert_eq!(sites.len(), 6, "{kind}");
            assert_eq!(pod_images(&thin, workload, false).unwrap(), sites, "{kind}");
            for site in &sites {
                assert_eq!(thin.pointer(&site.pointer), full.pointer(&site.pointer));
            }
            let spec = |v: &Value| {
                let spec = v.pointer(&workload.pointer()).unwrap();
                (
                    spec.get("imagePullSecrets").cloned(),
                    spec.get("serviceAccountName").cloned(),
                )
            };
            assert_eq!(spec(&thin), spec(&full), "{kind}");
            assert_eq!(thin["metadata"]["name"], "web");
            assert_eq!(thin["metadata"]["generateName"], "web-");
            assert_eq!(thin["metadata"]["namespace"], "shop");
            assert_eq!(thin["kind"], kind);
            // What the engine does not read is not there.
            let text = thin.to_string();
            for skipped in [
                "managedFields",
                "labels",
                "env",
                "resources",
                "emptyDir",
                "replicas",
                "status",
                "command",
            ] {
                assert!(!text.contains(skipped), "{kind}: {skipped} in {text}");
            }
        }
    }

    #[test]
    fn the_legacy_ephemeral_object_and_odd_values_are_kept() {
        let legacy = json!({"kind": "EphemeralContainers", "metadata": metadata(),
            "ephemeralContainers": [{"name": "debug", "image": "busybox", "stdin": true}]});
        let thin = sparse(&legacy).unwrap();
        let kind = workload("", "EphemeralContainers").unwrap();
        let sites = pod_images(&thin, kind, false).unwrap();
        assert_eq!(sites, pod_images(&legacy, kind, false).unwrap());
        assert_eq!(sites.len(), 1);

        // Members of an unexpected type are kept as they are.
        let odd = json!({"spec": {"containers": "not a list", "template": 7,
            "initContainers": [3, null, {"image": 5}]}, "metadata": ["x"]});
        assert_eq!(sparse(&odd).unwrap(), odd);
        assert_eq!(sparse(&Value::Null), None);
        assert_eq!(sparse(&json!("text")), Some(json!("text")));
    }

    /// Every (workload, image field) row of the tables survives the sparse
    /// read: a field the reader dropped would be an image nobody checks.
    #[test]
    fn every_workload_and_image_field_is_kept() {
        for workload in WORKLOADS {
            for field in workload.image_fields(false) {
                let full = example_object(workload, field, "registry.example/app:1");
                let thin = sparse(&full).unwrap();
                let sites = pod_images(&full, workload, false).unwrap();
                assert_eq!(sites.len(), 1);
                assert_eq!(
                    pod_images(&thin, workload, false).unwrap(),
                    sites,
                    "{} {}: {thin}",
                    workload.kind,
                    field.list
                );
            }
        }
    }

    #[test]
    fn escaped_member_names_and_duplicates_read_as_the_full_parse_does() {
        let text =
            r#"{"sp\u0065c": {"containers": [{"name": "a", "image": "x:1", "image": "y:2"}]}}"#;
        let thin = object(&mut serde_json::Deserializer::from_str(text))
            .unwrap()
            .unwrap();
        let full: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            thin.pointer("/spec/containers/0/image"),
            full.pointer("/spec/containers/0/image")
        );
        assert_eq!(
            thin.pointer("/spec/containers/0/image"),
            Some(&json!("y:2"))
        );
    }
}
