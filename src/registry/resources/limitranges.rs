//! LimitRanges: upstream's defaulting of Container items (the default limit falls back to max,
//! the default request to the default limit, then to min) and its validation of how min, max,
//! default, defaultRequest and maxLimitRequestRatio relate. What they do to pods is admission
//! (`registry::admission::limitrange`).

use serde_json::{json, Value};

use crate::apiserver::status::StatusCause;
use crate::registry::admission::limitrange::effective_item;
use crate::registry::admission::quantity::{self, Quantity};
use crate::registry::object;
use crate::registry::strategy::Strategy;
use crate::registry::validation as v;

/// The LimitRange strategy.
pub struct LimitRangeStrategy;

impl Strategy for LimitRangeStrategy {
    fn allow_create_on_update(&self) -> bool {
        true
    }

    fn default(&self, obj: &mut Value) {
        if let Some(items) = obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                *item = effective_item(item);
            }
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        let items =
            object::path(obj, "spec.limits").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            validate_item(&format!("spec.limits[{i}]"), item, &mut out);
        }
        out
    }
}

fn validate_item(path: &str, item: &Value, out: &mut Vec<StatusCause>) {
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        out.push(v::required(&format!("{path}.type"), ""));
    }
    let list = |f: &str| quantity::list_from(item.get(f));
    let (min, max, default, request, ratio) = (
        list("min"),
        list("max"),
        list("default"),
        list("defaultRequest"),
        list("maxLimitRequestRatio"),
    );
    if kind == "Pod" {
        for f in ["default", "defaultRequest"] {
            if item.get(f).and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
                out.push(v::forbidden(
                    &format!("{path}.{f}"),
                    "may not be specified when `type` is 'Pod'",
                ));
            }
        }
    }
    if kind == "PersistentVolumeClaim"
        && !min.contains_key("storage")
        && !max.contains_key("storage")
    {
        out.push(v::required(
            &format!("{path}.limits"),
            "either minimum or maximum storage value is required, but neither was provided",
        ));
    }
    let mut keys: Vec<&String> =
        min.keys().chain(max.keys()).chain(default.keys()).chain(request.keys()).collect();
    keys.extend(ratio.keys());
    keys.sort();
    keys.dedup();
    let bad = |field: &str, k: &str, value: &Quantity, why: String| {
        v::invalid(&format!("{path}.{field}[{k}]"), &json!(value.to_string()), &why)
    };
    for k in keys {
        let (mn, mx, df, dr, r) =
            (min.get(k), max.get(k), default.get(k), request.get(k), ratio.get(k));
        if let (Some(mn), Some(mx)) = (mn, mx) {
            if mn > mx {
                out.push(bad(
                    "min",
                    k,
                    mn,
                    format!("min value {mn} is greater than max value {mx}"),
                ));
            }
        }
        if let (Some(dr), Some(mn)) = (dr, mn) {
            if mn > dr {
                let why = format!("min value {mn} is greater than default request value {dr}");
                out.push(bad("defaultRequest", k, dr, why));
            }
        }
        if let (Some(dr), Some(mx)) = (dr, mx) {
            if dr > mx {
                let why = format!("default request value {dr} is greater than max value {mx}");
                out.push(bad("defaultRequest", k, dr, why));
            }
        }
        if let (Some(dr), Some(df)) = (dr, df) {
            if dr > df {
                let why =
                    format!("default request value {dr} is greater than default limit value {df}");
                out.push(bad("defaultRequest", k, dr, why));
            }
        }
        if let (Some(df), Some(mn)) = (df, mn) {
            if mn > df {
                let why = format!("min value {mn} is greater than default value {df}");
                out.push(bad("default", k, mn, why));
            }
        }
        if let (Some(df), Some(mx)) = (df, mx) {
            if df > mx {
                let why = format!("default value {df} is greater than max value {mx}");
                out.push(bad("default", k, mx, why));
            }
        }
        if let Some(r) = r {
            if *r < Quantity::count(1) {
                out.push(bad("maxLimitRequestRatio", k, r, format!("ratio {r} is less than 1")));
            }
            if let (Some(mn), Some(mx)) = (mn, mx) {
                let limit = mx.milli() as f64 / mn.milli() as f64;
                if r.milli() as f64 / 1000.0 > limit {
                    let why = format!("ratio {r} is greater than max/min = {limit:.6}");
                    out.push(bad("maxLimitRequestRatio", k, r, why));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_items_are_defaulted_and_checked() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}}]}});
        LimitRangeStrategy.default(&mut lr);
        let item = &lr["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "1"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "1", "memory": "64Mi"}));
        assert!(LimitRangeStrategy.validate(&lr).is_empty());
        let bad = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"},
            "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "800m"}}]}});
        let causes = LimitRangeStrategy.validate(&bad);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.limits[0].defaultRequest[cpu]");
        assert!(causes[0]
            .message
            .ends_with("default request value 800m is greater than default limit value 500m"));
        let ratio = json!({"spec": {"limits": [{"type": "Container", "max": {"memory": "2Gi"},
            "min": {"memory": "512Mi"}, "maxLimitRequestRatio": {"memory": "10"}}]}});
        let causes = LimitRangeStrategy.validate(&ratio);
        assert!(
            causes[0].message.ends_with("ratio 10 is greater than max/min = 4.000000"),
            "{:?}",
            causes
        );
    }
}
