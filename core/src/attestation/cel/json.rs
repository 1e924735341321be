//! JSON as CEL values, built straight from the bytes: a statement's
//! predicate becomes a tree of cel's own map, list and scalar values once,
//! when the statement is collected, and every later evaluation borrows it.
//!
//! JSON integers become `int` (or `uint` above `i64::MAX`), other numbers
//! `double`, as a reader writing `== 0` expects. Nesting is bounded by
//! serde_json's recursion limit (128).

use std::collections::HashMap;
use std::fmt;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// A CEL value built from JSON.
pub(crate) type CelValue = Box<dyn Val + 'static>;

/// Deserializes one JSON value into a [`CelValue`].
pub(crate) struct Json(pub(crate) CelValue);

impl<'de> de::Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = CelValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<CelValue, E> {
        Ok(Box::new(CelBool::from(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<CelValue, E> {
        Ok(Box::new(CelInt::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<CelValue, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Box::new(CelInt::from(i)),
            Err(_) => Box::new(CelUInt::from(v)),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<CelValue, E> {
        Ok(Box::new(CelDouble::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<CelValue, E> {
        Ok(Box::new(CelString::from(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<CelValue, E> {
        Ok(Box::new(CelString::from(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<CelValue, E> {
        Ok(Box::new(CelNull))
    }

    fn visit_none<E: de::Error>(self) -> Result<CelValue, E> {
        Ok(Box::new(CelNull))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CelValue, A::Error> {
        let mut items: Vec<CelValue> = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Json(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Box::new(CelList::from(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CelValue, A::Error> {
        let mut entries: HashMap<CelMapKey<'static>, CelValue> = HashMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let Json(value) = map.next_value()?;
            entries.insert(CelMapKey::from(key), value);
        }
        Ok(Box::new(CelMap::from(entries)))
    }
}

/// The `predicate` member of a statement, as a CEL value (`null` when absent).
pub(crate) fn predicate(statement: &[u8]) -> Result<CelValue, String> {
    #[derive(serde::Deserialize)]
    struct Only {
        #[serde(default)]
        predicate: Option<Json>,
    }
    let only: Only = serde_json::from_slice(statement)
        .map_err(|err| format!("the statement is not JSON: {err}"))?;
    Ok(only
        .predicate
        .map_or_else(|| Box::new(CelNull) as CelValue, |j| j.0))
}

/// Any serialisable value (a subject, a signer) as a CEL value.
pub(crate) fn from_serde<T: serde::Serialize>(value: &T) -> Result<CelValue, String> {
    let bytes = serde_json::to_vec(value).map_err(|err| err.to_string())?;
    serde_json::from_slice::<Json>(&bytes)
        .map(|j| j.0)
        .map_err(|err| err.to_string())
}
