//! Pods: spec defaults plus what upstream's admission adds on create (service account name,
//! priority, default not-ready/unreachable tolerations), status Pending with its QoS class, the
//! narrow set of spec fields an update may change, graceful deletion, field selectors and the
//! `kubectl get pods` columns. [`priority`] is the Priority admission of new pods.

pub mod priority;

use serde_json::{json, Value};

use super::podspec::{default_pod_spec, validate_pod_spec};
use crate::apiserver::status::StatusCause;
use crate::registry::object;
use crate::registry::strategy::{Column, Ctx, Strategy};
use crate::registry::validation as v;

/// The Pod strategy.
pub struct PodStrategy;

/// Seconds pods tolerate a not-ready or unreachable node (DefaultTolerationSeconds admission).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

#[async_trait::async_trait]
impl Strategy for PodStrategy {
    fn tracks_generation(&self) -> Option<bool> {
        Some(false)
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_pod_spec(spec);
        }
    }

    fn prepare_for_create(&self, _ctx: &Ctx, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            let sa =
                spec.get("serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty());
            let sa = sa.or_else(|| {
                spec.get("serviceAccount").and_then(Value::as_str).filter(|s| !s.is_empty())
            });
            let sa = sa.unwrap_or("default").to_string();
            spec.insert("serviceAccountName".into(), json!(sa));
            spec.insert("serviceAccount".into(), json!(sa));
            add_default_tolerations(spec);
        }
        let qos = qos_class(obj);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }

    fn prepare_for_status_update(&self, new: &mut Value, old: &Value) {
        // The QoS class is decided at creation.
        if let Some(q) = object::path(old, "status.qosClass") {
            object::set_at(new, "status.qosClass", q.clone());
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        validate_pod_spec(obj.get("spec"), "spec")
    }

    fn validate_update(&self, new: &Value, old: &Value) -> Vec<StatusCause> {
        let mut out = validate_pod_spec(new.get("spec"), "spec");
        let mut masked = new.get("spec").cloned().unwrap_or_default();
        let old_spec = old.get("spec").cloned().unwrap_or_default();
        // Fields an update may change: images, activeDeadlineSeconds, added tolerations,
        // removed scheduling gates, terminationGracePeriodSeconds.
        for list in ["containers", "initContainers"] {
            if let (Some(n), Some(o)) = (
                masked.get_mut(list).and_then(Value::as_array_mut),
                old_spec.get(list).and_then(Value::as_array),
            ) {
                for (nc, oc) in n.iter_mut().zip(o.iter()) {
                    if let Some(img) = oc.get("image") {
                        nc["image"] = img.clone();
                    }
                }
            }
        }
        for field in [
            "activeDeadlineSeconds",
            "terminationGracePeriodSeconds",
            "tolerations",
            "schedulingGates",
        ] {
            match old_spec.get(field) {
                Some(v) => masked[field] = v.clone(),
                None => {
                    if let Some(m) = masked.as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if masked != old_spec {
            out.push(v::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,\
                 `spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),\
                 `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        let old_tol =
            old_spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
        let new_tol = object::path(new, "spec.tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if old_tol.iter().any(|t| !new_tol.contains(t)) {
            out.push(v::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
        }
        out
    }

    fn field_labels(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ]
    }

    fn field_value(&self, obj: &Value, field: &str) -> String {
        match field {
            "spec.hostNetwork" => {
                object::path(obj, field).and_then(Value::as_bool).unwrap_or(false).to_string()
            }
            "status.podIPs" => object::str_at(obj, "status.podIPs")
                .map(String::from)
                .or_else(|| {
                    object::path(obj, "status.podIPs.0.ip")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .unwrap_or_default(),
            other => object::scalar_string(object::path(obj, other)),
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Ready", "string", 0, |o| Value::from(ready(o))),
            Column::new("Status", "string", 0, |o| Value::from(pod_status(o))),
            Column::new("Restarts", "string", 0, |o| Value::from(restarts(o))),
            Column::AGE,
            Column::new("IP", "string", 1, |o| none_if_empty(object::str_at(o, "status.podIP"))),
            Column::new("Node", "string", 1, |o| none_if_empty(object::str_at(o, "spec.nodeName"))),
            Column::new("Nominated Node", "string", 1, |o| {
                none_if_empty(object::str_at(o, "status.nominatedNodeName"))
            }),
            Column::new("Readiness Gates", "string", 1, |o| Value::from(readiness_gates(o))),
        ]
    }

    fn return_deleted_object(&self) -> bool {
        true
    }

    fn grace_period(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        let scheduled = object::str_at(obj, "spec.nodeName").is_some_and(|n| !n.is_empty());
        let terminal = matches!(object::str_at(obj, "status.phase"), Some("Succeeded" | "Failed"));
        if !scheduled || terminal {
            return None;
        }
        let default = object::path(obj, "spec.terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let grace = requested.unwrap_or(default);
        (grace > 0).then_some(grace)
    }
}

fn add_default_tolerations(spec: &mut serde_json::Map<String, Value>) {
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let present = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str);
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let op_exists_all =
                k.is_none() && t.get("operator").and_then(Value::as_str) == Some("Exists");
            op_exists_all || (k == Some(key) && (effect.is_empty() || effect == "NoExecute"))
        });
        if !present {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

/// The QoS class of a pod: Guaranteed (every container's cpu and memory limited, requests equal
/// to limits), BestEffort (no requests or limits at all) or Burstable.
pub fn qos_class(pod: &Value) -> &'static str {
    let mut containers: Vec<&Value> = vec![];
    for list in ["containers", "initContainers"] {
        if let Some(cs) = object::path(pod, &format!("spec.{list}")).and_then(Value::as_array) {
            containers.extend(cs.iter());
        }
    }
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let relevant = |m: Option<&serde_json::Map<String, Value>>| {
            m.map(|m| m.keys().any(|k| k == "cpu" || k == "memory")).unwrap_or(false)
        };
        if relevant(limits) || relevant(requests) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = limits.and_then(|m| m.get(r));
            let q = requests.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn ready(o: &Value) -> String {
    let total = object::path(o, "spec.containers").and_then(Value::as_array).map_or(0, Vec::len);
    let ready =
        object::path(o, "status.containerStatuses").and_then(Value::as_array).map_or(0, |cs| {
            cs.iter().filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true)).count()
        });
    format!("{ready}/{total}")
}

/// The STATUS column: the pod's reason or phase, refined by its init and app containers.
pub fn pod_status(o: &Value) -> String {
    let mut reason = object::str_at(o, "status.reason")
        .or_else(|| object::str_at(o, "status.phase"))
        .unwrap_or("Pending")
        .to_string();
    let init_total =
        object::path(o, "spec.initContainers").and_then(Value::as_array).map_or(0, Vec::len);
    let mut initializing = false;
    for (i, c) in object::path(o, "status.initContainerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(t) = c.pointer("/state/terminated") {
            if t.get("exitCode").and_then(Value::as_i64) == Some(0) {
                continue;
            }
            reason = match t.get("reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() => format!("Init:{r}"),
                _ => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(s) => format!("Init:Signal:{s}"),
                    None => format!(
                        "Init:ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                },
            };
        } else if let Some(r) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{init_total}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        let statuses = object::path(o, "status.containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in statuses.iter().rev() {
            if let Some(r) =
                c.pointer("/state/waiting/reason").and_then(Value::as_str).filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                reason = match t.get("reason").and_then(Value::as_str) {
                    Some(r) if !r.is_empty() => r.to_string(),
                    _ => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                        Some(s) => format!("Signal:{s}"),
                        None => format!(
                            "ExitCode:{}",
                            t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                        ),
                    },
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if object::is_deleting(o) {
        reason = if object::str_at(o, "status.reason") == Some("NodeLost") {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn restarts(o: &Value) -> String {
    let statuses = object::path(o, "status.containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let count: i64 =
        statuses.iter().filter_map(|c| c.get("restartCount").and_then(Value::as_i64)).sum();
    let last = statuses
        .iter()
        .filter_map(|c| c.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str))
        .max()
        .map(String::from);
    match (count, last) {
        (n, Some(ts)) if n > 0 => {
            format!("{n} ({} ago)", object::age(&Value::from(ts)))
        }
        (n, _) => n.to_string(),
    }
}

fn readiness_gates(o: &Value) -> String {
    let gates = object::path(o, "spec.readinessGates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if gates.is_empty() {
        return "<none>".into();
    }
    let conditions =
        object::path(o, "status.conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let ready = gates
        .iter()
        .filter(|g| {
            let t = g.get("conditionType");
            conditions.iter().any(|c| {
                c.get("type") == t && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
        .count();
    format!("{ready}/{}", gates.len())
}

/// A string cell, "<none>" when empty.
pub fn none_if_empty(s: Option<&str>) -> Value {
    Value::from(s.filter(|s| !s.is_empty()).unwrap_or("<none>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        let pod = |res: Value| json!({"spec": {"containers": [{"name": "c", "resources": res}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))), "Guaranteed");
        assert_eq!(qos_class(&pod(json!({"requests": {"cpu": "1"}}))), "Burstable");
    }

    #[test]
    fn create_adds_admission_defaults() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        PodStrategy.default(&mut p);
        PodStrategy.prepare_for_create(&Ctx::default(), &mut p);
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
    }

    #[test]
    fn updates_may_only_change_images() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}], "restartPolicy": "Always"}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("b");
        assert!(PodStrategy.validate_update(&new, &old).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let errs = PodStrategy.validate_update(&new, &old);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message.starts_with("Forbidden: pod updates may not change fields"));
    }

    #[test]
    fn status_column() {
        let p = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_status(&p), "ContainerCreating");
        let p = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": true, "state": {"running": {}}}]}});
        assert_eq!(pod_status(&p), "Running");
        let p = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&p), "Terminating");
        assert_eq!(
            ready(
                &json!({"spec": {"containers": [{}, {}]}, "status": {"containerStatuses": [{"ready": true}]}})
            ),
            "1/2"
        );
    }

    #[test]
    fn graceful_deletion_only_when_scheduled() {
        let unscheduled = json!({"spec": {}});
        assert_eq!(PodStrategy.grace_period(&unscheduled, None), None);
        let scheduled = json!({"spec": {"nodeName": "n", "terminationGracePeriodSeconds": 10}});
        assert_eq!(PodStrategy.grace_period(&scheduled, None), Some(10));
        assert_eq!(PodStrategy.grace_period(&scheduled, Some(0)), None);
    }
}
