//! (in progress) The cronjobs strategy.
use crate::registry::strategy::Strategy;

/// The cronjobs strategy.
pub struct CronJobStrategy;

impl Strategy for CronJobStrategy {}
