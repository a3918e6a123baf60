//! get, list and watch. Watches stream newline-delimited WatchEvents over a chunked response;
//! with a Table Accept each event's object is a one-row Table.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use serde_json::json;

use super::response::add_warnings;
use super::{table, Req};
use crate::apiserver::request::Output;
use crate::apiserver::status::ApiError;
use crate::registry::selector::{FieldSelector, LabelSelector};
use crate::registry::watch::{EventType, WatchParams};
use crate::registry::{ListParams, Registry};

/// The longest watch timeout honoured (a day).
const MAX_WATCH_SECONDS: i64 = 24 * 3600;

pub(super) async fn get(reg: &Registry, r: Req) -> Result<Response, ApiError> {
    let obj = reg.get_served(r.res, r.namespace(), r.name()).await?;
    Ok(r.shape.served(r.res, obj))
}

pub(super) async fn list(reg: &Registry, r: Req) -> Result<Response, ApiError> {
    let params = list_params(&r)?;
    let result = reg.list(r.res, r.namespace(), &params).await?;
    Ok(r.shape.list(r.res, result.items, result.revision.to_string(), result.continue_token))
}

pub(super) async fn watch(reg: &Registry, r: Req) -> Result<Response, ApiError> {
    let mut lp = list_params(&r)?;
    if let Some(name) = r.path.name.clone() {
        // GET /watch/.../name: a watch of that one object.
        lp.fields.requirements.push(crate::registry::selector::FieldRequirement {
            field: "metadata.name".into(),
            value: name,
            negated: false,
        });
    }
    let timeout = match r.query.int("timeoutSeconds")? {
        Some(t) if t > 0 => Duration::from_secs(t.min(MAX_WATCH_SECONDS) as u64),
        _ => Duration::from_secs(rand::rng().random_range(1800..3600)),
    };
    let params = WatchParams {
        labels: lp.labels,
        fields: lp.fields,
        resource_version: lp.resource_version,
        resource_version_match: lp.resource_version_match,
        send_initial_events: r.query.bool("sendInitialEvents")?,
        allow_bookmarks: r.query.bool("allowWatchBookmarks")?.unwrap_or(false),
        timeout: Some(timeout),
    };
    let events = reg.watch(r.res, r.path.namespace.clone(), params).await?;
    let res = r.res;
    let output = r.shape.output.clone();
    let include = r.shape.include;
    let body = events.map(move |ev| {
        let object = match (&output, ev.kind) {
            (_, EventType::Error) => None,
            (Output::Table { version }, EventType::Bookmark) => {
                let rv = ev.object.value()["metadata"]["resourceVersion"].clone();
                Some(table::table(res, &[], json!({"resourceVersion": rv}), version, include))
            }
            (Output::Table { version }, _) => {
                let rv = ev.object.value()["metadata"]["resourceVersion"].clone();
                // Every event carries the column definitions: kubectl prints cells by them and
                // prints the header only when they change.
                let row = std::slice::from_ref(ev.object.value());
                Some(table::table(res, row, json!({"resourceVersion": rv}), version, include))
            }
            (Output::Metadata { .. }, EventType::Bookmark) => None,
            (Output::Metadata { version }, _) => {
                Some(table::partial_metadata(ev.object.value(), version))
            }
            _ => None,
        };
        // The object as the store event made it is encoded once for all its watchers.
        let object = match object {
            Some(o) => Bytes::from(serde_json::to_vec(&o).unwrap_or_default()),
            None => ev.object.json(),
        };
        Ok::<Bytes, Infallible>(watch_line(ev.kind, &object))
    });
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, private")],
        Body::from_stream(body),
    )
        .into_response();
    add_warnings(&mut resp, &r.shape.warnings);
    Ok(resp)
}

/// One line of a watch stream: `{"type":...,"object":...}` and a newline.
fn watch_line(kind: EventType, object: &[u8]) -> Bytes {
    let kind = kind.as_str();
    let mut line = Vec::with_capacity(object.len() + kind.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// labelSelector, fieldSelector, limit, continue, resourceVersion(Match) from the query.
pub(super) fn list_params(r: &Req) -> Result<ListParams, ApiError> {
    let labels = LabelSelector::parse(r.query.get("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(r.query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = r.query.int("limit")?.filter(|l| *l > 0).unwrap_or(0) as usize;
    Ok(ListParams {
        labels,
        fields,
        limit,
        continue_token: r.query.get("continue").filter(|c| !c.is_empty()).map(String::from),
        resource_version: r.query.get("resourceVersion").map(String::from),
        resource_version_match: r
            .query
            .get("resourceVersionMatch")
            .filter(|m| !m.is_empty())
            .map(String::from),
    })
}
