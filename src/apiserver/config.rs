//! What the API server is asked to do: where its data lives, where it listens, which datastore and
//! which credentials it accepts. Built by the CLI (or by test helpers) and handed to
//! [`crate::apiserver::server::start`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::controllers::ComponentOptions;
use crate::store::etcd::EtcdTls;

/// Request bodies larger than this are refused with 413, as kube-apiserver does (3 MiB).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Requests in flight (long-running ones excluded) above which new ones get 429.
pub const DEFAULT_MAX_REQUESTS_INFLIGHT: usize = 400;

/// Where the cluster state is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// The embedded SQLite database inside the data dir.
    Sqlite,
    /// An etcd cluster: `etcd://host:port[,...]` or `etcds://...`.
    Etcd { endpoint: String, tls: EtcdTlsFiles },
}

/// Client TLS files for an `etcds://` endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl EtcdTlsFiles {
    pub fn to_etcd_tls(&self) -> EtcdTls {
        EtcdTls {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }
}

/// Everything the server shell needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds the database (SQLite), the PKI and, by default, the kubeconfig.
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    /// 0 asks the kernel for a free port; the bound one is what the kubeconfig names.
    pub secure_port: u16,
    /// Where the admin kubeconfig goes (default: DATA_DIR/kubeconfig.yaml).
    pub kubeconfig_path: Option<PathBuf>,
    pub datastore: Datastore,
    /// kube-apiserver's static token CSV (token,user,uid,"group1,group2").
    pub token_auth_file: Option<PathBuf>,
    /// Do not run the node agent in this process.
    pub disable_agent: bool,
    pub max_requests_inflight: usize,
    pub max_request_body_bytes: usize,
    /// More names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// The controllers, scheduler and simulated nodes to run once the API is ready (None: none).
    pub components: Option<ComponentOptions>,
}

impl ServerConfig {
    /// A configuration with defaults for everything but the data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secure_port: 6443,
            kubeconfig_path: None,
            datastore: Datastore::Sqlite,
            token_auth_file: None,
            disable_agent: false,
            max_requests_inflight: DEFAULT_MAX_REQUESTS_INFLIGHT,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            tls_sans: Vec::new(),
            components: Some(ComponentOptions::default()),
        }
    }

    /// The admin kubeconfig path, defaulted into the data dir.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig_path.clone().unwrap_or_else(|| self.data_dir.join("kubeconfig.yaml"))
    }

    /// Where certificates and keys live.
    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }
}

/// The data dir used when none is given: /var/lib/skiff for root, else $XDG_DATA_HOME/skiff or
/// ~/.local/share/skiff (falling back to ./skiff-data when there is no home at all).
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return PathBuf::from("/var/lib/skiff");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute() {
            return xdg.join("skiff");
        }
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Path::new(&home).join(".local").join("share").join("skiff"),
        None => PathBuf::from("skiff-data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_defaults_into_the_data_dir() {
        let c = ServerConfig::new("/tmp/x");
        assert_eq!(c.kubeconfig_path(), PathBuf::from("/tmp/x/kubeconfig.yaml"));
        assert_eq!(c.pki_dir(), PathBuf::from("/tmp/x/pki"));
        assert_eq!(c.secure_port, 6443);
    }
}
