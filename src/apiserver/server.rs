//! The server shell: certificates, the TLS listener (HTTP/2 and HTTP/1.1), the request stages in
//! front of the API, the datastore, readiness and shutdown.
//!
//! Request stages, outermost first: metrics (also parses the request attributes) → gzip for large
//! complete bodies → authentication → in-flight cap (429) → body size cap (413) → authorization
//! → routes (health, /version, /metrics, then the API and OpenAPI routers once the store is open).
//!
//! [`start`] returns as soon as the port is bound and the kubeconfig written; /readyz turns 200
//! once the datastore is open and the bootstrap objects exist; then the cluster components
//! (controllers, scheduler; see [`ServerConfig::components`]) start. A component failing ends the
//! server with that error ([`ServerHandle::wait`]).

//! The pieces: `router.rs` assembles the stages and routes, `limits.rs` holds the in-flight and
//! body caps, `listener.rs` the TLS accept loop and connections, `storage.rs` opens the datastore
//! and installs the API, `supervisor.rs` runs it all and orders shutdown.

mod limits;
mod listener;
mod router;
mod storage;
mod supervisor;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use self::router::{build_app, ApiRoutes};
use self::supervisor::Supervisor;
use super::authn::{self, Authenticator, LoopbackIdentity, TokenFile};
use super::authz;
use super::config::ServerConfig;
use super::health::Health;
use super::kubeconfig::{self, KubeconfigError};
use super::metrics::Metrics;
use super::pki::{self, Pki, PkiError, ServingNames};
use super::tls::{self, TlsError};
use super::UserInfo;
use crate::store::{Store, StoreError};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the data dir {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare certificates")]
    Pki(#[from] PkiError),
    #[error("cannot load bearer tokens")]
    Tokens(#[from] authn::AuthnError),
    #[error("cannot prepare the agent join token")]
    Join(#[from] super::join::JoinError),
    #[error("cannot configure TLS")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the kubeconfig")]
    Kubeconfig(#[from] KubeconfigError),
    #[error("cannot open the datastore")]
    Storage(#[source] StoreError),
    #[error("cannot create the default objects: {0}")]
    Bootstrap(String),
    #[error("the cluster components failed: {0}")]
    Components(String),
    #[error("{0}")]
    Task(String),
}

/// Where start-up stands, for [`ServerHandle::ready`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    Failed(String),
}

/// A running server. Dropping it asks the server to shut down.
pub struct ServerHandle {
    local_addr: SocketAddr,
    server_url: String,
    kubeconfig_path: PathBuf,
    pki: Arc<Pki>,
    app: Router,
    store: Arc<OnceLock<Store>>,
    phase: watch::Receiver<Phase>,
    shutdown: ShutdownTrigger,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl ServerHandle {
    /// The address the listener is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// The URL the kubeconfig names.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
    pub fn kubeconfig_path(&self) -> &std::path::Path {
        &self.kubeconfig_path
    }
    pub fn pki(&self) -> &Pki {
        &self.pki
    }
    /// The store, once open.
    pub fn store(&self) -> Option<Store> {
        self.store.get().cloned()
    }

    /// Waits until /readyz passes; fails if start-up failed.
    pub async fn ready(&self) -> Result<(), ServerError> {
        let mut rx = self.phase.clone();
        let phase = rx.wait_for(|p| *p != Phase::Starting).await.map(|p| p.clone());
        match phase {
            Ok(Phase::Ready) => Ok(()),
            Ok(Phase::Failed(why)) => Err(ServerError::Task(why)),
            _ => Err(ServerError::Task("the server stopped during start-up".into())),
        }
    }

    /// A kube client that talks to this server in-process through its router (no TCP, no TLS),
    /// as `user`. Requests go through every stage, authorization included.
    pub fn loopback_client(&self, user: UserInfo) -> kube::Client {
        loopback_client(&self.app, user)
    }

    /// Asks the server to stop (graceful: readiness fails, connections drain).
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    /// Something that can ask the server to stop from elsewhere (a signal handler).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.shutdown.clone()
    }

    /// Waits for the server to stop: Ok after a requested shutdown, the reason after a failure.
    /// Returns at once when called again.
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(ServerError::Task(format!("server task ended: {e}")))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Asks a server to shut down; cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// The identity in-process components use with [`ServerHandle::loopback_client`].
pub fn loopback_admin() -> UserInfo {
    UserInfo {
        name: "system:skiff-loopback".into(),
        uid: String::new(),
        groups: vec![authz::MASTERS_GROUP.into(), authn::AUTHENTICATED_GROUP.into()],
    }
}

/// Prepares certificates, binds the port, writes the kubeconfig and starts serving; the datastore
/// opens in the background (see [`ServerHandle::ready`]).
pub async fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
    let started = Instant::now();
    tls::install_crypto_provider();

    let data_dir = config.data_dir.clone();
    pki::ensure_private_dir(&data_dir).map_err(|e| match e {
        PkiError::Io { path, source } => ServerError::DataDir { path, source },
        other => ServerError::Pki(other),
    })?;
    let mut extra_names = config.tls_sans.clone();
    extra_names.push(crate::registry::bootstrap::KUBERNETES_SERVICE_IP.to_string());
    let names = ServingNames::for_server(config.bind_address, &extra_names);
    let pki_dir = config.pki_dir();
    let pki = tokio::task::spawn_blocking(move || Pki::ensure(&pki_dir, &names))
        .await
        .map_err(|e| ServerError::Task(format!("certificate task ended: {e}")))??;
    let pki = Arc::new(pki);
    let tokens = match &config.token_auth_file {
        Some(path) => {
            let t = TokenFile::load(path)?;
            tracing::info!(path = %path.display(), tokens = t.len(), "loaded bearer tokens");
            t
        }
        None => TokenFile::default(),
    };
    let agent_token = {
        let (dir, ca) = (data_dir.clone(), pki.ca_cert_pem.clone());
        tokio::task::spawn_blocking(move || super::join::ensure(&dir, &ca))
            .await
            .map_err(|e| ServerError::Task(format!("join token task ended: {e}")))??
    };
    let authenticator = Authenticator { tokens, agent_token: Some(agent_token) };
    tracing::info!(path = %data_dir.join(super::join::TOKEN_FILE).display(), "agent join token ready");
    let acceptor = TlsAcceptor::from(tls::server_config(&pki)?);

    let addr = SocketAddr::new(config.bind_address, config.secure_port);
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    let server_url = kubeconfig::server_url(config.bind_address, local_addr.port());
    tracing::info!(address = %local_addr, "listening");

    let kubeconfig_path = config.kubeconfig_path();
    {
        let (path, url, pki) = (kubeconfig_path.clone(), server_url.clone(), pki.clone());
        tokio::task::spawn_blocking(move || {
            kubeconfig::write(&path, &url, &pki.ca_cert_pem, &pki.admin)
        })
        .await
        .map_err(|e| ServerError::Task(format!("kubeconfig task ended: {e}")))??;
    }
    tracing::info!(path = %kubeconfig_path.display(), server = %server_url, "wrote admin kubeconfig");
    if config.disable_agent {
        tracing::info!("node agent disabled");
    }

    let health = Health::new();
    let metrics = Metrics::new();
    let api: Arc<OnceLock<ApiRoutes>> = Arc::new(OnceLock::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = build_app(
        &config,
        authenticator,
        &pki.ca_cert_pem,
        health.clone(),
        metrics.clone(),
        api.clone(),
        stop_rx.clone(),
    );

    let (phase_tx, phase_rx) = watch::channel(Phase::Starting);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let store_slot: Arc<OnceLock<Store>> = Arc::new(OnceLock::new());
    let supervisor = Supervisor {
        config,
        listener,
        acceptor,
        app: app.clone(),
        health,
        metrics,
        api,
        store_slot: store_slot.clone(),
        phase: phase_tx,
        stop_tx,
        stop_rx,
        started,
    };
    let task = tokio::spawn(
        supervisor.run(shutdown_rx).instrument(tracing::info_span!("task", name = "apiserver")),
    );
    Ok(ServerHandle {
        local_addr,
        server_url,
        kubeconfig_path,
        pki,
        app,
        store: store_slot,
        phase: phase_rx,
        shutdown: ShutdownTrigger(Arc::new(shutdown_tx)),
        task: Some(task),
    })
}

/// A kube client over `app` in-process (no TCP, no TLS) as `user`; its requests go through every
/// stage of the pipeline, authorization and metrics included.
pub fn loopback_client(app: &Router, user: UserInfo) -> kube::Client {
    let identity = LoopbackIdentity(user);
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: axum::http::Request<kube::client::Body>| {
            req.extensions_mut().insert(identity.clone());
            req
        })
        .service(app.clone());
    kube::Client::new(svc, "default")
}

/// Resolves once the flag is true (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// An error and its causes on one line ("a: b: c").
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.ends_with(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_causes_once() {
        let e = ServerError::Storage(StoreError::Corrupt("bad header".into()));
        assert_eq!(
            error_chain(&e),
            "cannot open the datastore: database is not usable: bad header"
        );
    }
}
