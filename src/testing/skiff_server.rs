//! skiff servers for integration tests and benchmarks: in-process ([`InProcessServer`]) or as a
//! separate process of the real binary ([`SkiffProcess`]), each on an ephemeral loopback port with
//! its own temporary data dir; plus clients with chosen credentials and a runner for the stock
//! kubectl binaries ([`kubectl_binaries`], [`run_kubectl`]).
//!
//! Readiness is always polled (kubeconfig present, then /readyz 200 over TLS verified with the
//! cluster CA), never assumed after a sleep.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::apiserver::config::ServerConfig;
use crate::apiserver::server::{self, ServerError, ServerHandle};

/// How long a server may take to become ready before a helper gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong starting or reaching a test server.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed")]
    Server(#[from] ServerError),
    #[error("kube client error")]
    Kube(#[from] kube::Error),
    #[error("cannot load the kubeconfig")]
    KubeconfigLoad(#[from] kube::config::KubeconfigError),
    #[error("unusable kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("skiff exited with {status} before it was ready; its log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("skiff was not ready within {timeout:?}; its log:\n{log}")]
    Timeout { timeout: Duration, log: String },
}

type Result<T, E = TestServerError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestServerError {
    let what = what.into();
    move |source| TestServerError::Io { what, source }
}

/// A directory under the system temp dir, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, empty directory whose name starts with `skiff-<tag>-`.
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("skiff-{tag}-{}-{n}-{nanos}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temp dir name"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Which credentials a client presents.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// The kubeconfig's user (the admin client certificate).
    Kubeconfig,
    /// None at all (TLS still verified with the cluster CA).
    Anonymous,
    /// `Authorization: Bearer <token>`.
    Token(String),
}

/// A kube client for the server a kubeconfig points at, with the given credentials. Retries on
/// 429/503 are off so tests see what the server answers.
pub async fn client_for(kubeconfig: &Path, credentials: Credentials) -> Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let mut config = match credentials {
        Credentials::Kubeconfig => {
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        Credentials::Anonymous | Credentials::Token(_) => {
            let (url, ca_der) = cluster_of(kubeconfig, &kc)?;
            let mut config = kube::Config::new(url);
            config.root_cert = Some(vec![ca_der]);
            if let Credentials::Token(token) = &credentials {
                let value =
                    format!("Bearer {token}").parse().map_err(|_| TestServerError::Kubeconfig {
                        path: kubeconfig.to_path_buf(),
                        reason: "the token cannot go in a header".into(),
                    })?;
                config.headers.push((axum::http::header::AUTHORIZATION, value));
            }
            config
        }
    };
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

/// The server URL and the CA (DER) of a kubeconfig's first cluster.
fn cluster_of(path: &Path, kc: &Kubeconfig) -> Result<(axum::http::Uri, Vec<u8>)> {
    let bad = |reason: &str| TestServerError::Kubeconfig {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let cluster =
        kc.clusters.first().and_then(|c| c.cluster.as_ref()).ok_or_else(|| bad("no cluster"))?;
    let url = cluster
        .server
        .as_deref()
        .ok_or_else(|| bad("no server"))?
        .parse()
        .map_err(|_| bad("bad server URL"))?;
    let ca_b64 = cluster.certificate_authority_data.as_deref().ok_or_else(|| bad("no CA data"))?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64)
        .map_err(|_| bad("CA data not base64"))?;
    let ca_pem = String::from_utf8(ca_pem).map_err(|_| bad("CA data not PEM"))?;
    let der = crate::apiserver::pki::pem_to_der(&ca_pem).ok_or_else(|| bad("CA data not PEM"))?;
    Ok((url, der))
}

/// A response as a test sees it.
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl RawResponse {
    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request and returns whatever the server answered (no status checking).
pub async fn request(
    client: &kube::Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<RawResponse> {
    let mut builder = axum::http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(kube::client::Body::from(body)).map_err(kube::Error::HttpError)?;
    let response = client.send(req).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect_bytes().await?;
    Ok(RawResponse { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() })
}

/// GET `path`.
pub async fn get(client: &kube::Client, path: &str) -> Result<RawResponse> {
    request(client, "GET", path, &[], Vec::new()).await
}

/// A server running inside this process on 127.0.0.1 with a temporary data dir; shut down on
/// drop.
pub struct InProcessServer {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    /// An admin client built from the kubeconfig (over TLS, like any remote client).
    pub client: kube::Client,
    handle: ServerHandle,
    dir: TempDir,
}

impl InProcessServer {
    /// Starts a server with default settings and waits until it is ready.
    pub async fn start() -> Result<InProcessServer> {
        Self::start_with(|_| {}).await
    }

    /// Like [`InProcessServer::start`], letting the caller adjust the configuration (the data dir,
    /// address and port are preset).
    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Result<InProcessServer> {
        let dir = TempDir::new("server").map_err(io("create a temp dir"))?;
        let mut config = ServerConfig::new(dir.path().join("data"));
        config.bind_address = std::net::IpAddr::from([127, 0, 0, 1]);
        config.secure_port = 0;
        configure(&mut config);
        let handle = server::start(config).await?;
        tokio::time::timeout(READY_TIMEOUT, handle.ready()).await.map_err(|_| {
            TestServerError::Timeout { timeout: READY_TIMEOUT, log: String::new() }
        })??;
        let kubeconfig = handle.kubeconfig_path().to_path_buf();
        let client = client_for(&kubeconfig, Credentials::Kubeconfig).await?;
        Ok(InProcessServer { addr: handle.local_addr(), kubeconfig, client, handle, dir })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Shuts down and waits for the server to stop.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.handle.shutdown();
        self.handle.wait().await
    }
}

/// How to spawn a skiff process.
#[derive(Clone, Debug, Default)]
pub struct SpawnOptions {
    /// Use this data dir (kept after the process ends) instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// More arguments for `skiff server`.
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
}

/// The real binary running `skiff server --secure-port 0` on 127.0.0.1. Killed on drop.
pub struct SkiffProcess {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub data_dir: PathBuf,
    /// From spawn until /readyz first answered 200.
    pub startup: Duration,
    child: tokio::process::Child,
    log_path: PathBuf,
    _dir: Option<TempDir>,
}

impl SkiffProcess {
    /// Spawns `binary` with a fresh data dir and waits until it is ready.
    pub async fn spawn(binary: &Path) -> Result<SkiffProcess> {
        Self::spawn_with(binary, SpawnOptions::default()).await
    }

    /// Spawns `binary` as `options` say and waits until it is ready.
    pub async fn spawn_with(binary: &Path, options: SpawnOptions) -> Result<SkiffProcess> {
        let (temp, data_dir) = match &options.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = TempDir::new("proc").map_err(io("create a temp dir"))?;
                let d = t.path().join("data");
                (Some(t), d)
            }
        };
        std::fs::create_dir_all(&data_dir).map_err(io(format!("create {}", data_dir.display())))?;
        let kubeconfig = data_dir.join("kubeconfig.yaml");
        // A kubeconfig left by an earlier run names an old port: wait for the new one.
        let _ = std::fs::remove_file(&kubeconfig);
        let log_path = data_dir.join(format!("skiff-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).map_err(io("create the log file"))?;
        let log_err = log.try_clone().map_err(io("duplicate the log file"))?;

        let started = Instant::now();
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
            .args(&options.args)
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(io(format!("run {}", binary.display())))?;
        let mut process = SkiffProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig,
            data_dir,
            startup: Duration::ZERO,
            child,
            log_path,
            _dir: temp,
        };
        process.wait_ready(started).await?;
        Ok(process)
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let deadline = started + READY_TIMEOUT;
        let mut pause = Duration::from_millis(2);
        let mut client: Option<kube::Client> = None;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io("poll the child"))? {
                return Err(TestServerError::Exited { status, log: self.log() });
            }
            if client.is_none() && self.kubeconfig.exists() {
                // The file is renamed into place whole, so it is complete once it exists.
                let c = client_for(&self.kubeconfig, Credentials::Anonymous).await?;
                let kc = Kubeconfig::read_from(&self.kubeconfig)?;
                let (url, _) = cluster_of(&self.kubeconfig, &kc)?;
                if let (Some(host), Some(port)) = (url.host(), url.port_u16()) {
                    if let Ok(ip) =
                        host.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>()
                    {
                        self.addr = SocketAddr::new(ip, port);
                    }
                }
                client = Some(c);
            }
            if let Some(c) = &client {
                if let Ok(r) = get(c, "/readyz").await {
                    if r.status == 200 {
                        self.startup = started.elapsed();
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(TestServerError::Timeout { timeout: READY_TIMEOUT, log: self.log() });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// An admin client from the kubeconfig.
    pub async fn client(&self) -> Result<kube::Client> {
        client_for(&self.kubeconfig, Credentials::Kubeconfig).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// What the process logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process's resident memory (from /proc), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// SIGTERM, then waits (SIGKILL after `grace`). Returns the exit status.
    pub async fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(pid) = self.child.id() {
            // SAFETY: sending a signal to our own child process id.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.map_err(io("wait for skiff")),
            Err(_) => {
                let _ = self.child.start_kill();
                self.child.wait().await.map_err(io("wait for skiff"))
            }
        }
    }
}

/// One kubectl binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kubectl {
    /// "1.27" ...
    pub version: String,
    pub path: PathBuf,
}

/// The versioned kubectl binaries (kubectl.1.NN) next to the real file behind `kubectl` on PATH,
/// oldest first. Empty when there is none.
pub fn kubectl_binaries() -> Vec<Kubectl> {
    let Some(kubectl) = find_on_path("kubectl") else {
        return Vec::new();
    };
    let Ok(real) = std::fs::canonicalize(&kubectl) else {
        return Vec::new();
    };
    let Some(dir) = real.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, Kubectl)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("kubectl.")?.to_string();
            let (major, minor) = version.split_once('.')?;
            let minor: u32 = minor.parse().ok()?;
            (major == "1").then(|| (minor, Kubectl { version, path: e.path() }))
        })
        .collect();
    found.sort_by_key(|(minor, _)| *minor);
    found.into_iter().map(|(_, k)| k).collect()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// What a kubectl run produced.
#[derive(Clone, Debug)]
pub struct KubectlOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs `kubectl args...` with KUBECONFIG set (and a discovery cache beside the kubeconfig);
/// killed after 120 s.
pub async fn run_kubectl(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
) -> Result<KubectlOutput> {
    let cache = kubeconfig.parent().unwrap_or(Path::new(".")).join("kubectl-cache");
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", &cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(io(format!("run {}", kubectl.display())))?;
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .map_err(|_| TestServerError::Io {
            what: format!("finish {} {}", kubectl.display(), args.join(" ")),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        })?
        .map_err(io(format!("wait for {}", kubectl.display())))?;
    Ok(KubectlOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
