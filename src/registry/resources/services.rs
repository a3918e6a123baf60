//! (in progress) The services strategy.
use crate::registry::strategy::Strategy;

/// The services strategy.
pub struct ServiceStrategy;

impl Strategy for ServiceStrategy {}
