//! (in progress) The replicationcontrollers strategy.
use crate::registry::strategy::Strategy;

/// The replicationcontrollers strategy.
pub struct ReplicationControllerStrategy;

impl Strategy for ReplicationControllerStrategy {}
