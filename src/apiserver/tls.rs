//! TLS for the secure port: rustls with the ring provider, ALPN h2 and http/1.1, and client
//! certificates that are optional at the handshake (so health probes and bearer tokens work) but,
//! when presented, must chain to the cluster CA.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::pki::Pki;

/// What went wrong building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the {what} is not valid PEM")]
    Pem { what: &'static str },
    #[error("the CA certificate cannot be trusted")]
    Roots(#[source] rustls::Error),
    #[error("cannot build the client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("cannot build the server configuration")]
    Config(#[source] rustls::Error),
}

/// Makes ring the process-wide rustls provider (kube's client uses the process default). Calling
/// it again, or after someone else installed ring, is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The rustls server configuration for the serving certificate in `pki`.
pub fn server_config(pki: &Pki) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(pki.ca_cert_der.clone())).map_err(TlsError::Roots)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;

    let certs = parse_certs(&pki.serving.cert_pem)?;
    let key = parse_key(&pki.serving.key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem { what: "serving certificate" })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { what: "serving certificate" });
    }
    Ok(certs)
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .ok()
        .flatten()
        .ok_or(TlsError::Pem { what: "serving key" })
}
