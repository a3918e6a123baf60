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
use crate::registry::served::ServedObject;
use crate::registry::{
    object, validation, DeleteOptions, ListParams, Registry, UpdatePart, WriteOptions,
};

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
/// What a binding reads or changes of a pod.
const BINDING_FIELDS: &[&str] =
    &["metadata.deletionTimestamp", "metadata.annotations", "spec.nodeName", "status.conditions"];

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
    // A binding edits the pod in place and leaves managedFields alone, as upstream's (it
    // writes the pod without the field manager); recording it cost a tenth of the scheduler
    // benchmark's CPU, copying the pod for the general update another tenth, and decoding the
    // fields it does not touch another tenth.
    let opts = write_options(&r)?;
    let name = pod_name.to_string();
    reg.edit(pods, r.namespace(), &name, &opts, BINDING_FIELDS, &|pod| {
        let binding_target = Target { group: "", resource: "pods/binding", name: &name };
        if object::is_deleting(pod) {
            return Err(ApiError::conflict(
                binding_target,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(existing) = object::str_at(pod, "spec.nodeName").filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                binding_target,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        object::set_at(pod, "spec.nodeName", json!(node));
        if let Some(Value::Object(a)) = &annotations {
            let meta = object::meta_mut(pod);
            let target = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(t) = target.as_object_mut() {
                for (k, v) in a {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        set_condition(pod, "PodScheduled", "True");
        Ok(())
    })
    .await?;
    Ok(r.shape.encode(StatusCode::CREATED, &success(201)))
}

/// Evicts a pod: a delete that PodDisruptionBudgets may refuse (429), as upstream's eviction
/// subresource. A pod that is already disrupted (Succeeded, Failed, Pending or being deleted) is
/// deleted without looking at budgets. Otherwise the one budget selecting the pod must allow a
/// disruption: the eviction takes it from status.disruptionsAllowed and records the pod in
/// status.disruptedPods (compare-and-swap, so concurrent evictions cannot overdraw it) before
/// the delete. An unready pod may go without using the budget when the budget's
/// unhealthyPodEvictionPolicy says so (AlwaysAllow, or IfHealthyBudget while enough pods are
/// healthy); that delete is conditional on the pod's resourceVersion. The pod gets the
/// DisruptionTarget condition before it is deleted.
async fn evict(reg: &Registry, r: Req) -> Result<Response, ApiError> {
    let format = body_format(&r.headers, false)?;
    let eviction = if r.body.is_empty() { json!({}) } else { parse_body(&r.body, format)? };
    let name = r.name().to_string();
    if !r.body.is_empty() && object::str_at(&eviction, "metadata.name").unwrap_or("") != name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let mut opts =
        DeleteOptions::from_value(eviction.get("deleteOptions").unwrap_or(&Value::Null))?;
    opts.dry_run = opts.dry_run || r.query.dry_run()?;
    let caller_rv = opts.precondition_resource_version.as_deref().is_some_and(|v| !v.is_empty());

    // A pod already disrupted goes at once (conflicts retried unless the caller set a version).
    let mut attempt = 0;
    let pod = loop {
        let pod = reg.get(r.res, r.namespace(), &name).await?;
        if !eviction_ignores_budgets(&pod) {
            break pod;
        }
        let mut o = opts.clone();
        let phase = object::str_at(&pod, "status.phase").unwrap_or("");
        let terminal = matches!(phase, "Succeeded" | "Failed") || object::is_deleting(&pod);
        if !terminal && !caller_rv {
            o.precondition_resource_version = Some(object::resource_version(&pod).to_string());
        }
        match mark_and_delete(reg, &r, &name, &o).await {
            Ok(()) => return Ok(r.shape.encode(StatusCode::CREATED, &success(201))),
            Err(e) if e.code == 409 && !caller_rv && attempt < EVICTION_RETRIES => {
                attempt += 1;
                tokio::time::sleep(EVICTION_RETRY_DELAY).await;
            }
            Err(e) => return Err(e),
        }
    };

    let budgets = budgets_of(reg, &r, &pod).await?;
    if budgets.len() > 1 {
        return Err(ApiError::new(
            500,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let mut unhealthy_delete: Option<String> = None;
    if let Some(pdb) = budgets.first() {
        let pdb_name = object::name(pdb).to_string();
        if !pod_is_ready(&pod) && unhealthy_pod_may_go(pdb) {
            unhealthy_delete = Some(pdb_name);
        } else {
            take_disruption(reg, &r, &pdb_name, &name, opts.dry_run).await?;
        }
    }
    let mut o = opts.clone();
    if unhealthy_delete.is_some() {
        o.precondition_resource_version = Some(object::resource_version(&pod).to_string());
    }
    match mark_and_delete(reg, &r, &name, &o).await {
        Ok(()) => Ok(r.shape.encode(StatusCode::CREATED, &success(201))),
        Err(e) if e.code == 409 && !caller_rv => match unhealthy_delete {
            // The pod changed (it may be ready now): the client should try again.
            Some(pdb_name) => Err(budget_still_processing(&pdb_name)),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// How often, and how far apart, an eviction retries a conflicting delete (upstream: 20, 500ms).
const EVICTION_RETRIES: usize = 20;
const EVICTION_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(500);
/// Past this many entries in status.disruptedPods, evictions are refused (upstream's bound).
const MAX_DISRUPTED_PODS: usize = 2000;
const BUDGET_MESSAGE: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Whether the pod is already disrupted, so budgets need not be asked.
fn eviction_ignores_budgets(pod: &Value) -> bool {
    let phase = object::str_at(pod, "status.phase").unwrap_or("");
    matches!(phase, "Succeeded" | "Failed" | "Pending") || object::is_deleting(pod)
}

fn pod_is_ready(pod: &Value) -> bool {
    object::path(pod, "status.conditions").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    })
}

/// Whether an unready pod may be evicted without using the budget.
fn unhealthy_pod_may_go(pdb: &Value) -> bool {
    if object::str_at(pdb, "spec.unhealthyPodEvictionPolicy") == Some("AlwaysAllow") {
        return true;
    }
    let int = |f: &str| object::path(pdb, f).and_then(Value::as_i64).unwrap_or(0);
    let desired = int("status.desiredHealthy");
    int("status.currentHealthy") >= desired && desired > 0
}

/// The budgets in the pod's namespace whose selector matches it (a missing selector matches
/// nothing, an empty one everything; an invalid one nothing).
async fn budgets_of(reg: &Registry, r: &Req, pod: &Value) -> Result<Vec<Value>, ApiError> {
    let Some(pdbs) = catalog().find("policy", "v1", "poddisruptionbudgets") else {
        return Ok(vec![]);
    };
    let list = reg.list(pdbs, r.namespace(), &ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .map(ServedObject::into_value)
        .filter(|pdb| {
            LabelSelector::from_metav1(object::path(pdb, "spec.selector"))
                .is_ok_and(|s| s.matches_object(pod))
        })
        .collect())
}

/// Takes one disruption from the budget (re-read on every conflict), recording the pod in
/// status.disruptedPods; refuses with 429 when none is left or the budget is not yet processed.
async fn take_disruption(
    reg: &Registry,
    r: &Req,
    pdb_name: &str,
    pod_name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let pdbs = catalog().find("policy", "v1", "poddisruptionbudgets").ok_or_else(not_found_path)?;
    let write =
        WriteOptions { dry_run, field_manager: "kube-apiserver".into(), ..Default::default() };
    reg.update(pdbs, r.namespace(), pdb_name, UpdatePart::Status, &write, &|current| {
        let mut pdb = current.cloned().ok_or_else(|| not_found(pdbs, pdb_name))?;
        let int = |f: &str| object::path(&pdb, f).and_then(Value::as_i64).unwrap_or(0);
        let observed = int("status.observedGeneration");
        if observed < int("metadata.generation") {
            return Err(budget_still_processing(pdb_name));
        }
        let allowed = int("status.disruptionsAllowed");
        let target = Target { group: "policy", resource: "poddisruptionbudget", name: pdb_name };
        let forbidden = |why: &str| {
            ApiError::forbidden(format!(
                "{} \"{pdb_name}\" is forbidden: {why}",
                target.qualified()
            ))
        };
        if allowed < 0 {
            return Err(forbidden("pdb disruptions allowed is negative"));
        }
        let disrupted = object::path(&pdb, "status.disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(forbidden(
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            let cause = format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                int("status.desiredHealthy"),
                int("status.currentHealthy")
            );
            return Err(too_many_evictions(0, cause));
        }
        object::set_at(&mut pdb, "status.disruptionsAllowed", json!(allowed - 1));
        if allowed - 1 == 0 {
            set_budget_condition(&mut pdb, observed);
        }
        if let Some(st) = object::ensure_object(&mut pdb, "status") {
            let map = st.entry("disruptedPods").or_insert_with(|| json!({}));
            if !map.is_object() {
                *map = json!({});
            }
            map[pod_name] = json!(object::now_rfc3339());
        }
        Ok(pdb)
    })
    .await?;
    Ok(())
}

/// Sets DisruptionAllowed to False (InsufficientPods): the budget has no disruption left.
fn set_budget_condition(pdb: &mut Value, observed_generation: i64) {
    let now = object::now_rfc3339();
    let Some(st) = object::ensure_object(pdb, "status") else { return };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(list) = conds.as_array_mut() else { return };
    let wanted = json!({
        "type": "DisruptionAllowed",
        "status": "False",
        "reason": "InsufficientPods",
        "message": "",
        "observedGeneration": observed_generation,
        "lastTransitionTime": now,
    });
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionAllowed"))
    {
        Some(c) => {
            let since = c.get("lastTransitionTime").cloned();
            let same = c.get("status").and_then(Value::as_str) == Some("False");
            let mut w = wanted;
            if let (true, Some(t)) = (same, since) {
                w["lastTransitionTime"] = t;
            }
            *c = w;
        }
        None => list.push(wanted),
    }
}

/// 429 with a DisruptionBudget cause (`retry_after` 0: no Retry-After, as upstream).
fn too_many_evictions(retry_after: u32, cause: String) -> ApiError {
    ApiError::new(429, "TooManyRequests", BUDGET_MESSAGE).with_details(StatusDetails {
        causes: vec![StatusCause {
            reason: "DisruptionBudget".into(),
            message: cause,
            field: String::new(),
        }],
        retry_after_seconds: (retry_after > 0).then_some(retry_after),
        ..Default::default()
    })
}

/// 429: the budget's status does not yet reflect its spec (or the pod changed meanwhile).
fn budget_still_processing(pdb_name: &str) -> ApiError {
    too_many_evictions(
        10,
        format!("The disruption budget {pdb_name} is still being processed by the server."),
    )
}

/// Marks the pod with the DisruptionTarget condition, then deletes it with `opts` (a
/// resourceVersion precondition follows the condition's write). Dry runs only delete (dry).
async fn mark_and_delete(
    reg: &Registry,
    r: &Req,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let pods = r.res;
    let mut opts = opts.clone();
    if !opts.dry_run {
        let write = WriteOptions { field_manager: "kube-apiserver".into(), ..Default::default() };
        let pre = opts.clone();
        let (out, _) = reg
            .update(pods, r.namespace(), name, UpdatePart::Status, &write, &|current| {
                let mut pod = current.cloned().ok_or_else(|| not_found(pods, name))?;
                let target = Target { group: "", resource: "Pod", name };
                if let Some(uid) = pre.precondition_uid.as_deref().filter(|u| !u.is_empty()) {
                    if uid != object::uid(&pod) {
                        return Err(ApiError::conflict(target, &format!(
                            "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                            object::uid(&pod)
                        )));
                    }
                }
                let rv = pre.precondition_resource_version.as_deref().filter(|v| !v.is_empty());
                if let Some(rv) = rv {
                    if rv != object::resource_version(&pod) {
                        return Err(ApiError::conflict(target, &format!(
                            "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                            object::resource_version(&pod)
                        )));
                    }
                }
                set_disruption_target(&mut pod);
                Ok(pod)
            })
            .await?;
        if opts.precondition_resource_version.as_deref().is_some_and(|v| !v.is_empty()) {
            opts.precondition_resource_version = Some(object::resource_version(&out).to_string());
        }
    }
    reg.delete(pods, r.namespace(), name, &opts).await?;
    Ok(())
}

/// Sets the pod's DisruptionTarget condition to True (EvictionByEvictionAPI).
fn set_disruption_target(pod: &mut Value) {
    let now = object::now_rfc3339();
    let Some(st) = object::ensure_object(pod, "status") else { return };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(list) = conds.as_array_mut() else { return };
    let wanted = json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
        "lastTransitionTime": now,
    });
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("DisruptionTarget"))
    {
        Some(c) => {
            let same = c.get("status").and_then(Value::as_str) == Some("True");
            let mut w = wanted;
            if let (true, Some(t)) = (same, c.get("lastTransitionTime").cloned()) {
                w["lastTransitionTime"] = t;
            }
            *c = w;
        }
        None => list.push(wanted),
    }
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
