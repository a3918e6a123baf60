//! (in progress) The configmaps strategy.
use crate::registry::strategy::Strategy;

/// The configmaps strategy.
pub struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {}
