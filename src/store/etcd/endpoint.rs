//! Parsing of `etcd://` / `etcds://` endpoint URLs and loading of client TLS material.

use super::EtcdTls;
use crate::store::{Result, StoreError};

/// A parsed endpoint URL: the gRPC URLs to dial and whether they use TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// One `http://host:port` or `https://host:port` URL per member.
    pub urls: Vec<String>,
    pub tls: bool,
}

fn invalid(url: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("etcd endpoint {url:?}: {why}"))
}

/// Parses `etcd://host:port[,host:port...]` (plain) or `etcds://...` (TLS).
///
/// Hosts may be names, IPv4 addresses or bracketed IPv6 addresses; every member needs an
/// explicit port. A single trailing `/` is tolerated; other paths, queries and credentials
/// are rejected.
pub fn parse_endpoints(url: &str) -> Result<Endpoints> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("etcds://") {
        (true, rest)
    } else {
        return Err(invalid(url, "the scheme must be etcd:// or etcds://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(invalid(url, "no host:port given"));
    }
    if let Some(c) = rest.chars().find(|c| matches!(c, '/' | '?' | '#' | '@')) {
        return Err(invalid(url, format!("unexpected {c:?}: only host:port members are allowed")));
    }
    let scheme = if tls { "https" } else { "http" };
    let mut urls = Vec::new();
    for member in rest.split(',') {
        let (host, port) = split_host_port(member).map_err(|why| invalid(url, why))?;
        urls.push(format!("{scheme}://{host}:{port}"));
    }
    Ok(Endpoints { urls, tls })
}

fn split_host_port(member: &str) -> std::result::Result<(&str, u16), String> {
    if member.is_empty() {
        return Err("empty member (stray comma?)".into());
    }
    let (host, port) = if member.starts_with('[') {
        let close = member.find(']').ok_or_else(|| format!("unclosed '[' in {member:?}"))?;
        let host = &member[..=close];
        let inner = &host[1..host.len() - 1];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{inner:?} is not an IPv6 address"));
        }
        let port = member[close + 1..]
            .strip_prefix(':')
            .ok_or_else(|| format!("member {member:?} has no port"))?;
        (host, port)
    } else {
        let (host, port) =
            member.rsplit_once(':').ok_or_else(|| format!("member {member:?} has no port"))?;
        if host.contains(':') {
            return Err(format!("IPv6 address in {member:?} must be in brackets"));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if host.is_empty() || !host.chars().all(valid) {
            return Err(format!("{host:?} is not a valid host name"));
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(format!("{port:?} is not a valid port in {member:?}")),
    }
}

/// Reads the CA and client identity for an `etcds://` endpoint, failing clearly if any file
/// is missing or unreadable.
pub fn load_tls(tls: &EtcdTls) -> Result<etcd_client::TlsOptions> {
    let read = |what: &str, path: &Option<std::path::PathBuf>| -> Result<Vec<u8>> {
        let path = path.as_ref().ok_or_else(|| {
            StoreError::Invalid(format!("etcds:// endpoints need the {what} file (none given)"))
        })?;
        std::fs::read(path).map_err(|e| {
            StoreError::Invalid(format!("cannot read etcd {what} file {}: {e}", path.display()))
        })
    };
    let ca = read("CA certificate", &tls.ca_file)?;
    let cert = read("client certificate", &tls.cert_file)?;
    let key = read("client key", &tls.key_file)?;
    check_pem("CA certificate", &tls.ca_file, &ca, false)?;
    check_pem("client certificate", &tls.cert_file, &cert, false)?;
    check_pem("client key", &tls.key_file, &key, true)?;
    Ok(etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(ca))
        .identity(etcd_client::Identity::from_pem(cert, key)))
}

/// Fails unless `pem` holds at least one certificate (or, with `key`, a private key), so that
/// a wrong file is reported here rather than as a failed handshake later.
fn check_pem(what: &str, path: &Option<std::path::PathBuf>, pem: &[u8], key: bool) -> Result<()> {
    let mut reader = pem;
    let found = if key {
        matches!(rustls_pemfile::private_key(&mut reader), Ok(Some(_)))
    } else {
        let first = rustls_pemfile::certs(&mut reader).next();
        matches!(first, Some(Ok(_)))
    };
    if found {
        return Ok(());
    }
    let shown = path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let wanted = if key { "a PEM private key" } else { "a PEM certificate" };
    Err(StoreError::Invalid(format!("etcd {what} file {shown} does not contain {wanted}")))
}

/// Whether any TLS file was given (an error for plain `etcd://` endpoints).
pub fn any_tls_file(tls: &EtcdTls) -> bool {
    tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_tls_lists() {
        let e = parse_endpoints("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(e, Endpoints { urls: vec!["http://127.0.0.1:2379".into()], tls: false });
        let e = parse_endpoints("etcds://a.example:2379,b-2.example:32379,[::1]:2379/").unwrap();
        assert!(e.tls);
        assert_eq!(
            e.urls,
            vec!["https://a.example:2379", "https://b-2.example:32379", "https://[::1]:2379"]
        );
    }

    #[test]
    fn rejects_malformed_urls() {
        for bad in [
            "",
            "127.0.0.1:2379",
            "http://127.0.0.1:2379",
            "etcd://",
            "etcd:///",
            "etcd://host",
            "etcd://host:",
            "etcd://host:0",
            "etcd://host:65536",
            "etcd://host:port",
            "etcd://:2379",
            "etcd://a:1,,b:2",
            "etcd://a:1,",
            "etcd://host:2379/prefix",
            "etcd://host:2379?x=1",
            "etcd://user@host:2379",
            "etcd://::1:2379",
            "etcd://[::1:2379",
            "etcd://[zz]:2379",
            "etcd://[::1]2379",
            "etcd://ho st:2379",
        ] {
            match parse_endpoints(bad) {
                Err(StoreError::Invalid(msg)) => assert!(msg.contains("etcd endpoint"), "{msg}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn tls_files_are_required() {
        let err = load_tls(&EtcdTls::default()).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("CA certificate")), "{err}");
        let tls = EtcdTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            cert_file: Some("/nonexistent/c.pem".into()),
            key_file: Some("/nonexistent/k.pem".into()),
        };
        let err = load_tls(&tls).unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("/nonexistent/ca.pem")));
    }

    #[test]
    fn tls_files_must_hold_pem() {
        let dir = std::env::temp_dir().join(format!("skiff-etcd-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let tls = EtcdTls {
            ca_file: Some(not_pem.clone()),
            cert_file: Some(not_pem.clone()),
            key_file: Some(not_pem),
        };
        let err = load_tls(&tls).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("PEM certificate")), "{err}");
    }
}
