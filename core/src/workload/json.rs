//! The images of an object read as JSON (an AdmissionReview's object, a
//! manifest for `imgate admit`), each with the JSON pointer a patch replaces.

use serde_json::Value;

use super::{ImageField, PodCarrier, Workload};

/// One image field found in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodImage {
    /// JSON pointer to the image string, e.g.
    /// `/spec/template/spec/initContainers/0/image` or
    /// `/spec/volumes/2/image/reference`.
    pub pointer: String,
    /// The container's or volume's name (`#<index>` when it has none).
    pub owner: String,
    /// Which field it is.
    pub field: &'static ImageField,
    /// The image as written; `None` when the field is missing or not a
    /// string (the engine denies it).
    pub image: Option<String>,
    /// Pod or template.
    pub carrier: PodCarrier,
}

impl PodImage {
    /// `init container "setup"`, `image volume "models"`: for messages.
    pub fn describe(&self) -> String {
        format!("{} {:?}", self.field.noun, self.owner)
    }
}

/// An object whose shape hides where its images are: a member on the way to
/// (or inside) the pod spec has the wrong JSON type. Refused, never skipped:
/// an image nobody can find is an image nobody checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer} is {found}, not {expected}")]
pub struct MalformedObject {
    /// Where (`/spec/containers`; empty for the object itself).
    pub pointer: String,
    /// What it is (`a string`, `missing`).
    pub found: &'static str,
    /// What it must be (`an object`, `a list`).
    pub expected: &'static str,
}

fn malformed(pointer: String, value: Option<&Value>, expected: &'static str) -> MalformedObject {
    let found = match value {
        None | Some(Value::Null) => "missing",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "an object",
    };
    let pointer = if pointer.is_empty() {
        "the object".to_string()
    } else {
        pointer
    };
    MalformedObject {
        pointer,
        found,
        expected,
    }
}

/// Every image field of `object`, a `workload`: each element of each
/// [`super::IMAGE_FIELDS`] list of its pod spec (with `only_ephemeral`, just
/// ephemeral containers). A missing list is empty; a pod spec that is
/// missing, or a list or element of the wrong type, is [`MalformedObject`].
pub fn pod_images(
    object: &Value,
    workload: &Workload,
    only_ephemeral: bool,
) -> Result<Vec<PodImage>, MalformedObject> {
    let mut spec = object;
    let mut pointer = String::new();
    if !spec.is_object() {
        return Err(malformed(pointer, Some(spec), "an object"));
    }
    for member in workload.pod_spec {
        pointer.push('/');
        pointer.push_str(member);
        match spec.get(member) {
            Some(next @ Value::Object(_)) => spec = next,
            other => return Err(malformed(pointer, other, "an object")),
        }
    }
    let mut images = Vec::new();
    for field in workload.image_fields(only_ephemeral) {
        let list_pointer = format!("{pointer}/{}", field.list);
        let elements = match spec.get(field.list) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(elements)) => elements,
            other => return Err(malformed(list_pointer, other, "a list")),
        };
        for (index, element) in elements.iter().enumerate() {
            let element_pointer = format!("{list_pointer}/{index}");
            if !element.is_object() {
                return Err(malformed(element_pointer, Some(element), "an object"));
            }
            let first = field.image.first().and_then(|m| element.get(*m));
            if !field.every_element && matches!(first, None | Some(Value::Null)) {
                continue;
            }
            let image = field
                .image
                .iter()
                .try_fold(element, |value, member| value.get(member))
                .and_then(Value::as_str)
                .map(str::to_string);
            let owner = element
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{index}"), str::to_string);
            let mut pointer = element_pointer;
            for member in field.image {
                pointer.push('/');
                pointer.push_str(member);
            }
            images.push(PodImage {
                pointer,
                owner,
                field,
                image,
                carrier: workload.carrier,
            });
        }
    }
    Ok(images)
}
