//! Helpers shared by the integration tests and the benchmarks: local etcd servers and skiff
//! processes on ephemeral loopback ports. Not used by the server itself.

pub mod etcd_server;
pub mod kubectl_cluster;
pub mod skiff_server;
pub mod store_load;
