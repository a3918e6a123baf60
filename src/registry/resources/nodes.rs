//! (in progress) The nodes strategy.
use crate::registry::strategy::Strategy;

/// The nodes strategy.
pub struct NodeStrategy;

impl Strategy for NodeStrategy {}
