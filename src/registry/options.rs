//! Options the write verbs take, and the check that a request body names the resource, version,
//! namespace and name the URL does.

use serde_json::{json, Value};

use super::catalog::ResourceInfo;
use super::object;
use crate::apiserver::status::ApiError;
use crate::apiserver::UserInfo;

/// Options of create, update and patch.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// dryRun=All: validate and answer, but write nothing.
    pub dry_run: bool,
    /// The manager an Update is recorded under in managedFields.
    pub field_manager: String,
    pub user: Option<UserInfo>,
    /// The caller (server-side apply) has already updated managedFields.
    pub fields_recorded: bool,
    /// PUT/apply on a missing object may create it regardless of the strategy.
    pub create_if_missing: bool,
}

/// Which part of an object an update writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdatePart {
    /// The main resource: status changes are ignored.
    Main,
    /// /status: only status (and little metadata) changes.
    Status,
    /// A subresource that builds the whole new object itself (scale, finalize, approval).
    Whole(&'static str),
}

impl UpdatePart {
    /// The managedFields subresource name.
    pub fn subresource(&self) -> &'static str {
        match self {
            UpdatePart::Main => "",
            UpdatePart::Status => "status",
            UpdatePart::Whole(s) => s,
        }
    }
}

/// metav1.DeleteOptions, as far as the registry uses them.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    /// "Orphan", "Background" or "Foreground".
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a DeleteOptions body (JSON already parsed); unknown fields are ignored.
    pub fn from_value(v: &Value) -> Result<Self, ApiError> {
        let mut o = DeleteOptions::default();
        if v.is_null() {
            return Ok(o);
        }
        if !v.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        o.grace_period_seconds =
            match v.get("gracePeriodSeconds") {
                None | Some(Value::Null) => None,
                Some(g) => Some(g.as_i64().ok_or_else(|| {
                    ApiError::bad_request("gracePeriodSeconds must be an integer")
                })?),
            };
        if let Some(p) = v.get("preconditions") {
            o.precondition_uid = p.get("uid").and_then(Value::as_str).map(String::from);
            o.precondition_resource_version =
                p.get("resourceVersion").and_then(Value::as_str).map(String::from);
        }
        o.propagation_policy = v.get("propagationPolicy").and_then(Value::as_str).map(String::from);
        o.orphan_dependents = v.get("orphanDependents").and_then(Value::as_bool);
        if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
            o.dry_run = d.iter().any(|x| x == "All");
        }
        Ok(o)
    }
}

/// Checks a request body against the URL and fills in what it may omit: apiVersion, kind and
/// (for namespaced resources) metadata.namespace. `name` is the URL's name, if any.
pub fn check_body(
    res: &ResourceInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request was not a {} object",
            res.kind
        )));
    }
    let expected_av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if !av.is_empty() && av != expected_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({expected_av})"
            )))
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != res.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )))
        }
        _ => {}
    }
    obj["apiVersion"] = json!(expected_av);
    obj["kind"] = json!(res.kind);
    let meta = object::meta_mut(obj);
    if res.namespaced {
        let url_ns = namespace.unwrap_or("");
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                meta.insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    if let Some(url_name) = name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != url_name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({url_name})"
                )))
            }
            _ => {
                meta.insert("name".into(), json!(url_name));
            }
        }
    }
    Ok(())
}
