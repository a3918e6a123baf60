//! Upstream's Priority admission for new pods: spec.priorityClassName resolves to the class's
//! value and preemption policy (the built-in system-node-critical and system-cluster-critical
//! classes always resolve); without a name, the globalDefault class applies (its name is
//! recorded), else priority 0 and PreemptLowerPriority. A priority or preemption policy the pod
//! states itself must agree with the class.

use serde_json::{json, Value};

use crate::apiserver::status::ApiError;
use crate::registry::catalog::catalog;
use crate::registry::generic::{decode_kv, Registry};
use crate::registry::object;
use crate::store::{ListOptions, Store};

/// The classes every cluster has: (name, value).
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] =
    &[("system-node-critical", 2_000_001_000), ("system-cluster-critical", 2_000_000_000)];

/// A resolved class: (name, value, preemption policy).
type Resolved = (String, i64, String);

/// Fills spec.priority, spec.preemptionPolicy (and spec.priorityClassName from the default
/// class) of a pod being created.
pub async fn admit(store: &Store, pod: &mut Value) -> Result<(), ApiError> {
    let name = object::str_at(pod, "spec.priorityClassName").unwrap_or("").to_string();
    let forbidden = |pod: &Value, why: String| {
        ApiError::forbidden(format!("pods \"{}\" is forbidden: {why}", object::name(pod)))
    };
    let (class, value, policy) = if name.is_empty() {
        default_class(store).await?.unwrap_or((String::new(), 0, "PreemptLowerPriority".into()))
    } else {
        match class(store, &name).await? {
            Some(r) => r,
            None => {
                return Err(forbidden(pod, format!("no PriorityClass with name {name} was found")))
            }
        }
    };
    if let Some(p) = object::path(pod, "spec.priority").and_then(Value::as_i64) {
        if p != value {
            return Err(forbidden(pod, format!(
                "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    if let Some(p) = object::str_at(pod, "spec.preemptionPolicy") {
        if p != policy {
            return Err(forbidden(pod, format!(
                "the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    if !class.is_empty() {
        spec.insert("priorityClassName".into(), json!(class));
    }
    spec.insert("priority".into(), json!(value));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

fn resolved(pc: &Value) -> Resolved {
    (
        object::name(pc).to_string(),
        pc.get("value").and_then(Value::as_i64).unwrap_or(0),
        object::str_at(pc, "preemptionPolicy").unwrap_or("PreemptLowerPriority").to_string(),
    )
}

async fn class(store: &Store, name: &str) -> Result<Option<Resolved>, ApiError> {
    let Some(res) = catalog().find("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(None);
    };
    // From the watch cache as it stands (as upstream reads an informer), without a round trip.
    let kv =
        store.get(&Registry::key(res, None, name), Some(store.revision())).await.map_err(|e| {
            ApiError::internal(format!("failed to get PriorityClass with name {name}: {e}"))
        })?;
    if let Some(kv) = kv {
        return Ok(Some(resolved(&decode_kv(res, &kv)?)));
    }
    Ok(SYSTEM_PRIORITY_CLASSES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, v)| (n.to_string(), *v, "PreemptLowerPriority".to_string())))
}

/// The globalDefault class (the lowest valued, should several claim it).
async fn default_class(store: &Store) -> Result<Option<Resolved>, ApiError> {
    let Some(res) = catalog().find("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(None);
    };
    let opts = ListOptions { revision: Some(store.revision()), ..Default::default() };
    let page = store
        .list(&Registry::prefix(res, None), &opts)
        .await
        .map_err(|e| ApiError::internal(format!("failed to get default priority class: {e}")))?;
    let mut best: Option<Resolved> = None;
    const MARK: &[u8] = b"globalDefault";
    for kv in &page.items {
        if !kv.value.windows(MARK.len()).any(|w| w == MARK) {
            continue;
        }
        let pc = decode_kv(res, kv)?;
        if pc.get("globalDefault").and_then(Value::as_bool) == Some(true) {
            let r = resolved(&pc);
            if best.as_ref().is_none_or(|b| r.1 < b.1) {
                best = Some(r);
            }
        }
    }
    Ok(best)
}
