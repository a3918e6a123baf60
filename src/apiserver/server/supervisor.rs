//! The supervisor: owns the listener, the datastore opening and the cluster components, and
//! ends them all on shutdown or failure.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::listener::accept_loop;
use super::router::ApiRoutes;
use super::storage::open_storage;
use super::{loopback_client, stopped, Phase, ServerError};
use crate::apiserver::config::ServerConfig;
use crate::apiserver::health::Health;
use crate::apiserver::metrics::Metrics;
use crate::apiserver::UserInfo;
use crate::controllers::start_cluster_components;
use crate::store::Store;

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the controllers to give up their Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Who the in-process controllers, scheduler and simulated nodes are.
fn controller_identity() -> UserInfo {
    UserInfo {
        name: "system:kube-controller-manager".into(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

/// Owns the listener and the background tasks; ends them all on shutdown or failure.
pub(super) struct Supervisor {
    pub(super) config: ServerConfig,
    pub(super) listener: TcpListener,
    pub(super) acceptor: TlsAcceptor,
    pub(super) app: Router,
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) api: Arc<OnceLock<ApiRoutes>>,
    pub(super) store_slot: Arc<OnceLock<Store>>,
    pub(super) phase: watch::Sender<Phase>,
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) stop_rx: watch::Receiver<bool>,
    pub(super) started: Instant,
}

impl Supervisor {
    pub(super) async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ServerError> {
        let (conn_tx, mut conn_rx) = mpsc::channel::<()>(1);
        let advertise = self.listener.local_addr().ok();
        let mut accept = tokio::spawn(
            accept_loop(
                self.listener,
                self.acceptor,
                self.app.clone(),
                self.stop_rx.clone(),
                conn_tx,
            )
            .instrument(tracing::info_span!("task", name = "listener")),
        );
        let storage = open_storage(
            self.config.clone(),
            advertise,
            self.health.clone(),
            self.metrics.clone(),
            self.api.clone(),
            self.store_slot.clone(),
        );
        tokio::pin!(storage);
        let mut storage_done = false;
        let mut components: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
        let outcome = loop {
            let components_ended = async {
                match components.as_mut() {
                    Some(task) => task.await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped(&mut shutdown) => {
                    tracing::info!("shutting down");
                    break Ok(());
                }
                result = &mut storage, if !storage_done => {
                    storage_done = true;
                    match result {
                        Ok(_store) => {
                            let _ = self.phase.send(Phase::Ready);
                            tracing::info!(elapsed_ms = self.started.elapsed().as_millis() as u64, "ready");
                            if let Some(mut opts) = self.config.components.clone() {
                                opts.shutdown = Some(self.stop_rx.clone());
                                let client = loopback_client(&self.app, controller_identity());
                                match start_cluster_components(client, opts).await {
                                    Ok(task) => components = Some(task),
                                    Err(e) => break Err(ServerError::Components(format!("{e:#}"))),
                                }
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
                joined = components_ended => {
                    let why = match joined {
                        Ok(Ok(())) => "they stopped".to_string(),
                        Ok(Err(e)) => format!("{e:#}"),
                        Err(e) => format!("their task ended: {e}"),
                    };
                    break Err(ServerError::Components(why));
                }
                joined = &mut accept => {
                    let why = match joined {
                        Ok(()) => "the listener stopped".to_string(),
                        Err(e) => format!("the listener task ended: {e}"),
                    };
                    break Err(ServerError::Task(why));
                }
            }
        };
        if let Err(e) = &outcome {
            self.health.set_store_failed();
            let _ = self.phase.send(Phase::Failed(crate::apiserver::server::error_chain(e)));
        }
        self.health.set_shutting_down();
        let _ = self.stop_tx.send(true);
        // The accept loop drops its sender on stop; connections drop theirs when they finish.
        if tokio::time::timeout(DRAIN_TIMEOUT, conn_rx.recv()).await.is_err() {
            tracing::warn!("connections still open after the drain timeout; closing them");
        }
        accept.abort();
        if let Some(mut task) = components {
            // A leader releases its Lease on the stop signal (one write); the rest is aborted.
            let leads =
                self.config.components.as_ref().is_some_and(|c| c.leader_election.is_some());
            if !leads || tokio::time::timeout(RELEASE_TIMEOUT, &mut task).await.is_err() {
                task.abort();
            }
        }
        outcome
    }
}
