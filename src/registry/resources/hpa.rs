//! HorizontalPodAutoscalers, served as autoscaling/v2 (stored) and autoscaling/v1 (converted).
//!
//! The v1 form only knows a CPU utilization target; `hpa/conversion.rs` carries the rest of a
//! v2 object through v1 in annotations, as upstream does.

use serde_json::{json, Value};

use crate::apiserver::status::StatusCause;
use crate::registry::catalog::Conversion;
use crate::registry::object::{self, default_field};
use crate::registry::strategy::{Column, Strategy};
use crate::registry::validation as v;

mod conversion;
mod printer;

pub use conversion::{cpu_metric, v1_to_v2, v2_to_v1, DEFAULT_CPU_UTILIZATION};

/// The HorizontalPodAutoscaler strategy (both versions).
pub struct HpaStrategy;

/// autoscaling/v1 served, autoscaling/v2 stored.
pub const V1_CONVERSION: Conversion = Conversion {
    storage_group: "autoscaling",
    storage_version: "v2",
    storage_resource: "horizontalpodautoscalers",
    to_storage: v1_to_v2,
    from_storage: v2_to_v1,
};

impl Strategy for HpaStrategy {
    fn default(&self, obj: &mut Value) {
        let v2 = object::str_at(obj, "apiVersion") != Some("autoscaling/v1");
        if v2 {
            // Only v1 conversion writes these; v2 objects never keep them (as upstream).
            conversion::drop_round_trip_annotations(obj);
        }
        let Some(spec) = object::ensure_object(obj, "spec") else { return };
        default_field(spec, "minReplicas", json!(1));
        if v2 {
            let empty = spec.get("metrics").and_then(Value::as_array).is_none_or(|m| m.is_empty());
            if empty {
                spec.insert("metrics".into(), json!([cpu_metric(DEFAULT_CPU_UTILIZATION)]));
            }
        }
    }

    fn validate(&self, obj: &Value) -> Vec<StatusCause> {
        let mut out = vec![];
        let min = object::path(obj, "spec.minReplicas").and_then(Value::as_i64).unwrap_or(1);
        let max = object::path(obj, "spec.maxReplicas").and_then(Value::as_i64).unwrap_or(0);
        if min < 1 {
            out.push(v::invalid(
                "spec.minReplicas",
                &json!(min),
                "must be greater than or equal to 1",
            ));
        }
        if max < min {
            out.push(v::invalid(
                "spec.maxReplicas",
                &json!(max),
                "must be greater than or equal to `minReplicas`",
            ));
        }
        for f in ["kind", "name"] {
            let path = format!("spec.scaleTargetRef.{f}");
            if object::str_at(obj, &path).unwrap_or("").is_empty() {
                out.push(v::required(&path, ""));
            }
        }
        out
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column::new("Reference", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    object::str_at(o, "spec.scaleTargetRef.kind").unwrap_or(""),
                    object::str_at(o, "spec.scaleTargetRef.name").unwrap_or("")
                ))
            }),
            Column::new("Targets", "string", 0, |o| json!(printer::targets(&v2_view(o)))),
            Column::new("MinPods", "string", 0, |o| {
                json!(object::path(o, "spec.minReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .to_string())
            }),
            Column::new("MaxPods", "integer", 0, |o| {
                json!(object::path(o, "spec.maxReplicas").and_then(Value::as_i64).unwrap_or(0))
            }),
            Column::new("Replicas", "integer", 0, |o| {
                json!(object::path(o, "status.currentReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0))
            }),
            Column::AGE,
        ]
    }
}

fn v2_view(o: &Value) -> Value {
    if object::str_at(o, "apiVersion") == Some("autoscaling/v1") {
        v1_to_v2(o.clone())
    } else {
        o.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_convert() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}});
        let v2 = v1_to_v2(v1.clone());
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
        assert_eq!(v2_to_v1(v2)["spec"], v1["spec"]);
        let mut fresh = json!({"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 3}});
        HpaStrategy.default(&mut fresh);
        assert_eq!(fresh["spec"]["minReplicas"], 1);
        assert_eq!(fresh["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    }
}
