//! Authentication: who is asking. In order, the first that applies wins:
//!
//! 1. a [`LoopbackIdentity`] extension (requests made in-process through the router, never from
//!    the network: only code can insert extensions);
//! 2. the client certificate of the TLS connection, already verified against the cluster CA during
//!    the handshake: user = CN, groups = O values;
//! 3. `Authorization: Bearer <token>` matched against the static token file, then against the
//!    agent join token ([`super::join`]: the node agent's identity); a token that matches neither
//!    is a 401, as upstream;
//! 4. nobody: `system:anonymous`, which is only let through to the public paths (health checks and
//!    /version); everything else answers 401.
//!
//! The result is inserted into the request extensions as [`UserInfo`]; every authenticated user
//! also gets the group `system:authenticated`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::status::ApiError;
use super::UserInfo;

/// The group every authenticated user belongs to.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The user name of requests without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// What went wrong loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("cannot read the token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file line {line}: {reason}")]
    Parse { line: usize, reason: String },
}

/// The verified client certificate's user for one TLS connection (None: no certificate).
/// Inserted into every request of the connection by the listener.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<Arc<UserInfo>>);

/// An identity asserted by in-process callers (the loopback client); trusted as is.
#[derive(Clone, Debug)]
pub struct LoopbackIdentity(pub UserInfo);

/// Builds the user of a client certificate that the TLS layer already verified: CN is the name,
/// each O is a group. None when the certificate cannot be parsed or has no CN.
pub fn user_from_client_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if name.is_empty() {
        return None;
    }
    let mut groups: Vec<String> =
        subject.iter_organization().filter_map(|o| o.as_str().ok()).map(str::to_string).collect();
    groups.push(AUTHENTICATED_GROUP.to_string());
    Some(UserInfo { name, uid: String::new(), groups })
}

/// The static bearer tokens of kube-apiserver's --token-auth-file (CSV: token,user,uid and an
/// optional quoted, comma-separated group list).
#[derive(Clone, Debug, Default)]
pub struct TokenFile {
    tokens: HashMap<String, UserInfo>,
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<TokenFile, AuthnError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AuthnError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<TokenFile, AuthnError> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields = split_csv_line(trimmed)
                .map_err(|reason| AuthnError::Parse { line: line_no, reason })?;
            if fields.len() < 3 {
                return Err(AuthnError::Parse {
                    line: line_no,
                    reason: format!(
                        "expected at least 3 columns (token,user,uid), found {}",
                        fields.len()
                    ),
                });
            }
            let token = fields[0].clone();
            if token.is_empty() || fields[1].is_empty() {
                return Err(AuthnError::Parse {
                    line: line_no,
                    reason: "empty token or user".into(),
                });
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            groups.push(AUTHENTICATED_GROUP.to_string());
            let user = UserInfo { name: fields[1].clone(), uid: fields[2].clone(), groups };
            if tokens.insert(token, user).is_some() {
                tracing::warn!(
                    line = line_no,
                    "duplicate token in the token file; the last one wins"
                );
            }
        }
        Ok(TokenFile { tokens })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn lookup(&self, token: &str) -> Option<&UserInfo> {
        self.tokens.get(token)
    }
}

/// The authentication stage's configuration, shared by all requests.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    pub tokens: TokenFile,
    /// The join token `skiff agent` presents (None: agents cannot join).
    pub agent_token: Option<String>,
}

/// What the request's credentials say.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    User(UserInfo),
    /// No credentials at all.
    Anonymous,
    /// Credentials were presented and are wrong.
    Rejected,
}

