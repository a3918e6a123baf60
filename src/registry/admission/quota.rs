//! ResourceQuota admission: a write that raises what its namespace uses is checked against
//! every quota it falls under (status.hard, as the quota controller last published it) and, if
//! it fits, charged to their status.used with a compare-and-swap write before the object itself
//! is stored, so concurrent writes cannot together exceed a quota. Over-charges (a write that
//! failed after being charged) are corrected by the ResourceQuota controller.
//!
//! Charging is serialised per namespace within the process; the CAS on each quota keeps several
//! API servers (or the controller) from losing each other's updates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::forbidden;
use super::quantity::{self, Quantity, ResourceList};
use super::usage;
use crate::apiserver::status::ApiError;
use crate::registry::catalog::{catalog, ResourceInfo};
use crate::registry::generic::{decode_kv, Registry};
use crate::registry::object;
use crate::store::{ListOptions, StoreError};

/// How often a charge is re-evaluated after losing a race on a quota.
const ATTEMPTS: usize = 32;

/// Checks `new` (replacing `old`, on update) against the quotas of its namespace and charges
/// them; a 403 as upstream words it when a quota would be exceeded.
pub async fn charge(
    reg: &Registry,
    res: &ResourceInfo,
    new: &Value,
    old: Option<&Value>,
    name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let Some(quotas_res) = catalog().find("", "v1", "resourcequotas") else { return Ok(()) };
    let ns = object::namespace(new).to_string();
    let prefix = Registry::prefix(quotas_res, Some(&ns));
    let now = Utc::now();
    let mut delta = usage::usage(res.group, res.plural, new, now);
    if let Some(old) = old {
        let before = usage::usage(res.group, res.plural, old, now);
        for (k, q) in delta.iter_mut() {
            let prev = before.get(k).copied().unwrap_or(Quantity::ZERO);
            *q = if *q > prev { q.sub(&prev) } else { Quantity::ZERO };
        }
    }
    if delta.values().all(Quantity::is_zero) {
        return Ok(());
    }
    let lock = namespace_lock(&ns);
    let _held = lock.lock().await;
    // Quotas (by uid) already charged in an earlier attempt.
    let mut charged: BTreeSet<String> = BTreeSet::new();
    for attempt in 0..ATTEMPTS {
        // The watch cache as it stands is recent enough to start from (the quota's CAS catches
        // a stale read); after a lost race, read the latest.
        let page = if attempt == 0 {
            super::cached_list(reg, &prefix).await?
        } else {
            reg.store()
                .list(&prefix, &ListOptions::default())
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
        };
        let mut writes = vec![];
        for kv in &page.items {
            let quota = decode_kv(quotas_res, kv)?;
            if charged.contains(object::uid(&quota)) {
                continue;
            }
            if let Some(used) = evaluate(res, &quota, new, &delta, name)? {
                writes.push((kv.key.clone(), kv.mod_revision, quota, used));
            }
        }
        if dry_run {
            return Ok(());
        }
        let mut lost_race = false;
        for (key, rev, mut quota, used) in writes {
            object::set_at(&mut quota, "status.used", quantity::list_to_json(&used));
            let bytes = Registry::encode(quotas_res, &quota)?;
            match reg.store().update(&key, bytes, Some(rev)).await {
                Ok(_) => {
                    charged.insert(object::uid(&quota).to_string());
                }
                Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
                    lost_race = true;
                }
                Err(e) => return Err(ApiError::internal(e.to_string())),
            }
        }
        if !lost_race {
            return Ok(());
        }
    }
    Err(forbidden(
        res,
        name,
        &format!(
            "unable to create {} at this time because there was an error enforcing quota",
            res.plural
        ),
    ))
}

