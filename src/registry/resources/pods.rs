//! (in progress) The pods strategy.
use crate::registry::strategy::Strategy;

/// The pods strategy.
pub struct PodStrategy;

impl Strategy for PodStrategy {}
