//! (in progress) The daemonsets strategy.
use crate::registry::strategy::Strategy;

/// The daemonsets strategy.
pub struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {}
