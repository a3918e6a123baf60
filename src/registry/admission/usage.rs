//! What an object charges against a ResourceQuota (upstream's quota evaluators): every object
//! its `count/<resource>[.<group>]`; pods their compute resources while not terminal; services
//! their node ports and load balancers; claims their storage. And which quotas an object falls
//! under (scopes, scope selectors). Shared by quota admission and the ResourceQuota controller.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::quantity::{self, Quantity, ResourceList};
use crate::registry::object;

/// The core resources whose object counts also have a name without `count/`.
const LEGACY_COUNTS: &[&str] = &[
    "configmaps",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "services",
];

/// Resources a pod charges beyond its counts (upstream's podResources).
const POD_COMPUTE: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// The quota resources a container must set explicitly when a quota tracks them.
pub const REQUIRED_EXPLICITLY: &[&str] =
    &["cpu", "limits.cpu", "limits.memory", "memory", "requests.cpu", "requests.memory"];

/// The quota name of an object count: `count/pods`, `count/deployments.apps`.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Whether a quota resource name is one an object of `group`/`plural` can charge.
pub fn charged_by(group: &str, plural: &str, name: &str) -> bool {
    if name == count_name(group, plural) {
        return true;
    }
    if !group.is_empty() {
        return false;
    }
    match plural {
        "pods" => {
            POD_COMPUTE.contains(&name)
                || name.starts_with("hugepages-")
                || name.starts_with("requests.hugepages-")
                || (name.starts_with("requests.") && name.contains('/'))
        }
        "services" => matches!(name, "services" | "services.nodeports" | "services.loadbalancers"),
        "persistentvolumeclaims" => {
            name == "persistentvolumeclaims"
                || name == "requests.storage"
                || name.ends_with(".storageclass.storage.k8s.io/requests.storage")
                || name.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
        }
        other => LEGACY_COUNTS.contains(&other) && name == other,
    }
}

/// What `obj` (of `group`/`plural`) charges, at `now`.
pub fn usage(group: &str, plural: &str, obj: &Value, now: DateTime<Utc>) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert(count_name(group, plural), Quantity::count(1));
    if !group.is_empty() {
        return out;
    }
    if LEGACY_COUNTS.contains(&plural) {
        out.insert(plural.to_string(), Quantity::count(1));
    }
    match plural {
        "pods" if charges_compute(obj, now) => quantity::add_into(&mut out, &pod_compute(obj)),
        "services" => service_usage(obj, &mut out),
        "persistentvolumeclaims" => claim_usage(obj, &mut out),
        _ => {}
    }
    out
}

/// A pod charges compute resources unless it is terminal or its deletion grace has run out.
pub fn charges_compute(pod: &Value, now: DateTime<Utc>) -> bool {
    if matches!(object::str_at(pod, "status.phase"), Some("Succeeded" | "Failed")) {
        return false;
    }
    let deleted = object::str_at(pod, "metadata.deletionTimestamp")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let grace = object::path(pod, "metadata.deletionGracePeriodSeconds").and_then(Value::as_i64);
    if let (Some(at), Some(grace)) = (deleted, grace) {
        if now > at.with_timezone(&Utc) + chrono::Duration::seconds(grace) {
            return false;
        }
    }
    true
}

/// The requests or limits of a pod: the sum over containers, at least each init container's,
/// plus the pod overhead (for limits, only where a limit is set).
pub fn pod_totals(pod: &Value, which: &str) -> ResourceList {
    let of = |c: &Value| quantity::list_from(c.pointer(&format!("/resources/{which}")));
    let containers = |field: &str| -> Vec<ResourceList> {
        object::path(pod, field).and_then(Value::as_array).into_iter().flatten().map(of).collect()
    };
    let mut total = ResourceList::new();
    for c in containers("spec.containers") {
        quantity::add_into(&mut total, &c);
    }
    for c in containers("spec.initContainers") {
        for (k, q) in c {
            match total.get(&k) {
                Some(cur) if *cur >= q => {}
                _ => {
                    total.insert(k, q);
                }
            }
        }
    }
    let overhead = quantity::list_from(object::path(pod, "spec.overhead"));
    for (k, q) in overhead {
        if which == "requests" || total.contains_key(&k) {
            let sum = total.get(&k).map(|x| x.add(&q)).unwrap_or(q);
            total.insert(k, sum);
        }
    }
    total
}

/// The compute resources a (non-terminal) pod charges.
pub fn pod_compute(pod: &Value) -> ResourceList {
    compute_from(&pod_totals(pod, "requests"), &pod_totals(pod, "limits"))
}

/// Quota names for given requests and limits (upstream's podComputeUsageHelper); `pods` is 1.
pub fn compute_from(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), Quantity::count(1));
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (k, q) in requests {
        if k.starts_with("hugepages-") {
            out.insert(k.clone(), *q);
            out.insert(format!("requests.{k}"), *q);
        } else if k.contains('/') && !k.starts_with("kubernetes.io/") {
            out.insert(format!("requests.{k}"), *q);
        }
    }
    out
}

