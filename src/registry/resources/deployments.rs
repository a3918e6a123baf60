//! (in progress) The deployments strategy.
use crate::registry::strategy::Strategy;

/// The deployments strategy.
pub struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {}
