//! The cluster's certificates: a CA, the API server's serving certificate and client
//! certificates for the admin (system:masters) and the in-process controllers, kept in
//! DATA_DIR/pki (directory 0700, keys 0600).
//!
//! The first start creates them (ECDSA P-256, a few milliseconds); later starts load them and only
//! re-issue a leaf certificate that is missing, unreadable, close to expiry, not issued by the
//! current CA, or (for the serving certificate) no longer names every address the server answers on.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};

/// Common name of the CA certificate.
const CA_COMMON_NAME: &str = "skiff-ca";
/// How long the CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;
/// How long leaf certificates are valid.
const LEAF_VALIDITY_DAYS: i64 = 365;
/// A leaf expiring within this many days is re-issued at start-up.
const RENEW_BEFORE_DAYS: i64 = 30;

/// DNS names every serving certificate carries besides the host name.
pub const SERVICE_DNS_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// What went wrong preparing the certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate the {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot use {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// A PEM certificate and its PEM (PKCS#8) private key.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// A client identity to issue a certificate for.
#[derive(Clone, Copy, Debug)]
pub struct ClientIdentity {
    /// File stem in the pki dir ("admin" gives admin.crt and admin.key).
    pub file: &'static str,
    /// Becomes the user name.
    pub common_name: &'static str,
    /// Become the groups.
    pub organizations: &'static [&'static str],
}

/// The cluster administrator, as kubeconfig users authenticate.
pub const ADMIN: ClientIdentity = ClientIdentity {
    file: "admin",
    common_name: "system:admin",
    organizations: &["system:masters"],
};

/// The controllers, for when they run as a separate process.
pub const CONTROLLER: ClientIdentity = ClientIdentity {
    file: "controller",
    common_name: "system:skiff-controller",
    organizations: &["system:masters"],
};

/// Every certificate the server needs, loaded or freshly issued.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    pub ca_cert_der: Vec<u8>,
    pub serving: CertAndKey,
    pub admin: CertAndKey,
    pub controller: CertAndKey,
}

/// The names and addresses the serving certificate must cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServingNames {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl ServingNames {
    /// Loopback, the fixed service names, the host name, the bind address (unless it is the
    /// wildcard) and any extra names.
    pub fn for_server(bind: IpAddr, extra: &[String]) -> ServingNames {
        let mut names = ServingNames::default();
        names.ips.insert(IpAddr::from([127, 0, 0, 1]));
        names.ips.insert(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]));
        if !bind.is_unspecified() {
            names.ips.insert(bind);
        }
        names.dns.extend(SERVICE_DNS_NAMES.iter().map(|s| s.to_string()));
        if let Some(host) = local_host_name() {
            names.dns.insert(host);
        }
        for e in extra {
            match e.parse::<IpAddr>() {
                Ok(ip) => {
                    names.ips.insert(ip);
                }
                Err(_) if is_dns_name(e) => {
                    names.dns.insert(e.to_ascii_lowercase());
                }
                Err(_) => {
                    tracing::warn!(name = %e, "ignoring a name that cannot go in a certificate")
                }
            }
        }
        names
    }

    fn covered_by(&self, other: &ServingNames) -> bool {
        self.dns.is_subset(&other.dns) && self.ips.is_subset(&other.ips)
    }

    fn to_sans(&self) -> Vec<String> {
        self.ips.iter().map(|ip| ip.to_string()).chain(self.dns.iter().cloned()).collect()
    }
}

