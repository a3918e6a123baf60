//! The agent join token: how `skiff agent` on another machine proves itself to the server and
//! learns which CA to trust without a copy of it.
//!
//! The token reads `K10<hex sha256 of the CA certificate PEM>::node:<secret>` (k3s's shape). The
//! server writes it to `DATA_DIR/agent-token` (mode 0600) on first start, keeps it across
//! restarts, and accepts it as a bearer token for the node agent's identity
//! ([`AGENT_USER`] in [`NODES_GROUP`]). An agent fetches the CA from the public `/cacerts`
//! path without verifying the connection, checks it against the token's hash, and from then on
//! verifies the server against that CA like any client.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file in the data dir that holds the token.
pub const TOKEN_FILE: &str = "agent-token";
/// The user a request with the join token is.
pub const AGENT_USER: &str = "system:skiff-agent";
/// The group node agents belong to (upstream's kubelets are in it too).
pub const NODES_GROUP: &str = "system:nodes";
/// The public path serving the CA certificate (PEM).
pub const CA_PATH: &str = "/cacerts";

const PREFIX: &str = "K10";

/// What went wrong with a join token.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid join token: {0}")]
    Invalid(&'static str),
    #[error("the server's CA certificate does not match the join token's hash (expected {expected}, got {actual})")]
    CaMismatch { expected: String, actual: String },
}

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// The hex sha256 of the CA certificate PEM, when the token carries one.
    pub ca_hash: Option<String>,
    /// The whole token, as sent in the Authorization header.
    pub raw: String,
}

impl JoinToken {
    /// Reads a token: `K10<hash>::<credentials>`, or bare credentials (no CA hash).
    pub fn parse(s: &str) -> Result<JoinToken, JoinError> {
        let raw = s.trim();
        if raw.is_empty() {
            return Err(JoinError::Invalid("empty"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(JoinError::Invalid("it contains spaces or control characters"));
        }
        let ca_hash = match raw.strip_prefix(PREFIX).and_then(|rest| rest.split_once("::")) {
            Some((hash, creds)) => {
                let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex {
                    return Err(JoinError::Invalid("the CA hash is not 64 hex digits"));
                }
                if creds.is_empty() {
                    return Err(JoinError::Invalid("nothing after the CA hash"));
                }
                Some(hash.to_ascii_lowercase())
            }
            None => None,
        };
        Ok(JoinToken { ca_hash, raw: raw.to_string() })
    }

    /// Checks a CA certificate fetched from the server against the token's hash.
    pub fn verify_ca(&self, ca_pem: &str) -> Result<(), JoinError> {
        let Some(expected) = &self.ca_hash else {
            return Err(JoinError::Invalid(
                "it carries no CA hash; give the CA certificate with --certificate-authority",
            ));
        };
        let actual = ca_hash(ca_pem);
        if &actual != expected {
            return Err(JoinError::CaMismatch { expected: expected.clone(), actual });
        }
        Ok(())
    }
}

/// The hex sha256 of a CA certificate's PEM text.
pub fn ca_hash(ca_pem: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The server's join token: the one in `data_dir` if it matches this CA, else a new one
/// (written with mode 0600).
pub fn ensure(data_dir: &Path, ca_pem: &str) -> Result<String, JoinError> {
    let path = data_dir.join(TOKEN_FILE);
    let hash = ca_hash(ca_pem);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if let Ok(token) = JoinToken::parse(&text) {
                if token.ca_hash.as_deref() == Some(hash.as_str()) {
                    return Ok(token.raw);
                }
            }
            tracing::warn!(path = %path.display(), "agent token does not match the CA; writing a new one");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(JoinError::Io { action: "read", path, source }),
    }
    let secret: String = rand::random::<[u8; 16]>().iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{PREFIX}{hash}::node:{secret}");
    write_private(&path, &token)?;
    Ok(token)
}

/// Writes `text` to `path` atomically with mode 0600.
fn write_private(path: &Path, text: &str) -> Result<(), JoinError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |action, source| JoinError::Io { action, path: path.to_path_buf(), source };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    f.write_all(b"\n").map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
}

/// Compares a presented bearer token with the server's in time independent of where they differ.
pub fn matches(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";

    #[test]
    fn ensure_writes_once_and_keeps_the_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = ensure(dir.path(), PEM).expect("token");
        let token = JoinToken::parse(&first).expect("parses");
        assert_eq!(token.ca_hash.as_deref(), Some(ca_hash(PEM).as_str()));
        token.verify_ca(PEM).expect("hash matches");
        assert_eq!(ensure(dir.path(), PEM).expect("token"), first, "kept across restarts");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).expect("file").permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        let other = ensure(dir.path(), "another CA").expect("token");
        assert_ne!(other, first, "a new CA gets a new token");
    }

    #[test]
    fn parse_and_verify() {
        assert!(JoinToken::parse("").is_err());
        assert!(JoinToken::parse("K10abc::node:x").is_err(), "short hash");
        assert!(JoinToken::parse(&format!("K10{}::", "a".repeat(64))).is_err());
        let bare = JoinToken::parse("plain-secret").expect("bare token");
        assert_eq!(bare.ca_hash, None);
        assert!(bare.verify_ca(PEM).is_err(), "nothing to verify against");
        let t = JoinToken::parse(&format!("K10{}::node:s", "0".repeat(64))).expect("parses");
        assert!(matches!(t.verify_ca(PEM), Err(JoinError::CaMismatch { .. })));
        assert!(matches("abc", "abc") && !matches("abd", "abc") && !matches("ab", "abc"));
    }
}
