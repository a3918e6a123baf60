//! An HPA's status as upstream's controller writes it: conditions (AbleToScale, ScalingActive,
//! ScalingLimited; a transition time only when the status flips), current metrics, replica
//! counts and the last scale time; and the merge patch that writes it.

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricStatus,
    MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use crate::registry::admission::quantity::Quantity;

pub const ABLE_TO_SCALE: &str = "AbleToScale";
pub const SCALING_ACTIVE: &str = "ScalingActive";
pub const SCALING_LIMITED: &str = "ScalingLimited";

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Sets condition `kind` in `status` (appended if new; the transition time moves only when the
/// status changes).
pub fn set_condition(
    status: &mut HorizontalPodAutoscalerStatus,
    kind: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
) {
    let value = if ok { "True" } else { "False" };
    let list = status.conditions.get_or_insert_with(Vec::new);
    let i = match list.iter().position(|c| c.type_ == kind) {
        Some(i) => i,
        None => {
            list.push(HorizontalPodAutoscalerCondition {
                type_: kind.to_string(),
                ..Default::default()
            });
            list.len() - 1
        }
    };
    let c = &mut list[i];
    if c.status != value {
        c.last_transition_time = Some(now());
    }
    c.status = value.to_string();
    c.reason = Some(reason.to_string());
    c.message = Some(message.into());
}

/// A milli-unit amount as upstream prints resource.NewMilliQuantity(v, DecimalSI).
pub fn milli_quantity(milli: i64) -> K8sQuantity {
    let text = Quantity::parse(&format!("{milli}m")).map_or_else(|| "0".into(), |q| q.to_string());
    K8sQuantity(text)
}

/// The status of a Resource metric.
pub fn resource_status(name: &str, utilization: Option<i32>, average_milli: i64) -> MetricStatus {
    MetricStatus {
        type_: "Resource".into(),
        resource: Some(ResourceMetricStatus {
            name: name.to_string(),
            current: MetricValueStatus {
                average_utilization: utilization,
                average_value: Some(milli_quantity(average_milli)),
                value: None,
            },
        }),
        ..Default::default()
    }
}

/// The status after a sync: counts and metrics; the scale time moves when the target was
/// rescaled.
pub fn set_status(
    status: &mut HorizontalPodAutoscalerStatus,
    current: i32,
    desired: i32,
    metrics: Vec<MetricStatus>,
    rescaled: bool,
) {
    status.current_replicas = Some(current);
    status.desired_replicas = desired;
    status.current_metrics = Some(metrics).filter(|m| !m.is_empty());
    if rescaled {
        status.last_scale_time = Some(now());
    }
}

/// The JSON merge patch that makes an HPA's status `status` (absent fields cleared).
pub fn status_patch(status: &HorizontalPodAutoscalerStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(m) = v.as_object_mut() {
        for field in [
            "conditions",
            "currentMetrics",
            "currentReplicas",
            "lastScaleTime",
            "observedGeneration",
        ] {
            m.entry(field).or_insert(Value::Null);
        }
    }
    json!({ "status": v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_upstream() {
        assert_eq!(milli_quantity(400).0, "400m");
        assert_eq!(milli_quantity(1000).0, "1");
        assert_eq!(milli_quantity(1500).0, "1500m");
        assert_eq!(milli_quantity(0).0, "0");
        assert_eq!(milli_quantity(104_857_600_000).0, "104857600");
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut s = HorizontalPodAutoscalerStatus::default();
        set_condition(&mut s, ABLE_TO_SCALE, true, "SucceededGetScale", "m");
        let t = s.conditions.as_ref().and_then(|c| c[0].last_transition_time.clone());
        set_condition(&mut s, SCALING_ACTIVE, false, "FailedGetResourceMetric", "x");
        set_condition(&mut s, ABLE_TO_SCALE, true, "SucceededRescale", "n");
        let c = s.conditions.as_ref().expect("conditions");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].last_transition_time, t);
        assert_eq!(c[0].reason.as_deref(), Some("SucceededRescale"));
        let p = status_patch(&s);
        assert!(p["status"]["currentMetrics"].is_null());
        assert_eq!(p["status"]["desiredReplicas"], 0);
    }
}
