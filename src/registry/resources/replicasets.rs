//! (in progress) The replicasets strategy.
use crate::registry::strategy::Strategy;

/// The replicasets strategy.
pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {}
