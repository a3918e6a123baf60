//! (in progress) The ipaddresses strategy.
use crate::registry::strategy::Strategy;

/// The ipaddresses strategy.
pub struct IpAddressStrategy;

impl Strategy for IpAddressStrategy {}
