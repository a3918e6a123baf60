//! (in progress) HorizontalPodAutoscaler: strategy and the autoscaling/v1 <-> v2 conversion.
use serde_json::Value;

use crate::registry::catalog::Conversion;
use crate::registry::strategy::Strategy;

/// The HorizontalPodAutoscaler strategy (both versions).
pub struct HpaStrategy;

impl Strategy for HpaStrategy {}

/// autoscaling/v1 served, autoscaling/v2 stored.
pub const V1_CONVERSION: Conversion = Conversion {
    storage_group: "autoscaling",
    storage_resource: "horizontalpodautoscalers",
    to_storage: v1_to_v2,
    from_storage: v2_to_v1,
};

fn v1_to_v2(v: Value) -> Value {
    v
}

fn v2_to_v1(v: Value) -> Value {
    v
}
