//! (in progress) The statefulsets strategy.
use crate::registry::strategy::Strategy;

/// The statefulsets strategy.
pub struct StatefulSetStrategy;

impl Strategy for StatefulSetStrategy {}
