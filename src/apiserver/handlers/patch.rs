//! PATCH in its four flavours: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic
//! merge patch (the registry's merge module) and server-side apply.

use std::sync::Mutex;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::decode::{decode_object, FieldValidation};
use super::{subresources, write_options, Req};
use crate::apiserver::request::{body_format, parse_body, BodyFormat};
use crate::apiserver::status::{ApiError, StatusCause, StatusDetails};
use crate::registry::catalog::ResourceInfo;
use crate::registry::generic::{not_found, target};
use crate::registry::managed_fields;
use crate::registry::merge::TypeSchemas;
use crate::registry::options::check_body;
use crate::registry::{Registry, UpdatePart};

pub(super) async fn patch(reg: &Registry, mut r: Req) -> Result<Response, ApiError> {
    let format = body_format(&r.headers, true)?;
    let patch = parse_body(&r.body, format)?;
    if format == BodyFormat::StrategicMergePatch {
        // The first one generates the type schemas: off the async workers.
        crate::apiserver::lazy::ensure_built(TypeSchemas::is_built, || {
            TypeSchemas::get();
        })
        .await;
    }
    let part = match r.path.subresource.as_deref() {
        None => UpdatePart::Main,
        Some("status") => UpdatePart::Status,
        Some(other) => {
            let other = other.to_string();
            return subresources::patch(reg, r, &other, format, patch).await;
        }
    };
    let validation = FieldValidation::parse(r.query.get("fieldValidation"))?;
    let force = r.query.bool("force")?.unwrap_or(false);
    if force && format != BodyFormat::ApplyPatch {
        return Err(ApiError::bad_request(
            "force: Invalid value: true: may not be specified for non-apply patch",
        ));
    }
    let mut opts = write_options(&r)?;
    let name = r.name().to_string();
    let res = r.res;
    let warnings = Mutex::new(Vec::<String>::new());
    let (out, created) = if format == BodyFormat::ApplyPatch {
        let manager = r.query.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
            ApiError::bad_request("fieldManager: Required value: is required for apply patch")
        })?;
        let mut config = patch;
        if config.get("apiVersion").and_then(Value::as_str).unwrap_or("").is_empty() {
            return Err(ApiError::bad_request("apiVersion must be set in apply configuration"));
        }
        if config.get("kind").and_then(Value::as_str).unwrap_or("").is_empty() {
            return Err(ApiError::bad_request("kind must be set in apply configuration"));
        }
        check_body(res, r.path.namespace.as_deref(), Some(&name), &mut config)?;
        let (config, w) = decode_object(res, config, validation)?;
        r.shape.warnings.extend(w);
        opts.fields_recorded = true;
        opts.create_if_missing = part == UpdatePart::Main;
        let sub = part.subresource();
        let av = res.api_version();
        reg.update(res, r.namespace(), &name, part, &opts, &|current| {
            managed_fields::apply(current, &config, manager, &av, sub, force)
                .map_err(|c| apply_conflict(res, &name, &c))
        })
        .await?
    } else {
        reg.update(res, r.namespace(), &name, part, &opts, &|current| {
            let current = current.ok_or_else(|| not_found(res, &name))?;
            let patched = apply_patch(&res.api_version(), res.kind, format, current, &patch)?;
            let (obj, w) = decode_object(res, patched, validation)?;
            if let Ok(mut all) = warnings.lock() {
                *all = w;
            }
            Ok(obj)
        })
        .await?
    };
    if let Ok(w) = warnings.into_inner() {
        r.shape.warnings.extend(w);
    }
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(r.shape.object(code, res, out))
}

/// Applies a non-apply patch to an object.
pub(crate) fn apply_patch(
    api_version: &str,
    kind: &str,
    format: BodyFormat,
    current: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match format {
        BodyFormat::JsonPatch => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
                ApiError::bad_request(format!("the request body is not a valid JSON patch: {e}"))
            })?;
            // `doc` is a copy dropped on error, so no undo is needed; json-patch's undo panics
            // when a failed `move` cannot be rolled back.
            json_patch::patch_unsafe(&mut doc, &p)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
        }
        BodyFormat::MergePatch => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, patch);
        }
        BodyFormat::StrategicMergePatch => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a strategic merge patch must be a JSON object"));
            }
            doc = crate::registry::merge::strategic_merge_patch(api_version, kind, current, patch)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
        }
        _ => return Err(ApiError::unsupported_media_type("unsupported patch type")),
    }
    Ok(doc)
}

/// The 409 for apply conflicts, with one cause per conflicting field.
fn apply_conflict(
    res: &ResourceInfo,
    name: &str,
    conflicts: &[managed_fields::Conflict],
) -> ApiError {
    let causes = conflicts
        .iter()
        .map(|c| StatusCause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with \"{}\" using {}", c.manager, c.api_version),
            field: c.field.clone(),
        })
        .collect();
    let t = target(res, name);
    ApiError::new(409, "Conflict", managed_fields::conflict_message(conflicts)).with_details(
        StatusDetails {
            name: name.to_string(),
            group: res.group.to_string(),
            kind: t.resource.to_string(),
            causes,
            retry_after_seconds: None,
        },
    )
}