impl Authenticator {
    pub fn authenticate(&self, req: &Request) -> Outcome {
        if let Some(LoopbackIdentity(user)) = req.extensions().get::<LoopbackIdentity>() {
            return Outcome::User(user.clone());
        }
        if let Some(PeerIdentity(Some(user))) = req.extensions().get::<PeerIdentity>() {
            return Outcome::User(user.as_ref().clone());
        }
        match bearer_token(req) {
            Some(token) => match self.tokens.lookup(token) {
                Some(user) => Outcome::User(user.clone()),
                None if self
                    .agent_token
                    .as_deref()
                    .is_some_and(|t| super::join::matches(token, t)) =>
                {
                    Outcome::User(agent_user())
                }
                None => Outcome::Rejected,
            },
            None => Outcome::Anonymous,
        }
    }
}

/// The node agent's identity (see [`super::join`]).
pub fn agent_user() -> UserInfo {
    UserInfo {
        name: super::join::AGENT_USER.to_string(),
        uid: String::new(),
        groups: vec![super::join::NODES_GROUP.to_string(), AUTHENTICATED_GROUP.to_string()],
    }
}

/// Paths anyone may read without credentials (upstream's system:public-info-viewer, plus the CA
/// certificate agents check against their join token).
pub fn is_public_path(path: &str) -> bool {
    const ROOTS: [&str; 3] = ["/healthz", "/livez", "/readyz"];
    if path == "/version" || path == "/version/" || path == super::join::CA_PATH {
        return true;
    }
    ROOTS.iter().any(|root| {
        path == *root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The user without credentials.
pub fn anonymous_user() -> UserInfo {
    UserInfo {
        name: ANONYMOUS_USER.to_string(),
        uid: String::new(),
        groups: vec![UNAUTHENTICATED_GROUP.to_string()],
    }
}

/// The axum middleware: inserts [`UserInfo`] or answers 401.
pub async fn middleware(
    State(authn): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let user = match authn.authenticate(&req) {
        Outcome::User(user) => user,
        Outcome::Anonymous if is_public_path(req.uri().path()) => anonymous_user(),
        Outcome::Anonymous => {
            tracing::debug!(path = %req.uri().path(), "anonymous request refused");
            return ApiError::unauthorized().into_response();
        }
        Outcome::Rejected => {
            tracing::debug!(path = %req.uri().path(), "invalid bearer token");
            return ApiError::unauthorized().into_response();
        }
    };
    req.extensions_mut().insert(user);
    next.run(req).await
}

fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Splits one CSV record (RFC 4180 quoting, leading spaces trimmed).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err("quote inside an unquoted field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_file() {
        let f = TokenFile::parse(
            "# comment\nsecret1,alice,u1,\"dev,ops\"\nsecret2,bob,u2\n\n secret3, carol ,u3,viewers\n",
        )
        .expect("parse");
        let alice = f.lookup("secret1").expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "u1");
        assert_eq!(alice.groups, vec!["dev", "ops", AUTHENTICATED_GROUP]);
        assert_eq!(f.lookup("secret2").expect("bob").groups, vec![AUTHENTICATED_GROUP]);
        assert_eq!(
            f.lookup("secret3").expect("carol").groups,
            vec!["viewers", AUTHENTICATED_GROUP]
        );
        assert!(f.lookup("nope").is_none());
    }

    #[test]
    fn rejects_short_lines() {
        assert!(TokenFile::parse("only,two\n").is_err());
        assert!(TokenFile::parse("a,b,\"c\n").is_err());
    }

    #[test]
    fn public_paths() {
        for p in [
            "/healthz",
            "/livez",
            "/readyz",
            "/readyz/ping",
            "/healthz/etcd",
            "/version",
            "/version/",
        ] {
            assert!(is_public_path(p), "{p}");
        }
        for p in ["/readyzz", "/api", "/metrics", "/versions", "/"] {
            assert!(!is_public_path(p), "{p}");
        }
    }

    #[test]
    fn bearer_parsing() {
        let req = Request::builder()
            .header(AUTHORIZATION, "Bearer  abc ")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(bearer_token(&req), Some("abc"));
        let req = Request::builder()
            .header(AUTHORIZATION, "Basic abc")
            .body(axum::body::Body::empty())
            .expect("request");
        assert_eq!(bearer_token(&req), None);
    }
}
