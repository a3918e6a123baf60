//! The admin kubeconfig: one cluster (the server URL and the CA), one user (the admin client
//! certificate), one context, all named "default". Written atomically with mode 0600.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::json;

use super::pki::{ensure_private_dir, write_private_file, CertAndKey, PkiError};

/// What went wrong writing the kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot encode the kubeconfig")]
    Encode(#[from] serde_norway::Error),
    #[error("cannot write the kubeconfig {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: PkiError,
    },
}

/// The kubeconfig text for `server` ("https://127.0.0.1:6443").
pub fn render(
    server: &str,
    ca_cert_pem: &str,
    user: &CertAndKey,
) -> Result<String, KubeconfigError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "default",
            "cluster": {
                "server": server,
                "certificate-authority-data": b64(ca_cert_pem),
            },
        }],
        "users": [{
            "name": "default",
            "user": {
                "client-certificate-data": b64(&user.cert_pem),
                "client-key-data": b64(&user.key_pem),
            },
        }],
        "contexts": [{
            "name": "default",
            "context": { "cluster": "default", "user": "default" },
        }],
        "current-context": "default",
        "preferences": {},
    });
    Ok(serde_norway::to_string(&doc)?)
}

/// Writes the kubeconfig to `path` (creating its directory), mode 0600, atomically.
pub fn write(
    path: &Path,
    server: &str,
    ca_cert_pem: &str,
    user: &CertAndKey,
) -> Result<(), KubeconfigError> {
    let text = render(server, ca_cert_pem, user)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        ensure_private_dir(dir)
            .map_err(|source| KubeconfigError::Write { path: path.to_path_buf(), source })?;
    }
    write_private_file(path, text.as_bytes(), 0o600)
        .map_err(|source| KubeconfigError::Write { path: path.to_path_buf(), source })
}

/// The URL clients should use: the bind address when it is a specific one, else 127.0.0.1.
pub fn server_url(bind: std::net::IpAddr, port: u16) -> String {
    let host = if bind.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { bind };
    match host {
        std::net::IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        std::net::IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_loadable_kubeconfig() {
        let user = CertAndKey { cert_pem: "CERT".into(), key_pem: "KEY".into() };
        let text = render("https://127.0.0.1:6443", "CA", &user).expect("render");
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("kube parses it");
        assert_eq!(kc.current_context.as_deref(), Some("default"));
        assert_eq!(kc.clusters.len(), 1);
        assert_eq!(server_url("0.0.0.0".parse().expect("ip"), 1), "https://127.0.0.1:1");
        assert_eq!(server_url("::1".parse().expect("ip"), 2), "https://[::1]:2");
        assert_eq!(server_url("10.0.0.5".parse().expect("ip"), 3), "https://10.0.0.5:3");
    }
}
