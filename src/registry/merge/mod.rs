//! Strategic merge patch, driven by skiff's description of Kubernetes list semantics
//! (`openapi/list-semantics.yaml`) and the field-to-type graph of k8s-openapi's schemas.
//!
//! Objects merge key by key and `null` deletes a key; lists whose field is marked
//! `patch=merge(key)` merge element by element on the merge key, scalar lists marked
//! `patch=merge` are unioned, every other list is replaced. The directives `$patch`
//! (replace, merge, delete), `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` behave as upstream. Kinds skiff does not know (custom
//! resources) get the defaults everywhere: objects merge, lists are replaced.

mod order;
mod patch;
pub mod schemas;
pub mod semantics;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use schemas::{FieldType, KindSchema, Scope, TypeSchemas};
pub use semantics::{FieldSemantics, Semantics, SemanticsError, TypeSemantics, Union};

/// What went wrong applying a strategic merge patch.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The patch is malformed: a bad directive or directive format (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The patch cannot apply to this object: a list element without its merge key, lists
    /// of mixed types (HTTP 422).
    #[error("{0}")]
    Invalid(String),
    /// skiff's own list semantics description is broken (HTTP 500; a bug).
    #[error("list semantics are unavailable: {0}")]
    Semantics(#[from] SemanticsError),
}

impl MergeError {
    /// The HTTP status code the API answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            MergeError::BadRequest(_) => 400,
            MergeError::Invalid(_) => 422,
            MergeError::Semantics(_) => 500,
        }
    }
}

/// Applies a strategic merge patch to `original`, an object of apiVersion `api_version` and
/// `kind`, using upstream's merge keys, strategies and directives.
pub fn strategic_merge_patch(
    api_version: &str,
    kind: &str,
    original: &Value,
    patch: &Value,
) -> Result<Value, MergeError> {
    let Value::Object(patch) = patch else {
        return Err(MergeError::BadRequest("a strategic merge patch must be a JSON object".into()));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => serde_json::Map::new(),
        _ => {
            return Err(MergeError::BadRequest("the object to patch must be a JSON object".into()))
        }
    };
    let schemas = TypeSchemas::get();
    let patcher = patch::Patcher { schemas, semantics: Semantics::get()? };
    let root = schemas.root_type(api_version, kind).map(|name| FieldType::Named(name.to_string()));
    let merged = patcher.merge_map(original, patch.clone(), root.as_ref())?;
    Ok(Value::Object(merged))
}
