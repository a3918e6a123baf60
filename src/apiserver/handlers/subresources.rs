//! Subresources other than status: scale (autoscaling/v1 Scale over spec.replicas), pods/binding
//! and the bindings resource, pods/eviction (honouring PodDisruptionBudgets), namespaces/finalize,
//! certificatesigningrequests/approval, pods/ephemeralcontainers and pods/resize.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::decode::{decode_object, FieldValidation};
use super::patch::apply_patch;
use super::write::read_object;
use super::{not_found_path, write_options, Req};
use crate::apiserver::request::{body_format, parse_body, BodyFormat};
use crate::apiserver::status::{ApiError, StatusCause, StatusDetails, Target};
use crate::registry::catalog::{catalog, ResourceInfo};
use crate::registry::generic::not_found;
use crate::registry::selector::LabelSelector;
use crate::registry::{object, validation, DeleteOptions, ListParams, Registry, UpdatePart};

/// GET of a subresource.
pub(super) async fn get(reg: &Registry, r: Req, sub: &str) -> Result<Response, ApiError> {
    let obj = reg.get(r.res, r.namespace(), r.name()).await?;
    match sub {
        "scale" => Ok(r.shape.encode(StatusCode::OK, &scale_of(r.res, &obj))),
        "status" | "ephemeralcontainers" | "resize" | "approval" => {
            Ok(r.shape.object(StatusCode::OK, r.res, obj))
        }
        _ => Err(not_found_path()),
    }
}

/// POST to a subresource.
pub(super) async fn create(reg: &Registry, r: Req, sub: &str) -> Result<Response, ApiError> {
    match (r.res.plural, sub) {
        ("pods", "binding") => {
            let name = r.name().to_string();
            bind(reg, r, &name).await
        }
        ("pods", "eviction") => evict(reg, r).await,
        _ => Err(not_found_path()),
    }
}

/// PUT to a subresource (status is handled by the generic update).
pub(super) async fn update(reg: &Registry, mut r: Req, sub: &str) -> Result<Response, ApiError> {
    if sub == "scale" {
        let format = body_format(&r.headers, false)?;
        let scale = parse_body(&r.body, format)?;
        return write_scale(reg, r, scale).await;
    }
    let name = r.name().to_string();
    let body = read_object(&mut r, Some(&name))?;
    write_part(reg, r, sub, body).await
}

/// PATCH of a subresource.
pub(super) async fn patch(
    reg: &Registry,
    r: Req,
    sub: &str,
    format: BodyFormat,
    patch: Value,
) -> Result<Response, ApiError> {
    if format == BodyFormat::ApplyPatch {
        return Err(ApiError::unsupported_media_type(format!(
            "apply patch is not supported for the {sub} subresource"
        )));
    }
    let current = reg.get(r.res, r.namespace(), r.name()).await?;
    let current_rv = object::resource_version(&current).to_string();
    // The resourceVersion read here is no precondition: only one the patch itself sets is (as
    // upstream, a patch applies to whatever is current when it is written).
    let unconditional = |mut patched: Value| {
        if object::resource_version(&patched) == current_rv {
            set_precondition(&mut patched, "");
        }
        patched
    };
    if sub == "scale" {
        let scale = scale_of(r.res, &current);
        let patched = apply_patch("autoscaling/v1", "Scale", format, &scale, &patch)?;
        return write_scale(reg, r, unconditional(patched)).await;
    }
    let patched = apply_patch(&r.res.api_version(), r.res.kind, format, &current, &patch)?;
    let (body, _) = decode_object(r.res, unconditional(patched), FieldValidation::Ignore)?;
    write_part(reg, r, sub, body).await
}

