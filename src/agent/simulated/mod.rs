//! Simulated nodes: N Node objects with fixed capacity, a Ready condition and a Lease in
//! kube-node-lease kept fresh (see [`node`]), and the pods bound to them carried through the
//! lifecycle a kubelet would give them (see [`pods`]). Annotations on a pod change what its
//! containers do: [`EXIT_CODE_ANNOTATION`], [`RUN_SECONDS_ANNOTATION`],
//! [`NEVER_READY_ANNOTATION`]. A [`NodeSwitch`] stops and restarts nodes, as if their kubelet
//! lost the cluster.

pub mod node;
pub mod pods;

use std::collections::HashSet;
use std::sync::Arc;

use kube::Client;

/// The exit code the pod's containers end with (with a run time, default 1 s).
pub const EXIT_CODE_ANNOTATION: &str = "skiff.dev/simulate-exit-code";
/// How long the pod's containers run before they exit (Jobs: default 1 s; others: forever).
pub const RUN_SECONDS_ANNOTATION: &str = "skiff.dev/simulate-run-seconds";
/// "true": the containers run but never become ready.
pub const NEVER_READY_ANNOTATION: &str = "skiff.dev/simulate-never-ready";
/// The label every simulated node carries.
pub const SIMULATED_LABEL: &str = "skiff.dev/simulated";

/// What each simulated node offers.
#[derive(Clone, Debug)]
pub struct NodeCapacity {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        NodeCapacity {
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            ephemeral_storage: "1Ti".into(),
        }
    }
}

/// How the simulated nodes behave.
#[derive(Clone, Debug)]
pub struct SimulatedOptions {
    /// Node names are `<prefix><index>`.
    pub name_prefix: String,
    pub count: usize,
    pub capacity: NodeCapacity,
    /// How often each node's Lease is renewed (upstream: 10 s).
    pub lease_renew: std::time::Duration,
    /// How often each node's Ready condition heartbeat is refreshed.
    pub status_refresh: std::time::Duration,
    /// Concurrent pod status writes.
    pub workers: usize,
    /// Which nodes are stopped.
    pub switch: NodeSwitch,
    /// The shared informers the simulated kubelet subscribes to (in a server: the controllers').
    pub informers: crate::controllers::informers::Informers,
}

/// Stops and restarts simulated nodes (clones share the state): a stopped node renews no Lease,
/// posts no status and drives none of its pods, as a node cut off from the cluster; restarted,
/// it posts a fresh Ready status at its next lease renewal.
#[derive(Clone, Debug, Default)]
pub struct NodeSwitch(Arc<parking_lot::RwLock<HashSet<String>>>);

impl NodeSwitch {
    pub fn stop(&self, node: &str) {
        self.0.write().insert(node.to_string());
    }

    pub fn start(&self, node: &str) {
        self.0.write().remove(node);
    }

    pub fn is_stopped(&self, node: &str) -> bool {
        self.0.read().contains(node)
    }
}

impl SimulatedOptions {
    pub fn new(count: usize, capacity: NodeCapacity) -> SimulatedOptions {
        SimulatedOptions {
            name_prefix: "skiff-sim-".into(),
            count,
            capacity,
            lease_renew: std::time::Duration::from_secs(10),
            status_refresh: std::time::Duration::from_secs(60),
            workers: 16,
            switch: NodeSwitch::default(),
            informers: Default::default(),
        }
    }

    pub fn node_name(&self, index: usize) -> String {
        format!("{}{index}", self.name_prefix)
    }
}

/// What ends the simulated nodes.
#[derive(Debug, thiserror::Error)]
pub enum SimulatedError {
    #[error("cannot register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("a simulated node task stopped")]
    Stopped,
}

/// Registers `count` nodes with `capacity` and runs them until a task stops.
pub async fn run_simulated_nodes(
    client: Client,
    count: usize,
    capacity: NodeCapacity,
) -> anyhow::Result<()> {
    run(client, SimulatedOptions::new(count, capacity)).await.map_err(Into::into)
}

/// Like [`run_simulated_nodes`] with every option.
pub async fn run(client: Client, opts: SimulatedOptions) -> Result<(), SimulatedError> {
    let opts = Arc::new(opts);
    node::register_all(&client, &opts).await?;
    tracing::info!(count = opts.count, "simulated nodes registered");
    let heartbeat = crate::controllers::informer::spawn_named(
        "simulated-node-heartbeat",
        node::heartbeat(client.clone(), opts.clone()),
    );
    let pods = crate::controllers::informer::spawn_named(
        "simulated-pod-lifecycle",
        pods::run(client, opts),
    );
    let _guard =
        crate::controllers::AbortOnDrop(vec![heartbeat.abort_handle(), pods.abort_handle()]);
    tokio::select! {
        _ = heartbeat => {}
        _ = pods => {}
    }
    Err(SimulatedError::Stopped)
}
