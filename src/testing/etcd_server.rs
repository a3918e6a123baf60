//! A throwaway single-member etcd (Debian's etcd-server, or `$SKIFF_TEST_ETCD`) on free
//! loopback ports, for integration tests and benchmarks.
//!
//! [`EtcdServer::start`] is blocking (it spawns the process and polls `/health` until the
//! member serves requests, or a deadline passes); from async code call it directly in a
//! multi-threaded runtime or through `tokio::task::spawn_blocking`. Writes are fsynced as in
//! production (no `--unsafe-no-fsync`), so benchmarks compare durable writes. Dropping the
//! server kills and reaps the process and removes its data directory.
//!
//! [`EtcdServer::start_tls`] serves clients over TLS with client-certificate authentication,
//! using a throwaway CA and certificates written into the server's directory.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::store::etcd::EtcdTls;

/// Environment variable naming the etcd binary to run instead of `/usr/bin/etcd`.
pub const ETCD_ENV: &str = "SKIFF_TEST_ETCD";
/// Debian's etcd-server binary.
const DEBIAN_ETCD: &str = "/usr/bin/etcd";
/// How long a member may take to become healthy.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between health probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Times to retry when another process grabbed a port between choosing and binding it.
const START_ATTEMPTS: usize = 3;
/// Backend quota: well above what tests write, below etcd's recommended 8 GiB maximum.
const QUOTA_BACKEND_BYTES: u64 = 4 << 30;
/// Largest request etcd accepts (3 MiB: room for the biggest Kubernetes objects).
const MAX_REQUEST_BYTES: u64 = 3 << 20;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// The etcd binary tests would run: `$SKIFF_TEST_ETCD` (a path, or a name looked up in
/// `PATH`), else `/usr/bin/etcd`, else `etcd` from `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(value) = std::env::var_os(ETCD_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        return if path.components().count() > 1 { Some(path) } else { find_in_path(&path) };
    }
    let debian = Path::new(DEBIAN_ETCD);
    if is_executable(debian) {
        return Some(debian.to_path_buf());
    }
    find_in_path(Path::new("etcd"))
}

/// Whether an etcd binary is installed, so tests needing one can run.
pub fn etcd_available() -> bool {
    etcd_binary().is_some_and(|p| is_executable(&p))
}

fn find_in_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Writes a throwaway CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate into `dir` (ca.pem, server.pem, server-key.pem, client.pem, client-key.pem);
/// returns the client's files.
fn write_certificates(dir: &Path) -> io::Result<EtcdTls> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let fail = |e: rcgen::Error| io::Error::other(format!("generating test certificates: {e}"));
    let mut ca_params = CertificateParams::new(Vec::new()).map_err(fail)?;
    ca_params.distinguished_name.push(DnType::CommonName, "skiff-test-etcd-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, sans: Vec<String>, usage| -> io::Result<(String, String)> {
        let mut params = CertificateParams::new(sans).map_err(fail)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &issuer).map_err(fail)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let (server_cert, server_key) =
        leaf("skiff-test-etcd", sans, ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_cert, client_key) = leaf("skiff", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
    let files = [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("client.pem", client_cert),
        ("client-key.pem", client_key),
    ];
    for (name, pem) in &files {
        std::fs::write(dir.join(name), pem)?;
    }
    Ok(EtcdTls {
        ca_file: Some(dir.join("ca.pem")),
        cert_file: Some(dir.join("client.pem")),
        key_file: Some(dir.join("client-key.pem")),
    })
}

/// Picks `n` distinct free loopback ports (holding all listeners until every port is chosen).
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// A running etcd member; see the module docs.
pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    /// Plain-HTTP port serving `/health` (and `/metrics`), in TLS mode too.
    metrics_port: u16,
    /// Client TLS files, when the member serves clients over TLS.
    tls: Option<EtcdTls>,
    binary: PathBuf,
    /// The member's command line, kept for [`EtcdServer::restart`].
    args: Vec<String>,
}

impl EtcdServer {
    /// Starts a fresh member with plain-HTTP client URLs and waits until it is healthy.
    /// Blocking.
    pub fn start() -> io::Result<EtcdServer> {
        Self::launch(false)
    }

    /// Like [`EtcdServer::start`], but clients must use TLS with a client certificate; see
    /// [`EtcdServer::client_tls`].
    pub fn start_tls() -> io::Result<EtcdServer> {
        Self::launch(true)
    }

