//! List continue tokens: opaque to clients, base64 of a small JSON document holding the
//! revision the list is read at and the last key returned (relative to the list prefix).

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::store::Revision;

/// What a continue token holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinueToken {
    /// Format version.
    pub v: String,
    /// The revision every page of the list is read at; -1 (`LATEST`): the latest at each page,
    /// given out when the list's own revision has been compacted.
    pub rv: Revision,
    /// The last key returned, relative to the list prefix; the next page starts after it.
    pub start: String,
}

/// Why a continue token could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinueError {
    #[error("continue key is not valid: {0}")]
    Malformed(String),
}

const VERSION: &str = "meta.k8s.io/v1";

/// The revision of a token that continues at the latest revision instead of a fixed one.
pub const LATEST: Revision = -1;

impl ContinueToken {
    pub fn new(rv: Revision, start: impl Into<String>) -> Self {
        ContinueToken { v: VERSION.to_string(), rv, start: start.into() }
    }

    /// The revision the next page reads at (None: the latest).
    pub fn revision(&self) -> Option<Revision> {
        (self.rv != LATEST).then_some(self.rv)
    }

    /// The opaque string form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE.encode(json)
    }

    /// Parses a token a client sent back.
    pub fn decode(s: &str) -> Result<Self, ContinueError> {
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(s)
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(s))
            .map_err(|e| ContinueError::Malformed(e.to_string()))?;
        let token: ContinueToken =
            serde_json::from_slice(&bytes).map_err(|e| ContinueError::Malformed(e.to_string()))?;
        if token.v != VERSION {
            return Err(ContinueError::Malformed(format!("unknown version {:?}", token.v)));
        }
        if token.rv == 0 || token.rv < LATEST {
            return Err(ContinueError::Malformed(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into(),
            ));
        }
        if token.start.is_empty() || token.start.contains("..") || token.start.starts_with('/') {
            return Err(ContinueError::Malformed("continue key is not valid".into()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = ContinueToken::new(42, "default/web-1");
        let s = t.encode();
        assert_eq!(ContinueToken::decode(&s).unwrap(), t);
    }

    #[test]
    fn latest_tokens_read_at_the_latest_revision() {
        let t = ContinueToken::decode(&ContinueToken::new(LATEST, "default/a").encode()).unwrap();
        assert_eq!(t.revision(), None);
        assert_eq!(ContinueToken::new(7, "default/a").revision(), Some(7));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "!!!",
            "e30=",
            &ContinueToken::new(0, "a").encode(),
            &ContinueToken::new(3, "../x").encode(),
            &ContinueToken::new(-2, "a").encode(),
        ] {
            assert!(ContinueToken::decode(bad).is_err(), "{bad}");
        }
    }
}
