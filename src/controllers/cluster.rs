//! The cluster components of a server process — controllers, scheduler and simulated nodes —
//! started together over an in-process client ([`start_cluster_components`]), and
//! [`LocalCluster`], a whole cluster without a listener (store, API router, components) for
//! tests and benchmarks.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::client::in_process_client;
use super::informer::spawn_named;
use super::{run_all, AbortOnDrop, ControllerOptions};
use crate::agent::simulated::{self, NodeCapacity, NodeSwitch, SimulatedOptions};
use crate::store::sqlite::{SqliteBackend, SqliteOptions};
use crate::store::{CacheOptions, Store};
use crate::testing::skiff_server::TempDir;

/// Which components run.
#[derive(Clone, Debug)]
pub struct ComponentOptions {
    /// Run the controllers and the scheduler.
    pub controllers: bool,
    pub controller_options: ControllerOptions,
    /// Simulated nodes to register (0: none).
    pub simulate_nodes: usize,
    pub node_capacity: NodeCapacity,
    /// Stops and restarts simulated nodes (tests: a node that loses the cluster).
    pub node_switch: NodeSwitch,
    /// How often simulated nodes renew their Lease (upstream's kubelet: 10 s).
    pub node_lease_renew: std::time::Duration,
    /// Run the controllers and the scheduler only while holding this Lease (None: always).
    pub leader_election: Option<super::leader::LeaderElectionConfig>,
    /// Turns true when the server shuts down (the leader then releases its Lease).
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for ComponentOptions {
    fn default() -> Self {
        ComponentOptions {
            controllers: true,
            controller_options: ControllerOptions::default(),
            simulate_nodes: 0,
            node_capacity: NodeCapacity::default(),
            node_switch: NodeSwitch::default(),
            node_lease_renew: std::time::Duration::from_secs(10),
            leader_election: None,
            shutdown: None,
        }
    }
}

/// What ends the cluster components.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot create a data dir")]
    DataDir(#[source] std::io::Error),
    #[error("cannot open the store")]
    Store(#[source] crate::store::StoreError),
    #[error("the store task ended")]
    Join(#[source] tokio::task::JoinError),
}

/// Starts the controllers, the scheduler and the simulated nodes (as `opts` says) over `client`
/// (in the server: an in-process client through the whole request pipeline). Call after bootstrap; the returned task ends only when a
/// component fails (abort it to stop them all).
pub async fn start_cluster_components(
    client: kube::Client,
    opts: ComponentOptions,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    Ok(spawn_named("cluster-components", run_components(client, opts)))
}

async fn run_components(client: kube::Client, opts: ComponentOptions) -> anyhow::Result<()> {
    let mut tasks = vec![];
    if opts.controllers {
        let c = client.clone();
        let o = opts.controller_options.clone();
        match opts.leader_election.clone() {
            None => tasks.push(spawn_named("controller-manager", run_all(c, o))),
            Some(le) => tasks.push(spawn_named(
                "controller-manager",
                super::leader::run_while_leader(c.clone(), le, opts.shutdown.clone(), move || {
                    run_all(c.clone(), o.clone())
                }),
            )),
        }
    }
    if opts.simulate_nodes > 0 {
        let mut sim = SimulatedOptions::new(opts.simulate_nodes, opts.node_capacity.clone());
        sim.switch = opts.node_switch.clone();
        sim.lease_renew = opts.node_lease_renew;
        sim.informers = opts.controller_options.informers.clone();
        let c = client.clone();
        tasks.push(spawn_named("simulated-nodes", async move {
            simulated::run(c, sim).await.map_err(anyhow::Error::from)
        }));
    }
    if tasks.is_empty() {
        return futures::future::pending().await;
    }
    let _guard = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    let (result, _, _) = futures::future::select_all(tasks).await;
    match result {
        Ok(r) => r,
        Err(e) => Err(e.into()),
    }
}

/// A cluster in this process without a listener: a SQLite store in a temp dir, the bootstrap
/// objects, the API router and the components. Dropping it stops the components.
pub struct LocalCluster {
    pub store: Store,
    /// A client over the API router (acting as the controller manager, in system:masters).
    pub client: kube::Client,
    /// Stops and restarts the simulated nodes.
    pub nodes: NodeSwitch,
    components: JoinHandle<anyhow::Result<()>>,
    _dir: Arc<TempDir>,
}

impl LocalCluster {
    /// Starts a cluster with `nodes` simulated nodes and every controller.
    pub async fn start(nodes: usize) -> anyhow::Result<LocalCluster> {
        Self::start_with(ComponentOptions { simulate_nodes: nodes, ..Default::default() }).await
    }

    pub async fn start_with(opts: ComponentOptions) -> anyhow::Result<LocalCluster> {
        let dir = TempDir::new("cluster").map_err(ClusterError::DataDir)?;
        let path = SqliteBackend::db_path(dir.path());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(ClusterError::DataDir)?;
        }
        let backend = tokio::task::spawn_blocking(move || {
            SqliteBackend::open(&path, SqliteOptions::default())
        })
        .await
        .map_err(ClusterError::Join)?
        .map_err(ClusterError::Store)?;
        let store = Store::open(Arc::new(backend), CacheOptions::default())
            .await
            .map_err(ClusterError::Store)?;
        crate::registry::bootstrap::ensure_defaults(&store).await?;
        let client = in_process_client(store.clone());
        let nodes = opts.node_switch.clone();
        let components = start_cluster_components(in_process_client(store.clone()), opts).await?;
        Ok(LocalCluster { store, client, nodes, components, _dir: Arc::new(dir) })
    }

    /// Whether the components are still running (false: one failed; see [`LocalCluster::stop`]).
    pub fn running(&self) -> bool {
        !self.components.is_finished()
    }

    /// Stops the components; returns why they had stopped, if they had.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if !self.components.is_finished() {
            self.components.abort();
            return Ok(());
        }
        let result = (&mut self.components).await;
        match result {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.components.abort();
    }
}

/// Polls `check` every 50 ms until it returns Some, or fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(
    timeout: std::time::Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
