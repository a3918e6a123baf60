//! (in progress) Strategic merge patch, driven by skiff's description of Kubernetes list semantics.
use serde_json::Value;

/// What went wrong applying a strategic merge patch.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    Invalid(String),
}

/// Applies a strategic merge patch to `original`, an object of apiVersion `api_version` and
/// `kind`, using upstream's merge keys, strategies and directives.
pub fn strategic_merge_patch(
    _api_version: &str,
    _kind: &str,
    _original: &Value,
    _patch: &Value,
) -> Result<Value, MergeError> {
    Err(MergeError::Invalid("strategic merge patch is not implemented yet".into()))
}
