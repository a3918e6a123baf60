//! The LimitRanger admission plugin: a new pod gets the default requests and limits of its
//! namespace's LimitRanges (type Container) and is refused if a container or the whole pod is
//! outside their min, max or maxLimitRequestRatio; a new claim is refused outside the
//! PersistentVolumeClaim min and max of storage.

use serde_json::{json, Map, Value};

use super::quantity::{self, Quantity, ResourceList};
use super::usage;
use crate::registry::object;

/// The annotation saying which defaults were applied.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// A LimitRange item with upstream's defaulting of Container items applied: the default limit
/// falls back to max, the default request to the default limit, then to min.
pub fn effective_item(item: &Value) -> Value {
    let mut item = item.clone();
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return item;
    }
    let get = |item: &Value, f: &str| item.get(f).and_then(Value::as_object).cloned();
    let mut default = get(&item, "default").unwrap_or_default();
    for (k, v) in get(&item, "max").unwrap_or_default() {
        default.entry(k).or_insert(v);
    }
    let mut request = get(&item, "defaultRequest").unwrap_or_default();
    for (k, v) in default.iter() {
        request.entry(k.clone()).or_insert(v.clone());
    }
    for (k, v) in get(&item, "min").unwrap_or_default() {
        request.entry(k).or_insert(v);
    }
    if !default.is_empty() {
        item["default"] = Value::Object(default);
    }
    if !request.is_empty() {
        item["defaultRequest"] = Value::Object(request);
    }
    item
}

