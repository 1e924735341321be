//! Reading the input: Kubernetes YAML (one or many documents, `List`
//! objects such as `kubectl get ... -o yaml` prints), within bounds on
//! bytes, nesting and object count, so a hostile file is a clear error
//! rather than a long wait.

use serde::Deserialize as _;
use serde_json::Value;

use super::{ImportError, Source, MAX_DEPTH, MAX_INPUT_BYTES, MAX_OBJECTS};

/// One object and where it was found.
#[derive(Debug)]
pub(super) struct Object {
    /// `file document 2 item 3`.
    pub origin: String,
    pub value: Value,
}

/// Every object of every source, `List` items flattened.
pub(super) fn objects(sources: &[Source]) -> Result<Vec<Object>, ImportError> {
    let total: usize = sources.iter().map(|s| s.text.len()).sum();
    for s in sources {
        if s.text.len() > MAX_INPUT_BYTES {
            return Err(ImportError::TooLarge {
                source_name: s.name.clone(),
                bytes: s.text.len(),
                max: MAX_INPUT_BYTES,
            });
        }
    }
    if total > MAX_INPUT_BYTES {
        return Err(ImportError::TooLarge {
            source_name: "the inputs together".into(),
            bytes: total,
            max: MAX_INPUT_BYTES,
        });
    }
    let mut out = Vec::new();
    for s in sources {
        let text = s.text.strip_prefix('\u{feff}').unwrap_or(&s.text);
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let origin = format!("{} document {}", s.name, i + 1);
            let value = Value::deserialize(document).map_err(|e| ImportError::Yaml {
                origin: origin.clone(),
                detail: e.to_string(),
            })?;
            if depth(&value) > MAX_DEPTH {
                return Err(ImportError::TooDeep {
                    origin,
                    max: MAX_DEPTH,
                });
            }
            push(&mut out, origin, value, 0)?;
        }
    }
    Ok(out)
}

fn push(
    out: &mut Vec<Object>,
    origin: String,
    value: Value,
    nesting: usize,
) -> Result<(), ImportError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(ref map) => {
            let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
            if kind.ends_with("List") && nesting < 2 {
                if let Some(Value::Array(items)) = map.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        push(
                            out,
                            format!("{origin} item {}", i + 1),
                            item.clone(),
                            nesting + 1,
                        )?;
                    }
                    return Ok(());
                }
            }
            if out.len() >= MAX_OBJECTS {
                return Err(ImportError::TooManyObjects { max: MAX_OBJECTS });
            }
            out.push(Object { origin, value });
            Ok(())
        }
        _ => Err(ImportError::NotAnObject { origin }),
    }
}

/// How deeply the value nests (a scalar is 0), counted without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}
