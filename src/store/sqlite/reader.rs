//! Reads of the revision log as of one revision (MVCC): the newest row of a key at or below the
//! revision is its state then; a tombstone there means the key did not exist.
//!
//! The functions run on any connection inside the caller's read transaction; the writer uses
//! [`history`] on its own connection to fill the gap when a subscriber joins.

use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::Connection;

use crate::store::{prefix_end, Event, EventKind, KeyValue, Result, Revision, StoreError};

use super::schema;

/// Turns a stored key back into a string (keys are always written from `&str`).
fn key_of(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(e)))
}

/// Resolves the revision a read runs at: `requested`, or `current` when it is 0 or less.
/// Must run inside the read transaction so that the compaction check matches the rows read.
pub fn resolve(
    conn: &Connection,
    requested: Revision,
    current: Revision,
) -> Result<Revision, ReadError> {
    let compacted = schema::meta(conn, "compacted")?;
    if requested <= 0 {
        return Ok(current.max(compacted));
    }
    if requested < compacted {
        return Err(StoreError::TooOld { requested, oldest: compacted }.into());
    }
    if requested > current {
        return Err(StoreError::FutureRevision { requested, current }.into());
    }
    Ok(requested)
}

/// A read failure: a store-level answer, or an SQLite error still to be mapped.
#[derive(Debug)]
pub enum ReadError {
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Sql(e)
    }
}

/// One key at `revision`.
pub fn get_at(
    conn: &Connection,
    key: &str,
    revision: Revision,
) -> rusqlite::Result<Option<KeyValue>> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision, value, create_revision, deleted FROM log \
         WHERE key = ?1 AND revision <= ?2 ORDER BY revision DESC LIMIT 1",
    )?;
    let mut rows = stmt.query(rusqlite::params![key.as_bytes(), revision])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    if row.get::<_, bool>(3)? {
        return Ok(None);
    }
    Ok(Some(KeyValue {
        key: key.to_owned(),
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        create_revision: row.get(2)?,
        mod_revision: row.get(0)?,
    }))
}

/// Live keys under `prefix` at `revision`, in key order, from `start_after` (exclusive); at most
/// `limit` of them (0 = all). Returns the keys and whether more remain.
pub fn list_at(
    conn: &Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    revision: Revision,
) -> rusqlite::Result<(Vec<KeyValue>, bool)> {
    // The smallest key after `start_after` is `start_after` followed by a zero byte.
    let mut lower = prefix.as_bytes().to_vec();
    if let Some(after) = start_after {
        let mut next = after.as_bytes().to_vec();
        next.push(0);
        lower = lower.max(next);
    }
    let upper = prefix_end(prefix.as_bytes());
    let mut groups = match upper {
        Some(_) => conn.prepare_cached(
            "SELECT key, max(revision) FROM log WHERE key >= ?1 AND key < ?3 AND revision <= ?2 \
             GROUP BY key ORDER BY key",
        )?,
        None => conn.prepare_cached(
            "SELECT key, max(revision) FROM log WHERE key >= ?1 AND revision <= ?2 \
             GROUP BY key ORDER BY key",
        )?,
    };
    let mut rows = match &upper {
        Some(upper) => groups.query(rusqlite::params![lower, revision, upper])?,
        None => groups.query(rusqlite::params![lower, revision])?,
    };
    let mut fetch =
        conn.prepare_cached("SELECT value, create_revision, deleted FROM log WHERE revision = ?1")?;
    let mut items = Vec::new();
    let mut more = false;
    while let Some(group) = rows.next()? {
        let mod_revision: Revision = group.get(1)?;
        let mut found = fetch.query([mod_revision])?;
        let Some(row) = found.next()? else { continue };
        if row.get::<_, bool>(2)? {
            continue;
        }
        if limit > 0 && items.len() == limit {
            more = true;
            break;
        }
        items.push(KeyValue {
            key: key_of(group.get(0)?)?,
            value: Bytes::from(row.get::<_, Vec<u8>>(0)?),
            create_revision: row.get(1)?,
            mod_revision,
        });
    }
    Ok((items, more))
}

/// Every event with a revision in (`after`, `upto`], in order, with previous values.
pub fn history(conn: &Connection, after: Revision, upto: Revision) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.revision, l.key, l.value, l.create_revision, l.prev_revision, l.deleted, \
                p.value, p.create_revision \
         FROM log AS l LEFT JOIN log AS p ON l.prev_revision > 0 AND p.revision = l.prev_revision \
         WHERE l.revision > ?1 AND l.revision <= ?2 ORDER BY l.revision",
    )?;
    let mut rows = stmt.query([after, upto])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let revision: Revision = row.get(0)?;
        let key = key_of(row.get(1)?)?;
        let create_revision: Revision = row.get(3)?;
        let prev_revision: Revision = row.get(4)?;
        let deleted: bool = row.get(5)?;
        let prev = match row.get::<_, Option<Vec<u8>>>(6)? {
            Some(value) if create_revision != revision => Some(KeyValue {
                key: key.clone(),
                value: Bytes::from(value),
                create_revision: row.get::<_, Option<Revision>>(7)?.unwrap_or(create_revision),
                mod_revision: prev_revision,
            }),
            _ => None,
        };
        let event = if deleted {
            let value = prev.as_ref().map(|p| p.value.clone()).unwrap_or_default();
            Event {
                kind: EventKind::Delete,
                kv: KeyValue { key, value, create_revision, mod_revision: revision },
                prev,
            }
        } else {
            let kind =
                if create_revision == revision { EventKind::Create } else { EventKind::Update };
            let value = Bytes::from(row.get::<_, Vec<u8>>(2)?);
            Event {
                kind,
                kv: KeyValue { key, value, create_revision, mod_revision: revision },
                prev,
            }
        };
        events.push(event);
    }
    Ok(events)
}