fn service_usage(svc: &Value, out: &mut ResourceList) {
    let ports = object::path(svc, "spec.ports").and_then(Value::as_array);
    let n_ports = ports.map_or(0, |p| p.len()) as i64;
    match object::str_at(svc, "spec.type").unwrap_or("ClusterIP") {
        "NodePort" => {
            out.insert("services.nodeports".into(), Quantity::count(n_ports));
        }
        "LoadBalancer" => {
            let allocate = object::path(svc, "spec.allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let n = if allocate {
                n_ports
            } else {
                ports
                    .into_iter()
                    .flatten()
                    .filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0)
                    .count() as i64
            };
            out.insert("services.nodeports".into(), Quantity::count(n));
            out.insert("services.loadbalancers".into(), Quantity::count(1));
        }
        _ => {}
    }
}

fn claim_usage(pvc: &Value, out: &mut ResourceList) {
    let class = object::str_at(pvc, "spec.storageClassName").unwrap_or("");
    if !class.is_empty() {
        out.insert(
            format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            Quantity::count(1),
        );
    }
    let requests = quantity::list_from(object::path(pvc, "spec.resources.requests"));
    if let Some(q) = requests.get("storage") {
        out.insert("requests.storage".into(), *q);
        if !class.is_empty() {
            out.insert(format!("{class}.storageclass.storage.k8s.io/requests.storage"), *q);
        }
    }
}

/// Whether a quota (its spec) applies to `obj` of `group`/`plural`: scopes and scope selectors
/// only ever match pods.
pub fn quota_matches_scopes(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let scopes: Vec<&str> = object::path(quota, "spec.scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let exprs: Vec<&Value> = object::path(quota, "spec.scopeSelector.matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if scopes.is_empty() && exprs.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    scopes.iter().all(|s| pod_in_scope(obj, s, "Exists", &[]))
        && exprs.iter().all(|e| {
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            pod_in_scope(
                obj,
                e.get("scopeName").and_then(Value::as_str).unwrap_or(""),
                e.get("operator").and_then(Value::as_str).unwrap_or(""),
                &values,
            )
        })
}

fn pod_in_scope(pod: &Value, scope: &str, op: &str, values: &[&str]) -> bool {
    match scope {
        "Terminating" => is_terminating(pod),
        "NotTerminating" => !is_terminating(pod),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = object::str_at(pod, "spec.priorityClassName").unwrap_or("");
            match op {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => false,
        _ => false,
    }
}

/// A pod with an active deadline is "terminating".
pub fn is_terminating(pod: &Value) -> bool {
    object::path(pod, "spec.activeDeadlineSeconds").and_then(Value::as_i64).is_some_and(|d| d >= 0)
}

/// A pod none of whose containers requests or limits cpu or memory.
pub fn is_best_effort(pod: &Value) -> bool {
    ["spec.containers", "spec.initContainers"].iter().all(|field| {
        object::path(pod, field).and_then(Value::as_array).into_iter().flatten().all(|c| {
            ["requests", "limits"].iter().all(|w| {
                let l = quantity::list_from(c.pointer(&format!("/resources/{w}")));
                !l.contains_key("cpu") && !l.contains_key("memory")
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_usage_sums_containers_and_takes_the_largest_init_container() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "300m", "memory": "64Mi"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}],
        }});
        let u = usage("", "pods", &pod, Utc::now());
        let s = |k: &str| u.get(k).map(|q| q.to_string());
        assert_eq!(s("pods").as_deref(), Some("1"));
        assert_eq!(s("count/pods").as_deref(), Some("1"));
        assert_eq!(s("requests.cpu").as_deref(), Some("1"));
        assert_eq!(s("requests.memory").as_deref(), Some("128Mi"));
        assert_eq!(s("limits.cpu").as_deref(), Some("200m"));
        let done = json!({"spec": pod["spec"].clone(), "status": {"phase": "Succeeded"}});
        let u = usage("", "pods", &done, Utc::now());
        assert!(u.get("pods").is_none() && u.get("count/pods").is_some());
    }

    #[test]
    fn services_charge_node_ports() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc, Utc::now());
        assert_eq!(u["services.nodeports"].to_string(), "2");
        assert_eq!(u["services"].to_string(), "1");
        assert!(charged_by("apps", "deployments", "count/deployments.apps"));
        assert!(!charged_by("", "configmaps", "secrets"));
    }

    #[test]
    fn scopes_apply_to_pods_only() {
        let q = json!({"spec": {"scopes": ["BestEffort"]}});
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        assert!(quota_matches_scopes(&q, "", "pods", &pod));
        assert!(!quota_matches_scopes(&q, "", "configmaps", &json!({})));
    }
}
