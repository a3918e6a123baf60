//! One group-version's OpenAPI 3.0 document, and the set of all documents with their hashes,
//! built once on first use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{json, Value};

use super::components;
use super::operations::PathsBuilder;
use super::resources::{self, Served};

/// A serialized document and the hash clients cache it under.
#[derive(Debug, Clone)]
pub struct Document {
    /// `api/v1` or `apis/<group>/<version>`: the document's key in the index.
    pub key: String,
    pub body: Bytes,
    /// Upper-case hex of a 128-bit hash of `body`.
    pub hash: String,
}

static DOCS: OnceLock<Vec<Document>> = OnceLock::new();
/// Set when the build begins.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Every served group-version's document, in index order; built on first use.
pub fn documents() -> &'static [Document] {
    DOCS.get_or_init(build_all)
}

/// Whether the documents have been built.
pub fn is_built() -> bool {
    DOCS.get().is_some()
}

/// Whether building the documents has begun (it may not have finished).
pub fn build_started() -> bool {
    STARTED.load(Ordering::Relaxed)
}

/// The document with key `key`.
pub fn find(key: &str) -> Option<&'static Document> {
    documents().iter().find(|d| d.key == key)
}

fn build_all() -> Vec<Document> {
    STARTED.store(true, Ordering::Relaxed);
    let served = resources::served();
    resources::group_versions()
        .into_iter()
        .map(|(group, version)| {
            let members: Vec<&Served> =
                served.iter().filter(|r| r.group == group && r.version == version).collect();
            let value = build(group, version, &members);
            let body = compact(serde_json::to_vec(&value).unwrap_or_default());
            let hash = hash_hex(&body);
            Document { key: key(group, version), body, hash }
        })
        .collect()
}

/// Kept bytes without the spare capacity their buffer grew with (up to half again its size).
pub fn compact(mut buf: Vec<u8>) -> Bytes {
    buf.shrink_to_fit();
    Bytes::from(buf)
}

/// The index key of a group-version.
pub fn key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Builds the document of one group-version from its resources.
pub fn build(group: &str, version: &str, served: &[&Served]) -> Value {
    let mut paths = PathsBuilder::new(group, version);
    for r in served {
        paths.add(r);
    }
    let schemas = components::schemas(group, version, &paths.kinds);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{"BearerToken": []}],
    })
}

/// A stable 128-bit FNV-1a hash, as 32 upper-case hex digits.
pub fn hash_hex(data: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for byte in data {
        h ^= u128::from(*byte);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        assert_eq!(hash_hex(b"abc"), hash_hex(b"abc"));
        assert_ne!(hash_hex(b"abc"), hash_hex(b"abd"));
        assert_eq!(hash_hex(b"").len(), 32);
    }
}
