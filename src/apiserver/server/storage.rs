//! Opening the datastore (SQLite or etcd), the bootstrap objects, and installing the API
//! routers once both are there.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tracing::Instrument;

use super::router::ApiRoutes;
use super::ServerError;
use crate::apiserver::config::{Datastore, ServerConfig};
use crate::apiserver::health::Health;
use crate::apiserver::metrics::Metrics;
use crate::apiserver::pki::{self, PkiError};
use crate::store::etcd::EtcdBackend;
use crate::store::sqlite::{SqliteBackend, SqliteOptions};
use crate::store::{Backend, CacheOptions, Store};

pub(super) async fn open_storage(
    config: ServerConfig,
    advertise: Option<SocketAddr>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    api: Arc<OnceLock<ApiRoutes>>,
    slot: Arc<OnceLock<Store>>,
) -> Result<Store, ServerError> {
    let started = Instant::now();
    let backend: Arc<dyn Backend> = match &config.datastore {
        Datastore::Sqlite => {
            let path = SqliteBackend::db_path(&config.data_dir);
            if let Some(dir) = path.parent() {
                pki::ensure_private_dir(dir).map_err(|e| match e {
                    PkiError::Io { path, source } => ServerError::DataDir { path, source },
                    other => ServerError::Pki(other),
                })?;
            }
            tracing::info!(path = %path.display(), "opening sqlite datastore");
            let backend = tokio::task::spawn_blocking(move || {
                SqliteBackend::open(&path, SqliteOptions::default())
            })
            .await
            .map_err(|e| ServerError::Task(format!("datastore task ended: {e}")))?
            .map_err(ServerError::Storage)?;
            Arc::new(backend)
        }
        Datastore::Etcd { endpoint, tls } => {
            tracing::info!(endpoint = %endpoint, "connecting to etcd");
            Arc::new(
                EtcdBackend::connect(endpoint, tls.to_etcd_tls())
                    .await
                    .map_err(ServerError::Storage)?,
            )
        }
    };
    let cache = match &config.datastore {
        Datastore::Sqlite => CacheOptions::default(),
        // etcd's history is read by replaying a watch over the whole key space, so it keeps the
        // deeper window and fewer watchers need that read.
        Datastore::Etcd { .. } => CacheOptions::deep_window(),
    };
    let store = Store::open(backend, cache).await.map_err(ServerError::Storage)?;
    health.set_store_open();
    let probe = crate::apiserver::health::probe_datastore(health.clone(), store.backend().clone());
    tokio::spawn(probe.instrument(tracing::info_span!("task", name = "datastore-probe")));
    metrics.set_store(store.clone());
    let _ = slot.set(store.clone());
    tracing::info!(
        backend = store.backend_name(),
        revision = store.revision(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "datastore open"
    );
    crate::registry::bootstrap::ensure_defaults(&store)
        .await
        .map_err(|e| ServerError::Bootstrap(format!("{e:#}")))?;
    if let Some(addr) = advertise {
        // The `kubernetes` service points at this server (loopback when bound to every address).
        let ip = if addr.ip().is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
        crate::registry::bootstrap::reconcile_kubernetes_endpoints(&store, ip, addr.port())
            .await
            .map_err(|e| ServerError::Bootstrap(format!("{e:#}")))?;
    }
    let routes = ApiRoutes {
        api: crate::apiserver::handlers::api_router(store.clone()),
        openapi: crate::apiserver::openapi::openapi_router(),
    };
    let _ = api.set(routes);
    health.set_bootstrapped();
    Ok(store)
}