/// Writes the part of `body` a subresource may change into the stored object.
async fn write_part(reg: &Registry, r: Req, sub: &str, body: Value) -> Result<Response, ApiError> {
    let (res, name) = (r.res, r.name().to_string());
    let fields: &[&str] = match (res.plural, sub) {
        ("namespaces", "finalize") => &["spec.finalizers"],
        ("certificatesigningrequests", "approval") => &["status.conditions"],
        ("pods", "ephemeralcontainers") => &["spec.ephemeralContainers"],
        ("pods", "resize") => &["spec.containers"],
        _ => return Err(not_found_path()),
    };
    let part = UpdatePart::Whole(match sub {
        "finalize" => "finalize",
        "approval" => "approval",
        "ephemeralcontainers" => "ephemeralcontainers",
        _ => "resize",
    });
    let opts = write_options(&r)?;
    let body_rv = object::resource_version(&body).to_string();
    let (out, _) = reg
        .update(res, r.namespace(), &name, part, &opts, &|current| {
            let mut new = current.cloned().ok_or_else(|| not_found(res, &name))?;
            for f in fields {
                match object::path(&body, f) {
                    Some(v) => object::set_at(&mut new, f, v.clone()),
                    None => {
                        object::remove_at(&mut new, f);
                    }
                }
            }
            set_precondition(&mut new, &body_rv);
            Ok(new)
        })
        .await?;
    Ok(r.shape.object(StatusCode::OK, res, out))
}

/// Sets the resourceVersion precondition a subresource body carried (none: unconditional).
fn set_precondition(obj: &mut Value, rv: &str) {
    let meta = object::meta_mut(obj);
    if rv.is_empty() {
        meta.remove("resourceVersion");
    } else {
        meta.insert("resourceVersion".into(), json!(rv));
    }
}

/// The autoscaling/v1 Scale view of a scalable object.
pub fn scale_of(res: &ResourceInfo, obj: &Value) -> Value {
    let selector = match object::path(obj, "spec.selector") {
        Some(sel) if res.plural == "replicationcontrollers" => {
            let mut parts: Vec<String> =
                object::string_map(Some(sel)).iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.sort();
            parts.join(",")
        }
        sel => LabelSelector::from_metav1(sel).map(|s| s.to_string()).unwrap_or_default(),
    };
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object::path(obj, "spec.replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object::path(obj, "status.replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// Applies a Scale's spec.replicas to its object.
async fn write_scale(reg: &Registry, r: Req, scale: Value) -> Result<Response, ApiError> {
    let (res, name) = (r.res, r.name().to_string());
    match scale.get("kind").and_then(Value::as_str) {
        Some("Scale") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({other}) does not match the expected kind (Scale)"
            )))
        }
    }
    let replicas = object::path(&scale, "spec.replicas").and_then(Value::as_i64).unwrap_or(0);
    if replicas < 0 {
        let cause = validation::invalid(
            "spec.replicas",
            &json!(replicas),
            "must be greater than or equal to 0",
        );
        return Err(ApiError::invalid("autoscaling", "Scale", &name, vec![cause]));
    }
    let rv = object::resource_version(&scale).to_string();
    let opts = write_options(&r)?;
    let (out, _) = reg
        .update(res, r.namespace(), &name, UpdatePart::Whole("scale"), &opts, &|current| {
            let mut new = current.cloned().ok_or_else(|| not_found(res, &name))?;
            object::set_at(&mut new, "spec.replicas", json!(replicas));
            set_precondition(&mut new, &rv);
            Ok(new)
        })
        .await?;
    Ok(r.shape.encode(StatusCode::OK, &scale_of(res, &out)))
}

