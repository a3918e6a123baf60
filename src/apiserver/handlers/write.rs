//! create (POST), update (PUT, including /status), delete and deletecollection.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::decode::{decode_object, FieldValidation};
use super::read::list_params;
use super::response::success_status;
use super::{subresources, write_options, Req};
use crate::apiserver::request::{body_format, parse_body};
use crate::apiserver::status::ApiError;
use crate::registry::options::check_body;
use crate::registry::{DeleteOptions, Registry, UpdatePart};

pub(super) async fn create(reg: &Registry, mut r: Req) -> Result<Response, ApiError> {
    if r.res.plural == "bindings" {
        let format = body_format(&r.headers, false)?;
        let body = parse_body(&r.body, format)?;
        let pod = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
        return subresources::bind(reg, r, &pod).await;
    }
    let obj = read_object(&mut r, None)?;
    let opts = write_options(&r)?;
    let created = reg.create(r.res, obj, &opts).await?;
    Ok(r.shape.object(StatusCode::CREATED, r.res, created))
}

pub(super) async fn update(reg: &Registry, mut r: Req) -> Result<Response, ApiError> {
    let part = match r.path.subresource.as_deref() {
        None => UpdatePart::Main,
        Some("status") => UpdatePart::Status,
        Some(other) => {
            let other = other.to_string();
            return subresources::update(reg, r, &other).await;
        }
    };
    let name = r.name().to_string();
    let obj = read_object(&mut r, Some(&name))?;
    let opts = write_options(&r)?;
    let (out, created) =
        reg.update(r.res, r.namespace(), &name, part, &opts, &|_current| Ok(obj.clone())).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(r.shape.object(code, r.res, out))
}

pub(super) async fn delete(reg: &Registry, r: Req) -> Result<Response, ApiError> {
    let opts = delete_options(&r)?;
    let outcome = reg.delete(r.res, r.namespace(), r.name(), &opts).await?;
    let code = if !outcome.deleted && opts.orphan_dependents == Some(false) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    if outcome.deleted && !r.res.strategy.return_deleted_object() {
        return Ok(r.shape.encode(code, &success_status(r.res, &outcome.object)));
    }
    Ok(r.shape.object(code, r.res, outcome.object))
}

pub(super) async fn delete_collection(reg: &Registry, r: Req) -> Result<Response, ApiError> {
    let opts = delete_options(&r)?;
    let params = list_params(&r)?;
    let items = reg.delete_collection(r.res, r.namespace(), &params, &opts).await?;
    let body = json!({
        "kind": r.res.list_kind,
        "apiVersion": r.res.api_version(),
        "metadata": {},
        "items": items,
    });
    Ok(r.shape.encode(StatusCode::OK, &body))
}

/// Reads the body as an object of the request's resource: format, URL agreement, typed decode
/// and field validation (warnings go to the response).
pub(super) fn read_object(r: &mut Req, name: Option<&str>) -> Result<Value, ApiError> {
    let format = body_format(&r.headers, false)?;
    let mut value = parse_body(&r.body, format)?;
    check_body(r.res, r.path.namespace.as_deref(), name, &mut value)?;
    let validation = FieldValidation::parse(r.query.get("fieldValidation"))?;
    let (obj, warnings) = decode_object(r.res, value, validation)?;
    r.shape.warnings.extend(warnings);
    Ok(obj)
}

/// DeleteOptions from the body (if any) and the query.
fn delete_options(r: &Req) -> Result<DeleteOptions, ApiError> {
    let mut opts = if r.body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        let format = body_format(&r.headers, false)?;
        DeleteOptions::from_value(&parse_body(&r.body, format)?)?
    };
    if let Some(g) = r.query.int("gracePeriodSeconds")? {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = r.query.get("propagationPolicy").filter(|p| !p.is_empty()) {
        opts.propagation_policy = Some(p.to_string());
    }
    if let Some(o) = r.query.bool("orphanDependents")? {
        opts.orphan_dependents = Some(o);
    }
    opts.dry_run = opts.dry_run || r.query.dry_run()?;
    Ok(opts)
}