impl Pki {
    /// Loads the certificates in `dir`, creating or re-issuing what is missing or unfit.
    pub fn ensure(dir: &Path, names: &ServingNames) -> Result<Pki, PkiError> {
        ensure_private_dir(dir)?;
        let (ca_cert_pem, ca_key, ca_fresh) = ensure_ca(dir)?;
        let ca_cert_der = pem_to_der(&ca_cert_pem).ok_or_else(|| PkiError::Invalid {
            path: dir.join("ca.crt"),
            reason: "no certificate in the file".into(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
            .map_err(|source| PkiError::Generate { what: "CA issuer", source })?;
        let ctx = LeafContext { dir, issuer: &issuer, ca_der: &ca_cert_der, force: ca_fresh };

        let serving = ctx.ensure_leaf("serving", |existing| match existing {
            Some(found) if names.covered_by(&found) => None,
            _ => Some(serving_params(names)),
        })?;
        let admin = ctx.ensure_client(ADMIN)?;
        let controller = ctx.ensure_client(CONTROLLER)?;
        Ok(Pki { dir: dir.to_path_buf(), ca_cert_pem, ca_cert_der, serving, admin, controller })
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename) with the given mode.
pub fn write_private_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Creates `dir` (and parents) if needed and makes it 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    let io = |source| PkiError::Io { path: dir.to_path_buf(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// The DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let first = rustls_pemfile::certs(&mut reader).next()?;
    first.ok().map(|c| c.as_ref().to_vec())
}

struct LeafContext<'a> {
    dir: &'a Path,
    issuer: &'a Issuer<'a, KeyPair>,
    ca_der: &'a [u8],
    /// The CA was just created: every leaf must be re-issued.
    force: bool,
}

impl LeafContext<'_> {
    fn ensure_client(&self, id: ClientIdentity) -> Result<CertAndKey, PkiError> {
        self.ensure_leaf(id.file, |existing| match existing {
            Some(_) => None,
            None => Some(client_params(id)),
        })
    }

    /// Loads `<stem>.crt`/`<stem>.key` if they are usable and `decide` keeps them; otherwise
    /// issues new ones from the params `decide` returns (or that it returns for "nothing usable").
    fn ensure_leaf(
        &self,
        stem: &'static str,
        decide: impl Fn(Option<ServingNames>) -> Option<CertificateParams>,
    ) -> Result<CertAndKey, PkiError> {
        let cert_path = self.dir.join(format!("{stem}.crt"));
        let key_path = self.dir.join(format!("{stem}.key"));
        if !self.force {
            if let Some(loaded) = self.load_usable(&cert_path, &key_path) {
                match decide(Some(loaded.1)) {
                    None => return Ok(loaded.0),
                    Some(params) => {
                        tracing::info!(
                            cert = stem,
                            "re-issuing: it no longer covers this server's names"
                        );
                        return self.issue(stem, params, &cert_path, &key_path);
                    }
                }
            }
        }
        let params = match decide(None) {
            Some(p) => p,
            None => {
                return Err(PkiError::Invalid { path: cert_path, reason: "no parameters".into() })
            }
        };
        self.issue(stem, params, &cert_path, &key_path)
    }

    fn load_usable(&self, cert_path: &Path, key_path: &Path) -> Option<(CertAndKey, ServingNames)> {
        let cert_pem = std::fs::read_to_string(cert_path).ok()?;
        let key_pem = std::fs::read_to_string(key_path).ok()?;
        KeyPair::from_pem(&key_pem).ok()?;
        let der = pem_to_der(&cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
        let (_, ca) = x509_parser::parse_x509_certificate(self.ca_der).ok()?;
        if cert.issuer() != ca.subject() || authority_key_id(&cert) != subject_key_id(&ca) {
            tracing::info!(path = %cert_path.display(), "re-issuing: not signed by the current CA");
            return None;
        }
        let renew_at = Utc::now().timestamp() + RENEW_BEFORE_DAYS * 86_400;
        if cert.validity().not_after.timestamp() < renew_at {
            tracing::info!(path = %cert_path.display(), "re-issuing: about to expire");
            return None;
        }
        let mut names = ServingNames::default();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        names.dns.insert(d.to_ascii_lowercase());
                    }
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from_bytes(b) {
                            names.ips.insert(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        Some((CertAndKey { cert_pem, key_pem }, names))
    }

    fn issue(
        &self,
        stem: &'static str,
        params: CertificateParams,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<CertAndKey, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|source| PkiError::Generate { what: stem, source })?;
        let cert = params
            .signed_by(&key, self.issuer)
            .map_err(|source| PkiError::Generate { what: stem, source })?;
        let out = CertAndKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        write_private_file(key_path, out.key_pem.as_bytes(), 0o600)?;
        write_private_file(cert_path, out.cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %cert_path.display(), "issued certificate");
        Ok(out)
    }
}

/// Loads the CA or creates it; the flag says whether it was created now.
fn ensure_ca(dir: &Path) -> Result<(String, KeyPair, bool), PkiError> {
    let cert_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");
    let cert = std::fs::read_to_string(&cert_path);
    let key = std::fs::read_to_string(&key_path);
    match (cert, key) {
        (Ok(cert_pem), Ok(key_pem)) => {
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| PkiError::Invalid { path: key_path.clone(), reason: e.to_string() })?;
            if pem_to_der(&cert_pem).is_none() {
                return Err(PkiError::Invalid {
                    path: cert_path,
                    reason: "no certificate in the file".into(),
                });
            }
            Ok((cert_pem, key, false))
        }
        (Err(e), _) | (_, Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
            let path = if cert_path.exists() { key_path } else { cert_path };
            Err(PkiError::Io { path, source: e })
        }
        (Ok(_), Err(_)) => Err(PkiError::Invalid {
            path: key_path,
            reason: "the CA certificate exists but its key is missing".into(),
        }),
        _ => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|source| PkiError::Generate { what: "CA key", source })?;
            let mut params = base_params(CA_VALIDITY_DAYS);
            params.distinguished_name = dn(CA_COMMON_NAME, &[]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params
                .self_signed(&key)
                .map_err(|source| PkiError::Generate { what: "CA certificate", source })?;
            write_private_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_private_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(path = %cert_path.display(), "created cluster CA");
            Ok((cert.pem(), key, true))
        }
    }
}

fn serving_params(names: &ServingNames) -> CertificateParams {
    let mut params = base_params(LEAF_VALIDITY_DAYS);
    params.distinguished_name = dn("kube-apiserver", &[]);
    params.subject_alt_names = names
        .to_sans()
        .into_iter()
        .filter_map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Some(rcgen::SanType::IpAddress(ip)),
            Err(_) => s.try_into().ok().map(rcgen::SanType::DnsName),
        })
        .collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn client_params(id: ClientIdentity) -> CertificateParams {
    let mut params = base_params(LEAF_VALIDITY_DAYS);
    params.distinguished_name = dn(id.common_name, id.organizations);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn base_params(validity_days: i64) -> CertificateParams {
    let mut params = CertificateParams::default();
    let start = Utc::now() - Duration::days(1);
    let end = Utc::now() + Duration::days(validity_days);
    params.not_before = rcgen::date_time_ymd(start.year(), start.month() as u8, start.day() as u8);
    params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    serial
}

fn dn(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in organizations {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The key identifier a certificate names its issuer by.
fn authority_key_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
            aki.key_identifier.as_ref().map(|k| k.0.to_vec())
        }
        _ => None,
    })
}

