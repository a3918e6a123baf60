//! The node agent: what a kubelet does for the API. For now only simulated nodes (see
//! [`simulated`]): nodes registered and kept fresh, and pods carried through their lifecycle
//! without running anything, for tests, demos and scheduler benchmarks.

pub mod simulated;

pub use simulated::{run_simulated_nodes, NodeCapacity};
