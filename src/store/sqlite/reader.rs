//! Reads of the revision log as of one revision (MVCC): the newest row of a key at or below the
//! revision is its state then; a tombstone there means the key did not exist.
//!
//! Which row holds a key's state comes from the in-memory key index ([`super::keys`]); the row
//! itself is read by revision. The functions run on any connection inside the caller's read
//! transaction; the writer uses [`history`] on its own connection to fill the gap when a
//! subscriber joins.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rusqlite::types::Type;
use rusqlite::Connection;

use crate::store::{Event, EventKind, KeyValue, Result, Revision, StoreError};

use super::keys::Version;
use super::{schema, Shared};

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

/// Fails with `TooOld` if compaction went past `revision` by the time the key index was read:
/// it may have dropped versions the read needed. Call after reading the index.
fn still_readable(shared: &Shared, revision: Revision) -> Result<(), ReadError> {
    let compacted = shared.compacted.load(Ordering::Acquire);
    if revision < compacted {
        return Err(StoreError::TooOld { requested: revision, oldest: compacted }.into());
    }
    Ok(())
}

/// The value of the row at `version`, which the key index says holds `key`.
fn value_at(conn: &Connection, key: &str, version: Version) -> Result<Bytes, ReadError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM log WHERE revision = ?1")?;
    let mut rows = stmt.query([version.revision])?;
    match rows.next()? {
        Some(row) => Ok(Bytes::from(row.get::<_, Vec<u8>>(0)?)),
        None => Err(StoreError::Unavailable(format!(
            "revision {} of {key} is missing from the log",
            version.revision
        ))
        .into()),
    }
}

/// One key at `revision`.
pub fn get_at(
    conn: &Connection,
    shared: &Shared,
    key: &str,
    revision: Revision,
) -> Result<Option<KeyValue>, ReadError> {
    let version = shared.keys.read().at(key, revision);
    still_readable(shared, revision)?;
    let Some(version) = version else { return Ok(None) };
    Ok(Some(KeyValue {
        key: key.to_owned(),
        value: value_at(conn, key, version)?,
        create_revision: version.create_revision,
        mod_revision: version.revision,
    }))
}

/// Live keys under `prefix` at `revision`, in key order, from `start_after` (exclusive); at most
/// `limit` of them (0 = all). Returns the keys and whether more remain.
pub fn list_at(
    conn: &Connection,
    shared: &Shared,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    revision: Revision,
) -> Result<(Vec<KeyValue>, bool), ReadError> {
    let (found, more) = shared.keys.read().list_at(prefix, start_after, limit, revision);
    still_readable(shared, revision)?;
    let mut items = Vec::with_capacity(found.len());
    for (key, version) in found {
        let value = value_at(conn, &key, version)?;
        items.push(KeyValue {
            key,
            value,
            create_revision: version.create_revision,
            mod_revision: version.revision,
        });
    }
    Ok((items, more))
}

/// The columns an event is rebuilt from: the row, and the row of the key's previous version.
const EVENT_ROWS: &str = "SELECT l.revision, l.key, l.value, l.create_revision, l.prev_revision, \
        l.deleted, p.value, p.create_revision \
     FROM log AS l LEFT JOIN log AS p ON l.prev_revision > 0 AND p.revision = l.prev_revision";

/// Every event with a revision in (`after`, `upto`], in order, with previous values.
pub fn history(conn: &Connection, after: Revision, upto: Revision) -> rusqlite::Result<Vec<Event>> {
    let sql =
        format!("{EVENT_ROWS} WHERE l.revision > ?1 AND l.revision <= ?2 ORDER BY l.revision");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query(rusqlite::params![after, upto])?;
    events(rows)
}

/// At most `limit` events under `prefix` with a revision in (`after`, `upto`], in order, with
/// previous values (a watcher catching up on what the watch cache no longer holds).
pub fn history_under(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    upto: Revision,
    limit: usize,
) -> rusqlite::Result<Vec<Event>> {
    let sql = format!(
        "{EVENT_ROWS} WHERE l.revision > ?1 AND l.revision <= ?2 AND l.key >= ?3 \
         AND (?4 IS NULL OR l.key < ?4) ORDER BY l.revision LIMIT ?5"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let end = crate::store::prefix_end(prefix.as_bytes());
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query(rusqlite::params![after, upto, prefix.as_bytes(), end, limit])?;
    events(rows)
}

/// Rebuilds the events of rows selected as [`EVENT_ROWS`].
fn events(mut rows: rusqlite::Rows<'_>) -> rusqlite::Result<Vec<Event>> {
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
