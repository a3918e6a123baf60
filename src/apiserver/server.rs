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

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::CompressionLayer;
use tracing::Instrument;

use super::authn::{self, Authenticator, LoopbackIdentity, PeerIdentity, TokenFile};
use super::authz::{self, AuthorizerHandle, DefaultPolicy, RequestAttributes};
use super::config::{Datastore, ServerConfig};
use super::health::{self, Health};
use super::kubeconfig::{self, KubeconfigError};
use super::metrics::{self, Metrics};
use super::pki::{self, Pki, PkiError, ServingNames};
use super::status::ApiError;
use super::tls::{self, TlsError};
use super::{version, UserInfo};
use crate::controllers::start_cluster_components;
use crate::store::etcd::EtcdBackend;
use crate::store::sqlite::{SqliteBackend, SqliteOptions};
use crate::store::{Backend, CacheOptions, Store, StoreError};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the controllers to give up their Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);
/// A refused request body up to this size is read and discarded before the 413 goes out.
const DRAIN_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Complete response bodies at least this large are gzipped for clients that accept it.
const COMPRESS_MIN_BYTES: u64 = 1024;

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

/// The routers that need the store, installed once it is open.
#[derive(Clone)]
struct ApiRoutes {
    api: Router,
    openapi: Router,
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

/// Who the in-process controllers, scheduler and simulated nodes are.
fn controller_identity() -> UserInfo {
    UserInfo {
        name: "system:kube-controller-manager".into(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

fn build_app(
    config: &ServerConfig,
    authenticator: Authenticator,
    ca_pem: &str,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    api: Arc<OnceLock<ApiRoutes>>,
    stop: watch::Receiver<bool>,
) -> Router {
    let authenticator = Arc::new(authenticator);
    let ca_pem = ca_pem.to_string();
    let authorizer = AuthorizerHandle(Arc::new(DefaultPolicy));
    let limit = Arc::new(InflightLimit {
        permits: Arc::new(Semaphore::new(config.max_requests_inflight.max(1))),
        metrics: metrics.clone(),
    });
    Router::new()
        .merge(health::router(health))
        .merge(version::router())
        .route("/metrics", get(metrics::handler).with_state(metrics.clone()))
        .route(super::join::CA_PATH, get(move || std::future::ready(ca_pem.clone())))
        .fallback(move |req: Request| dispatch_api(api.clone(), req))
        .layer(DefaultBodyLimit::max(config.max_request_body_bytes))
        .layer(from_fn_with_state(authorizer, authz::middleware))
        .layer(from_fn_with_state(config.max_request_body_bytes, body_limit))
        .layer(from_fn_with_state(limit, inflight_limit))
        .layer(from_fn_with_state(authenticator, authn::middleware))
        .layer(CompressionLayer::new().gzip(true).compress_when(LargeCompleteBodies))
        .layer(from_fn_with_state(stop, end_streams_on_shutdown))
        .layer(from_fn_with_state(metrics, metrics::middleware))
}

/// Sends /api, /apis and /openapi requests to the routers written by the API layer.
async fn dispatch_api(api: Arc<OnceLock<ApiRoutes>>, req: Request) -> Response {
    let Some(routes) = api.get() else {
        return ApiError::service_unavailable(
            "the server is starting up: the datastore is not ready yet",
        )
        .into_response();
    };
    let path = req.uri().path();
    let router = if path == "/openapi" || path.starts_with("/openapi/") {
        routes.openapi.clone()
    } else {
        routes.api.clone()
    };
    match router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The in-flight cap: long-running requests and health checks are exempt.
struct InflightLimit {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

struct InflightGuard {
    metrics: Arc<Metrics>,
    mutating: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.metrics.inflight(self.mutating, false);
    }
}

async fn inflight_limit(
    State(limit): State<Arc<InflightLimit>>,
    req: Request,
    next: Next,
) -> Response {
    let (exempt, mutating) = match req.extensions().get::<RequestAttributes>() {
        Some(a) => (a.long_running || authn::is_public_path(&a.path), a.is_mutating()),
        None => (authn::is_public_path(req.uri().path()), false),
    };
    // As upstream's exempt priority level (API Priority and Fairness): system:masters (the
    // admin, and the in-process controllers, scheduler and simulated nodes) is never turned
    // away, so the cluster's own work does not fail with 429 under load.
    let exempt = exempt
        || req
            .extensions()
            .get::<super::UserInfo>()
            .is_some_and(|u| u.groups.iter().any(|g| g == authz::MASTERS_GROUP));
    if exempt {
        return next.run(req).await;
    }
    let Ok(permit) = limit.permits.clone().try_acquire_owned() else {
        limit.metrics.rejected(mutating);
        tracing::debug!(path = %req.uri().path(), "too many requests in flight");
        return ApiError::too_many_requests(1).into_response();
    };
    limit.metrics.inflight(mutating, true);
    let _guard = InflightGuard { metrics: limit.metrics.clone(), mutating, _permit: permit };
    next.run(req).await
}

/// Caps request bodies with a 413 Status. A declared length over the cap is refused before the
/// handler runs; a body of unknown length (chunked) is read here up to the cap and handed on
/// whole. A refused body is still read and discarded (up to [`DRAIN_MAX_BYTES`]) so that clients
/// which only read the answer after sending everything (hyper, urllib3) get the 413 rather than
/// a broken pipe.
async fn body_limit(State(max): State<usize>, req: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::request_entity_too_large(format!("Request entity too large: limit is {max}"))
            .into_response()
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared {
        if len > max as u64 {
            if len <= DRAIN_MAX_BYTES {
                drain(req.into_body().into_data_stream(), DRAIN_MAX_BYTES).await;
            }
            return too_large();
        }
        return next.run(req).await;
    }
    let long_running = req.extensions().get::<RequestAttributes>().is_some_and(|a| a.long_running);
    let may_have_body = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::CONNECT
    );
    if long_running || !may_have_body || req.headers().contains_key(axum::http::header::UPGRADE) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) if buf.len() + chunk.len() > max => {
                drain(stream, DRAIN_MAX_BYTES).await;
                return too_large();
            }
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read a request body");
                return ApiError::bad_request("unable to read the request body").into_response();
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(buf.freeze()))).await
}

/// Reads and discards at most `limit` more bytes of a body (for at most a few seconds).
async fn drain(mut stream: axum::body::BodyDataStream, limit: u64) {
    let mut seen = 0u64;
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
}

/// Ends long-running response streams (watches) when shutdown begins, so connections can drain.
async fn end_streams_on_shutdown(
    State(stop): State<watch::Receiver<bool>>,
    req: Request,
    next: Next,
) -> Response {
    let long_running = req.extensions().get::<RequestAttributes>().is_some_and(|a| a.long_running);
    let response = next.run(req).await;
    if !long_running || !response.status().is_success() {
        return response;
    }
    let mut stop = stop.clone();
    let ended = async move { stopped(&mut stop).await };
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().take_until(Box::pin(ended));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Compresses only complete bodies of a known, large enough size: never streams.
#[derive(Clone, Copy, Debug)]
struct LargeCompleteBodies;

impl Predicate for LargeCompleteBodies {
    fn should_compress<B>(&self, response: &axum::http::Response<B>) -> bool
    where
        B: axum::body::HttpBody,
    {
        let streaming_type = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        response.status().is_success()
            && !streaming_type
            && response.body().size_hint().exact().is_some_and(|n| n >= COMPRESS_MIN_BYTES)
    }
}

/// Owns the listener and the background tasks; ends them all on shutdown or failure.
struct Supervisor {
    config: ServerConfig,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    api: Arc<OnceLock<ApiRoutes>>,
    store_slot: Arc<OnceLock<Store>>,
    phase: watch::Sender<Phase>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    started: Instant,
}

impl Supervisor {
    async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), ServerError> {
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

async fn open_storage(
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
    let store =
        Store::open(backend, CacheOptions::default()).await.map_err(ServerError::Storage)?;
    health.set_store_open();
    let probe = super::health::probe_datastore(health.clone(), store.backend().clone());
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
        api: super::handlers::api_router(store.clone()),
        openapi: super::openapi::openapi_router(),
    };
    let _ = api.set(routes);
    health.set_bootstrapped();
    Ok(store)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
    conns: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let task = serve_connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    stop.clone(),
                    conns.clone(),
                );
                tokio::spawn(task);
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
    _conn: mpsc::Sender<()>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "tls handshake timed out");
            return;
        }
    };
    let user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| authn::user_from_client_cert(leaf.as_ref()))
        .map(Arc::new);
    let identity = PeerIdentity(user);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(identity.clone());
        app.clone().oneshot(req)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // The timer arms hyper's header read timeout (slow clients cannot hold connections forever).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
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

    fn attrs_for(uri: &str) -> RequestAttributes {
        let uri: axum::http::Uri = uri.parse().expect("uri");
        RequestAttributes::parse(&axum::http::Method::GET, &uri, &axum::http::HeaderMap::new())
    }

    fn req(uri: &str) -> Request {
        let mut r = Request::get(uri).body(Body::empty()).expect("request");
        r.extensions_mut().insert(attrs_for(uri));
        r
    }

    #[tokio::test]
    async fn inflight_cap_answers_429_and_exempts_long_running() {
        let permits = Arc::new(Semaphore::new(1));
        let limit = Arc::new(InflightLimit { permits: permits.clone(), metrics: Metrics::new() });
        let gate = Arc::new(Semaphore::new(0));
        let g = gate.clone();
        let app = Router::new()
            .route(
                "/api/v1/pods",
                get(move || {
                    let g = g.clone();
                    async move {
                        let _ = g.acquire().await.map(|p| p.forget());
                        "done"
                    }
                }),
            )
            .layer(from_fn_with_state(limit, inflight_limit));

        let first = tokio::spawn(app.clone().oneshot(req("/api/v1/pods")));
        while permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let second = app.clone().oneshot(req("/api/v1/pods")).await.expect("infallible");
        assert_eq!(second.status(), 429);
        assert_eq!(second.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));

        // system:masters is exempt.
        let mut admin = req("/api/v1/pods");
        admin.extensions_mut().insert(crate::apiserver::UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec![authz::MASTERS_GROUP.into()],
        });
        let admin = tokio::spawn(app.clone().oneshot(admin));

        // A watch is not counted: it reaches the (blocked) handler instead of getting 429.
        let watch = tokio::spawn(app.clone().oneshot(req("/api/v1/pods?watch=true")));
        gate.add_permits(3);
        assert_eq!(admin.await.expect("join").expect("infallible").status(), 200);
        assert_eq!(watch.await.expect("join").expect("infallible").status(), 200);
        assert_eq!(first.await.expect("join").expect("infallible").status(), 200);
        assert_eq!(permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn declared_bodies_over_the_cap_get_413() {
        let app = Router::new()
            .route("/api/v1/namespaces", axum::routing::post(|| async { "created" }))
            .layer(from_fn_with_state(10usize, body_limit));
        let big = Request::post("/api/v1/namespaces")
            .header(CONTENT_LENGTH, "11")
            .body(Body::from("01234567890"))
            .expect("request");
        let r = app.clone().oneshot(big).await.expect("infallible");
        assert_eq!(r.status(), 413);
        let small = Request::post("/api/v1/namespaces")
            .header(CONTENT_LENGTH, "2")
            .body(Body::from("{}"))
            .expect("request");
        assert_eq!(app.oneshot(small).await.expect("infallible").status(), 200);
    }

    #[test]
    fn error_chain_joins_causes_once() {
        let e = ServerError::Storage(StoreError::Corrupt("bad header".into()));
        assert_eq!(
            error_chain(&e),
            "cannot open the datastore: database is not usable: bad header"
        );
    }
}