fn items(limit_range: &Value) -> Vec<Value> {
    object::path(limit_range, "spec.limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(effective_item)
        .collect()
}

/// Upstream's pod defaulting that admission relies on: a container with a limit but no request
/// for a resource requests its limit.
pub fn default_requests_from_limits(pod: &mut Value) {
    for field in ["containers", "initContainers"] {
        let Some(cs) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let Some(limits) = c.pointer("/resources/limits").and_then(Value::as_object).cloned()
            else {
                continue;
            };
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                continue;
            };
            let requests = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(r) = requests.as_object_mut() {
                for (k, v) in limits {
                    r.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// Applies the default requests and limits of one LimitRange to a pod's containers and records
/// what it set in the annotation.
pub fn apply_defaults(limit_range: &Value, pod: &mut Value) {
    let mut requests = Map::new();
    let mut limits = Map::new();
    for item in items(limit_range) {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        for (src, dst) in [("defaultRequest", &mut requests), ("default", &mut limits)] {
            for (k, v) in item.get(src).and_then(Value::as_object).into_iter().flatten() {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return;
    }
    let mut notes: Vec<String> = vec![];
    for (field, prefix) in [("containers", "container"), ("initContainers", "init container")] {
        let Some(cs) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            let Some(cm) = c.as_object_mut() else { continue };
            let res = cm.entry("resources").or_insert_with(|| json!({}));
            let Some(res) = res.as_object_mut() else { continue };
            let mut set = |part: &str, defaults: &Map<String, Value>| -> Vec<String> {
                let list = res.entry(part).or_insert_with(|| json!({}));
                let mut added = vec![];
                if let Some(l) = list.as_object_mut() {
                    for (k, v) in defaults {
                        if !l.contains_key(k) {
                            l.insert(k.clone(), v.clone());
                            added.push(k.clone());
                        }
                    }
                }
                added.sort();
                added
            };
            let set_limits = set("limits", &limits);
            let set_requests = set("requests", &requests);
            if !set_requests.is_empty() {
                notes.push(format!("{} request for {prefix} {name}", set_requests.join(", ")));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {prefix} {name}", set_limits.join(", ")));
            }
            for part in ["limits", "requests"] {
                if res.get(part).and_then(Value::as_object).is_some_and(|m| m.is_empty()) {
                    res.remove(part);
                }
            }
        }
    }
    if !notes.is_empty() {
        let meta = object::meta_mut(pod);
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if !ann.is_object() {
            *ann = json!({});
        }
        ann[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// What is wrong with a pod under one LimitRange (empty: nothing), as upstream words it.
pub fn validate_pod(limit_range: &Value, pod: &Value) -> Vec<String> {
    let mut errs = vec![];
    for item in items(limit_range) {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "Container" => {
                for field in ["spec.containers", "spec.initContainers"] {
                    for c in
                        object::path(pod, field).and_then(Value::as_array).into_iter().flatten()
                    {
                        let req = quantity::list_from(c.pointer("/resources/requests"));
                        let lim = quantity::list_from(c.pointer("/resources/limits"));
                        check(&item, kind, &req, &lim, &mut errs);
                    }
                }
            }
            "Pod" => {
                let (req, lim) = (pod_sum(pod, "requests"), pod_sum(pod, "limits"));
                check(&item, kind, &req, &lim, &mut errs);
            }
            _ => {}
        }
    }
    errs
}

/// What is wrong with a claim's storage request under one LimitRange.
pub fn validate_claim(limit_range: &Value, pvc: &Value) -> Vec<String> {
    let mut errs = vec![];
    let req = quantity::list_from(object::path(pvc, "spec.resources.requests"));
    for item in items(limit_range) {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "PersistentVolumeClaim" {
            continue;
        }
        for (k, min) in quantity::list_from(item.get("min")) {
            min_check(kind, &k, &min, &req, &ResourceList::new(), &mut errs);
        }
        for (k, max) in quantity::list_from(item.get("max")) {
            match req.get(&k) {
                None => errs.push(format!(
                    "maximum {k} usage per {kind} is {max}.  No request is specified"
                )),
                Some(r) if r.milli() > max.milli() => {
                    errs.push(format!("maximum {k} usage per {kind} is {max}, but request is {r}"))
                }
                Some(_) => {}
            }
        }
    }
    errs
}

/// Upstream's aggregate of errors: one as it is, several in brackets.
pub fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// A pod's requests or limits for the Pod type: the larger of the container sum and each
/// init container (no overhead).
fn pod_sum(pod: &Value, which: &str) -> ResourceList {
    let mut p = pod.clone();
    object::remove_at(&mut p, "spec.overhead");
    usage::pod_totals(&p, which)
}

fn check(item: &Value, kind: &str, req: &ResourceList, lim: &ResourceList, errs: &mut Vec<String>) {
    for (k, min) in quantity::list_from(item.get("min")) {
        min_check(kind, &k, &min, req, lim, errs);
    }
    for (k, max) in quantity::list_from(item.get("max")) {
        match (req.get(&k), lim.get(&k)) {
            (_, None) => {
                errs.push(format!("maximum {k} usage per {kind} is {max}.  No limit is specified"))
            }
            (_, Some(l)) if l.milli() > max.milli() => {
                errs.push(format!("maximum {k} usage per {kind} is {max}, but limit is {l}"))
            }
            (Some(r), _) if r.milli() > max.milli() => {
                errs.push(format!("maximum {k} usage per {kind} is {max}, but request is {r}"))
            }
            _ => {}
        }
    }
    for (k, ratio) in quantity::list_from(item.get("maxLimitRequestRatio")) {
        let r = req.get(&k).filter(|r| r.milli() != 0);
        let l = lim.get(&k).filter(|l| l.milli() != 0);
        match (r, l) {
            (None, _) => errs.push(format!(
                "{k} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
            )),
            (_, None) => errs.push(format!(
                "{k} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
            )),
            (Some(r), Some(l)) => {
                let observed = l.milli() as f64 / r.milli() as f64;
                if observed * 1000.0 > ratio.milli() as f64 {
                    errs.push(format!(
                        "{k} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
                    ));
                }
            }
        }
    }
}

fn min_check(
    kind: &str,
    k: &str,
    min: &Quantity,
    req: &ResourceList,
    lim: &ResourceList,
    errs: &mut Vec<String>,
) {
    match (req.get(k), lim.get(k)) {
        (None, _) => {
            errs.push(format!("minimum {k} usage per {kind} is {min}.  No request is specified"))
        }
        (Some(r), _) if r.milli() < min.milli() => {
            errs.push(format!("minimum {k} usage per {kind} is {min}, but request is {r}"))
        }
        (_, Some(l)) if l.milli() < min.milli() => {
            errs.push(format!("minimum {k} usage per {kind} is {min}, but limit is {l}"))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr(limits: Value) -> Value {
        json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}})
    }

    #[test]
    fn defaults_fill_missing_requests_and_limits() {
        let range = lr(json!([{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "app", "resources": {"limits": {"memory": "128Mi"}}}]}});
        default_requests_from_limits(&mut pod);
        apply_defaults(&range, &mut pod);
        let r = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
        assert_eq!(r["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container app; cpu limit for container app"
        );
    }

    #[test]
    fn max_defaults_the_limit() {
        let range = lr(json!([{"type": "Container", "max": {"cpu": "1"}}]));
        let mut pod = json!({"spec": {"containers": [{"name": "a"}]}});
        apply_defaults(&range, &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1");
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"]["cpu"], "1");
        assert!(validate_pod(&range, &pod).is_empty());
    }

    #[test]
    fn violations_are_worded_as_upstream() {
        let range =
            lr(json!([{"type": "Container", "max": {"cpu": "500m"}, "min": {"memory": "64Mi"},
            "maxLimitRequestRatio": {"cpu": "2"}}]));
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "32Mi"}}}]}});
        let errs = validate_pod(&range, &pod);
        assert_eq!(
            errs,
            vec![
                "minimum memory usage per Container is 64Mi, but request is 32Mi".to_string(),
                "maximum cpu usage per Container is 500m, but limit is 1".to_string(),
                "cpu max limit to request ratio per Container is 2, but provided ratio is 10.000000"
                    .to_string(),
            ]
        );
        assert!(aggregate(&errs).starts_with("[minimum memory"));
    }
}
