//! (in progress) The secrets strategy.
use crate::registry::strategy::Strategy;

/// The secrets strategy.
pub struct SecretStrategy;

impl Strategy for SecretStrategy {}
