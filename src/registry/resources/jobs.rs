//! (in progress) The jobs strategy.
use crate::registry::strategy::Strategy;

/// The jobs strategy.
pub struct JobStrategy;

impl Strategy for JobStrategy {}