/// The key identifier of a (CA) certificate's own key.
fn subject_key_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The machine's host name, lowercased, if it can go in a certificate.
fn local_host_name() -> Option<String> {
    let name = hostname::get().ok()?.into_string().ok()?.to_ascii_lowercase();
    is_dns_name(&name).then_some(name)
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn creates_then_reuses() {
        let dir = temp_dir("reuse");
        let names = ServingNames::for_server(IpAddr::from([0, 0, 0, 0]), &[]);
        let first = Pki::ensure(&dir, &names).expect("first");
        let mode = std::fs::metadata(dir.join("ca.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        let second = Pki::ensure(&dir, &names).expect("second");
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.serving.cert_pem, second.serving.cert_pem);
        assert_eq!(first.admin.cert_pem, second.admin.cert_pem);

        // A new bind address re-issues only the serving certificate.
        let moved = ServingNames::for_server(IpAddr::from([10, 1, 2, 3]), &[]);
        let third = Pki::ensure(&dir, &moved).expect("third");
        assert_eq!(first.ca_cert_pem, third.ca_cert_pem);
        assert_ne!(first.serving.cert_pem, third.serving.cert_pem);
        assert_eq!(first.admin.cert_pem, third.admin.cert_pem);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn leaves_from_another_ca_are_reissued() {
        let (a, b) = (temp_dir("ca-a"), temp_dir("ca-b"));
        let names = ServingNames::for_server(IpAddr::from([127, 0, 0, 1]), &[]);
        let pki_a = Pki::ensure(&a, &names).expect("a");
        Pki::ensure(&b, &names).expect("b");
        for f in ["admin.crt", "admin.key"] {
            std::fs::copy(b.join(f), a.join(f)).expect("copy");
        }
        let again = Pki::ensure(&a, &names).expect("a again");
        assert_ne!(again.admin.cert_pem, std::fs::read_to_string(b.join("admin.crt")).expect("b"));
        assert_eq!(again.serving.cert_pem, pki_a.serving.cert_pem);
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("kubernetes.default.svc"));
        assert!(!is_dns_name("under_score"));
        assert!(!is_dns_name("-x"));
    }
}
