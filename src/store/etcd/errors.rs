//! Mapping of etcd client errors onto [`StoreError`].

use etcd_client::Error;

use crate::store::StoreError;

// gRPC status codes (numeric, as on the wire; tonic is not a direct dependency).
const ALREADY_EXISTS: i32 = 6;
const PERMISSION_DENIED: i32 = 7;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const INVALID_ARGUMENT: i32 = 3;
const OUT_OF_RANGE: i32 = 11;

/// etcd's message for reads and watches below the compacted revision.
const COMPACTED: &str = "required revision has been compacted";
/// etcd's message for reads above the current revision.
const FUTURE: &str = "required revision is a future revision";

/// The message of a gRPC status error.
fn status_message(e: &Error) -> Option<&str> {
    match e {
        Error::GRpcStatus(s) => Some(s.message()),
        _ => None,
    }
}

/// Whether etcd refused a read or compaction because the revision was compacted.
pub fn is_compacted(e: &Error) -> bool {
    status_message(e).is_some_and(|m| m.contains(COMPACTED))
}

/// Whether etcd refused a read or compaction because the revision is in the future.
pub fn is_future(e: &Error) -> bool {
    status_message(e).is_some_and(|m| m.contains(FUTURE))
}

/// Maps an error that is neither "compacted" nor "future" (callers handle those, since they
/// need revisions). `write` picks `WriteFailed` over `Unavailable` for refusals that are not
/// about the connection.
pub fn map(e: Error, write: bool) -> StoreError {
    let refused = |msg: String| {
        if write {
            StoreError::WriteFailed(msg)
        } else {
            StoreError::Unavailable(msg)
        }
    };
    match e {
        Error::GRpcStatus(s) => {
            let msg = format!("etcd: {} ({:?})", s.message(), s.code());
            match s.code() as i32 {
                INVALID_ARGUMENT | OUT_OF_RANGE | FAILED_PRECONDITION => StoreError::Invalid(msg),
                RESOURCE_EXHAUSTED | PERMISSION_DENIED | ALREADY_EXISTS => refused(msg),
                _ => StoreError::Unavailable(msg),
            }
        }
        Error::InvalidArgs(m) => StoreError::Invalid(format!("etcd client: {m}")),
        Error::InvalidUri(e) => StoreError::Invalid(format!("etcd endpoint: {e}")),
        other => StoreError::Unavailable(format!("etcd: {other}")),
    }
}

/// The error for a request that did not finish within the configured timeout.
pub fn timed_out(what: &str, after: std::time::Duration) -> StoreError {
    StoreError::Unavailable(format!("etcd {what} did not complete within {after:?}"))
}