/// Assigns a pod to a node (pods/binding, and the bindings resource).
pub(super) async fn bind(reg: &Registry, r: Req, pod_name: &str) -> Result<Response, ApiError> {
    let format = body_format(&r.headers, false)?;
    let binding = parse_body(&r.body, format)?;
    let pods = catalog().find("", "v1", "pods").ok_or_else(not_found_path)?;
    let node = object::str_at(&binding, "target.name").unwrap_or("").to_string();
    if node.is_empty() {
        let cause = validation::required("target.name", "");
        return Err(ApiError::invalid("", "Binding", pod_name, vec![cause]));
    }
    if let Some(kind) =
        object::str_at(&binding, "target.kind").filter(|k| !k.is_empty() && *k != "Node")
    {
        let cause = validation::not_supported("target.kind", &json!(kind), &["Node", "<empty>"]);
        return Err(ApiError::invalid("", "Binding", pod_name, vec![cause]));
    }
    let annotations = object::path(&binding, "metadata.annotations").cloned();
    let opts = write_options(&r)?;
    let name = pod_name.to_string();
    reg.update(pods, r.namespace(), &name, UpdatePart::Whole("binding"), &opts, &|current| {
        let mut pod = current.cloned().ok_or_else(|| not_found(pods, &name))?;
        let binding_target = Target { group: "", resource: "pods/binding", name: &name };
        if object::is_deleting(&pod) {
            return Err(ApiError::conflict(
                binding_target,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(existing) = object::str_at(&pod, "spec.nodeName").filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                binding_target,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        object::set_at(&mut pod, "spec.nodeName", json!(node));
        if let Some(Value::Object(a)) = &annotations {
            let meta = object::meta_mut(&mut pod);
            let target = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(t) = target.as_object_mut() {
                for (k, v) in a {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        set_condition(&mut pod, "PodScheduled", "True");
        object::meta_mut(&mut pod).remove("resourceVersion");
        Ok(pod)
    })
    .await?;
    Ok(r.shape.encode(StatusCode::CREATED, &success(201)))
}

/// Evicts a pod: a delete that PodDisruptionBudgets may refuse (429).
async fn evict(reg: &Registry, r: Req) -> Result<Response, ApiError> {
    let format = body_format(&r.headers, false)?;
    let eviction = if r.body.is_empty() { json!({}) } else { parse_body(&r.body, format)? };
    let pods = r.res;
    let name = r.name().to_string();
    let pod = reg.get(pods, r.namespace(), &name).await?;
    let phase = object::str_at(&pod, "status.phase").unwrap_or("");
    let terminal = matches!(phase, "Succeeded" | "Failed" | "Pending") || object::is_deleting(&pod);
    if !terminal {
        check_disruption_budgets(reg, &r, &pod).await?;
    }
    let mut opts =
        DeleteOptions::from_value(eviction.get("deleteOptions").unwrap_or(&Value::Null))?;
    opts.dry_run = opts.dry_run || r.query.dry_run()?;
    reg.delete(pods, r.namespace(), &name, &opts).await?;
    Ok(r.shape.encode(StatusCode::CREATED, &success(201)))
}

async fn check_disruption_budgets(reg: &Registry, r: &Req, pod: &Value) -> Result<(), ApiError> {
    let Some(pdbs) = catalog().find("policy", "v1", "poddisruptionbudgets") else { return Ok(()) };
    let list = reg.list(pdbs, r.namespace(), &ListParams::default()).await?;
    let matching: Vec<&Value> = list
        .items
        .iter()
        .filter(|pdb| {
            LabelSelector::from_metav1(object::path(pdb, "spec.selector"))
                .map(|s| !s.is_empty() && s.matches_object(pod))
                .unwrap_or(false)
        })
        .collect();
    if matching.len() > 1 {
        return Err(ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."));
    }
    if let Some(pdb) = matching.first() {
        let allowed =
            object::path(pdb, "status.disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0);
        if allowed < 1 {
            let mut e = ApiError::too_many_requests(10);
            e.message = "Cannot evict pod as it would violate the pod's disruption budget.".into();
            e.details = Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: "DisruptionBudget".into(),
                    message: format!(
                        "The disruption budget {} needs {} healthy pods and has {} currently",
                        object::name(pdb),
                        object::path(pdb, "status.desiredHealthy")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        object::path(pdb, "status.currentHealthy")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    ),
                    field: String::new(),
                }],
                ..Default::default()
            });
            return Err(e);
        }
    }
    Ok(())
}

/// Sets (or adds) a status condition of `kind` with `status`.
fn set_condition(obj: &mut Value, kind: &str, status: &str) {
    let now = object::now_rfc3339();
    let Some(st) = object::ensure_object(obj, "status") else { return };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conds.as_array_mut() else { return };
    match list.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)) {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some(status) {
                c["status"] = json!(status);
                c["lastTransitionTime"] = json!(now);
            }
        }
        None => list.push(json!({"type": kind, "status": status, "lastTransitionTime": now})),
    }
}

fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
