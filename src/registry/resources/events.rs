//! (in progress) Events: strategy and the events.k8s.io/v1 <-> core v1 conversion.
use serde_json::Value;

use crate::registry::catalog::Conversion;
use crate::registry::strategy::Strategy;

/// The Event strategy (both APIs).
pub struct EventStrategy;

impl Strategy for EventStrategy {}

/// events.k8s.io/v1 served, core v1 stored.
pub const EVENTS_V1_CONVERSION: Conversion = Conversion {
    storage_group: "core",
    storage_resource: "events",
    to_storage: to_core,
    from_storage: from_core,
};

fn to_core(v: Value) -> Value {
    v
}

fn from_core(v: Value) -> Value {
    v
}