/// Checks one quota; Some(new used) if it is to be charged, None if it does not apply.
fn evaluate(
    res: &ResourceInfo,
    quota: &Value,
    obj: &Value,
    delta: &ResourceList,
    name: &str,
) -> Result<Option<ResourceList>, ApiError> {
    let qname = object::name(quota);
    let hard = quantity::list_from(object::path(quota, "status.hard"));
    let matching: Vec<&String> =
        hard.keys().filter(|k| usage::charged_by(res.group, res.plural, k)).collect();
    if matching.is_empty() || !usage::quota_matches_scopes(quota, res.group, res.plural, obj) {
        return Ok(None);
    }
    if res.group.is_empty() && res.plural == "pods" {
        if let Some(missing) = missing_compute(obj, &matching) {
            return Err(forbidden(res, name, &format!("failed quota: {qname}: {missing}")));
        }
    }
    let used = quantity::list_from(object::path(quota, "status.used"));
    if matching.iter().any(|k| !used.contains_key(*k)) {
        let names: Vec<&str> = matching.iter().map(|s| s.as_str()).collect();
        return Err(forbidden(
            res,
            name,
            &format!("status unknown for quota: {qname}, resources: {}", names.join(",")),
        ));
    }
    let requested: ResourceList =
        delta.iter().filter(|(k, _)| hard.contains_key(*k)).map(|(k, q)| (k.clone(), *q)).collect();
    if requested.is_empty() {
        return Ok(None);
    }
    let mut new_used = used.clone();
    quantity::add_into(&mut new_used, &requested);
    let exceeded: Vec<&String> =
        requested.keys().filter(|k| new_used.get(*k) > hard.get(*k)).collect();
    if !exceeded.is_empty() {
        let mask = |l: &ResourceList| -> ResourceList {
            exceeded.iter().filter_map(|k| l.get(*k).map(|q| ((*k).clone(), *q))).collect()
        };
        return Err(forbidden(
            res,
            name,
            &format!(
                "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                quantity::pretty(&mask(&requested)),
                quantity::pretty(&mask(&used)),
                quantity::pretty(&mask(&hard)),
            ),
        ));
    }
    Ok(Some(new_used))
}

/// Upstream's rule that a quota on cpu or memory needs every container to state them:
/// "must specify limits.cpu for: a,b; requests.memory for: a".
fn missing_compute(pod: &Value, matching: &[&String]) -> Option<String> {
    let required: Vec<&str> = matching
        .iter()
        .map(|s| s.as_str())
        .filter(|s| usage::REQUIRED_EXPLICITLY.contains(s))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for field in ["spec.containers", "spec.initContainers"] {
        for c in object::path(pod, field).and_then(Value::as_array).into_iter().flatten() {
            let req = quantity::list_from(c.pointer("/resources/requests"));
            let lim = quantity::list_from(c.pointer("/resources/limits"));
            let has = usage::compute_from(&req, &lim);
            for r in &required {
                if !has.contains_key(*r) {
                    let cname = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                    missing.entry(r).or_default().insert(cname);
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// The lock that serialises quota charging in one namespace.
fn namespace_lock(ns: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: parking_lot::Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
        parking_lot::Mutex::new(None);
    let mut locks = LOCKS.lock();
    let map = locks.get_or_insert_with(HashMap::new);
    if map.len() > 1024 {
        map.retain(|_, l| Arc::strong_count(l) > 1);
    }
    map.entry(ns.to_string()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        catalog().find("", "v1", "pods").expect("pods are served")
    }

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q", "uid": "u"}, "spec": {"hard": hard},
            "status": {"hard": hard, "used": used}})
    }

    #[test]
    fn a_pod_over_the_count_is_refused_with_upstreams_message() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "a"}]}});
        let delta = usage::usage("", "pods", &pod, Utc::now());
        let q = quota(json!({"pods": "2"}), json!({"pods": "1"}));
        let used = evaluate(pods(), &q, &pod, &delta, "p").unwrap().unwrap();
        assert_eq!(used["pods"].to_string(), "2");
        let full = quota(json!({"pods": "2"}), json!({"pods": "2"}));
        let err = evaluate(pods(), &full, &pod, &delta, "p").unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        );
    }

    #[test]
    fn compute_quotas_need_explicit_resources() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}, {"name": "b"}]}});
        let delta = usage::usage("", "pods", &pod, Utc::now());
        let q = quota(
            json!({"requests.cpu": "4", "limits.memory": "1Gi"}),
            json!({"requests.cpu": "0", "limits.memory": "0"}),
        );
        let err = evaluate(pods(), &q, &pod, &delta, "p").unwrap_err();
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: failed quota: q: must specify limits.memory for: a,b; requests.cpu for: b"
        );
        let unknown = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "1"}}});
        let err = evaluate(pods(), &unknown, &pod, &delta, "p").unwrap_err();
        assert!(err.message.ends_with("status unknown for quota: q, resources: pods"));
    }
}
