//! (in progress) The etcd v3 backend.
#![allow(unused)]
use std::path::PathBuf;

/// Client TLS for etcds:// endpoints.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

pub struct EtcdBackend {}

impl EtcdBackend {
    /// Connects to `etcd://host:port[,host:port...]` or `etcds://...` (with `tls`).
    pub async fn connect(endpoint_url: &str, tls: EtcdTls) -> super::Result<EtcdBackend> {
        Err(super::StoreError::Unavailable("not yet".into()))
    }
}
