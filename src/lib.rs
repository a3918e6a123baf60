//! skiff: Kubernetes in one small binary.

pub mod apiserver;
pub mod cli;
pub mod registry;
pub mod store;
pub mod testing;
