//! (in progress) The namespaces strategy.
use crate::registry::strategy::Strategy;

/// The namespaces strategy.
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {}
