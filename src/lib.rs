//! skiff: Kubernetes in one small binary.

pub mod agent;
pub mod apiserver;
pub mod cli;
pub mod controllers;
pub mod fuzzing;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod testing;
