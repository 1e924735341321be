//! `policies.kyverno.io` ValidatingPolicy and ImageValidatingPolicy.

use serde_json::Value;

use super::model::Imported;
use super::ImportError;

pub(super) fn read(imported: &mut Imported, source: &str, _object: &Value) -> Result<bool, ImportError> {
    imported.refuse(source, "", "not yet", true);
    Ok(false)
}