    fn launch(tls: bool) -> io::Result<EtcdServer> {
        let binary = etcd_binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no etcd binary: install etcd-server or set {ETCD_ENV}"),
            )
        })?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&binary, tls) {
                Err(e)
                    if attempt < START_ATTEMPTS
                        && e.to_string().contains("address already in use") =>
                {
                    tracing::debug!(attempt, error = %e, "etcd port taken; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(binary: &Path, tls: bool) -> io::Result<EtcdServer> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("skiff-etcd-{}-{id}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Own the directory first so that Drop removes it whatever fails next.
        let mut server = EtcdServer {
            child: None,
            dir,
            client_port: 0,
            metrics_port: 0,
            tls: None,
            binary: binary.to_path_buf(),
            args: Vec::new(),
        };
        let ports = free_ports(3)?;
        (server.client_port, server.metrics_port) = (ports[0], ports[2]);
        let scheme = if tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let metrics = format!("http://127.0.0.1:{}", ports[2]);
        let mut args = vec![
            "--name=skiff-test".to_string(),
            format!("--data-dir={}", server.dir.join("data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-metrics-urls={metrics}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=skiff-test={peer}"),
            "--initial-cluster-state=new".to_string(),
            format!("--initial-cluster-token=skiff-test-{}-{id}", std::process::id()),
            format!("--quota-backend-bytes={QUOTA_BACKEND_BYTES}"),
            format!("--max-request-bytes={MAX_REQUEST_BYTES}"),
            "--auto-compaction-retention=0".to_string(),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
            "--log-level=warn".to_string(),
        ];
        if tls {
            server.tls = Some(write_certificates(&server.dir)?);
            let file = |name: &str| server.dir.join(name).display().to_string();
            args.push(format!("--trusted-ca-file={}", file("ca.pem")));
            args.push(format!("--cert-file={}", file("server.pem")));
            args.push(format!("--key-file={}", file("server-key.pem")));
            args.push("--client-cert-auth".to_string());
        }
        server.args = args;
        server.spawn()?;
        tracing::debug!(endpoint = %server.client_url(), dir = %server.dir.display(), "etcd started");
        Ok(server)
    }

    /// Runs the member process with the recorded arguments and waits until it is healthy.
    fn spawn(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut cmd = Command::new(&self.binary);
        for (name, _) in std::env::vars_os() {
            // Keep the environment from reconfiguring the member (flags win anyway, but etcd
            // refuses to start when a flag and its variable are both set).
            if name.to_string_lossy().starts_with("ETCD_") && name != "ETCD_UNSUPPORTED_ARCH" {
                cmd.env_remove(name);
            }
        }
        cmd.args(&self.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run {}: {e}", self.binary.display()))
        })?;
        self.child = Some(child);
        self.wait_healthy()
    }

    /// Kills the member and starts it again on the same ports and data (to test reconnection
    /// and durability). Blocking.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Polls `/health` until it reports healthy, the process exits, or the deadline passes.
    fn wait_healthy(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "etcd exited during startup ({status}): {}",
                        self.log_tail()
                    )));
                }
            }
            if self.healthy() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd not healthy after {START_DEADLINE:?}: {}", self.log_tail()),
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the member answers `GET /health` (on its plain metrics port) with
    /// `"health":"true"`.
    pub fn healthy(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.metrics_port));
        let probe = || -> io::Result<String> {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))?;
            conn.set_write_timeout(Some(Duration::from_secs(2)))?;
            let request = format!(
                "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.metrics_port
            );
            conn.write_all(request.as_bytes())?;
            let mut response = String::new();
            conn.read_to_string(&mut response)?;
            Ok(response)
        };
        probe().is_ok_and(|r| r.starts_with("HTTP/1.1 200") && r.contains("\"health\":\"true\""))
    }

    /// `etcd://127.0.0.1:PORT` (`etcds://` in TLS mode), for
    /// [`crate::store::etcd::EtcdBackend::connect`].
    pub fn endpoint_url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT` (`https://` in TLS mode), for etcd clients and tools.
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The CA and client certificate files to connect with, in TLS mode;
    /// `EtcdTls::default()` otherwise.
    pub fn client_tls(&self) -> EtcdTls {
        self.tls.clone().unwrap_or_default()
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The temporary directory holding the member's data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The end of the member's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(2_000);
        let start = (start..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(log.len());
        log[start..].trim().to_string()
    }

    /// Kills the member now (to test broken connections); the directory stays until drop.
    pub fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::warn!(error = %e, "cannot stop test etcd");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove test etcd dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        if !etcd_available() {
            eprintln!("skipping: no etcd binary");
            return;
        }
        let server = EtcdServer::start().expect("etcd starts");
        assert!(server.healthy());
        assert!(server.endpoint_url().starts_with("etcd://127.0.0.1:"));
        assert_eq!(server.client_url(), format!("http://127.0.0.1:{}", server.client_port()));
        let dir = server.dir().to_path_buf();
        assert!(dir.join("data").is_dir());
        drop(server);
        assert!(!dir.exists());
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(3).unwrap();
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    }
}
