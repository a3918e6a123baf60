//! Watch: optional initial state as synthetic ADDED events, then every change after a revision,
//! filtered by selectors (an object that stops matching is DELETED for this watcher, one that
//! starts matching is ADDED), with BOOKMARK events when the client allows them.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::catalog::ResourceInfo;
use super::generic::{
    check_field_selector, labels_select, matches, parse_rv, ListParams, Registry,
};
use super::selector::{FieldSelector, LabelSelector};
use super::served::{RecentObjects, ServedObject};
use crate::apiserver::status::ApiError;
use crate::store::{Event, EventKind, KeyValue, Revision, StoreError};

/// The annotation on the bookmark that ends the initial events of a watch-list.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
/// How often an idle watch that allows bookmarks gets one.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// How long a watch without timeoutSeconds lasts.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long before its end a watch gets its last bookmark (at most half its length), so a
/// client that restarts it resumes from a current resourceVersion.
const FINAL_BOOKMARK_LEAD: Duration = Duration::from_secs(2);

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// One event of a watch (the object in the served version, or a Status for errors).
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    pub kind: EventType,
    pub object: ServedObject,
}

/// What a watch selects and from where it starts.
#[derive(Clone, Debug, Default)]
pub struct WatchParams {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub send_initial_events: Option<bool>,
    pub allow_bookmarks: bool,
    /// End the watch after this long.
    pub timeout: Option<Duration>,
}

impl Registry {
    /// Starts a watch. Request-level problems are errors; problems after the watch has started
    /// (a revision too old to replay) arrive as an ERROR event.
    pub async fn watch(
        &self,
        res: &'static ResourceInfo,
        namespace: Option<String>,
        p: WatchParams,
    ) -> Result<ReceiverStream<WatchEvent>, ApiError> {
        check_field_selector(res, &p.fields)?;
        validate_watch_params(&p)?;
        let rv = p.resource_version.clone().unwrap_or_default();
        let send_initial = p.send_initial_events.unwrap_or(rv.is_empty() || rv == "0");
        let mut initial = vec![];
        let start: Revision = if send_initial {
            if !rv.is_empty() && rv != "0" {
                self.wait_for_revision(parse_rv(&rv)?).await?;
            }
            let lp = ListParams {
                labels: p.labels.clone(),
                fields: p.fields.clone(),
                ..Default::default()
            };
            let list = self.list(res, namespace.as_deref(), &lp).await?;
            initial = list.items;
            list.revision
        } else if rv.is_empty() || rv == "0" {
            self.store.revision()
        } else {
            parse_rv(&rv)?
        };
        let (tx, rx) = mpsc::channel(256);
        let this = self.clone();
        let task = WatchTask { res, namespace, p, start, initial, tx };
        tokio::spawn(async move { task.run(this).await });
        Ok(ReceiverStream::new(rx))
    }
}

/// The bookmark event object: kind, apiVersion and metadata.resourceVersion only.
pub fn bookmark(res: &ResourceInfo, revision: Revision, initial_events_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        meta["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

fn validate_watch_params(p: &WatchParams) -> Result<(), ApiError> {
    let mut causes = vec![];
    let rv_match = p.resource_version_match.as_deref().unwrap_or("");
    if p.send_initial_events.is_some() {
        if rv_match != "NotOlderThan" {
            causes.push(super::validation::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    } else if !rv_match.is_empty() {
        causes.push(super::validation::forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    if p.send_initial_events == Some(true) && !p.allow_bookmarks {
        causes.push(super::validation::forbidden(
            "allowWatchBookmarks",
            "allowWatchBookmarks must be set to true when sendInitialEvents is set",
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", causes))
    }
}

struct WatchTask {
    res: &'static ResourceInfo,
    namespace: Option<String>,
    p: WatchParams,
    start: Revision,
    initial: Vec<ServedObject>,
    tx: mpsc::Sender<WatchEvent>,
}

impl WatchTask {
    async fn run(self, registry: Registry) {
        let WatchTask { res, namespace, p, start, initial, tx } = self;
        let send = |kind: EventType, object: ServedObject| {
            let tx = tx.clone();
            async move { tx.send(WatchEvent { kind, object }).await.is_ok() }
        };
        for obj in initial {
            if !send(EventType::Added, obj).await {
                return;
            }
        }
        if p.send_initial_events == Some(true)
            && p.allow_bookmarks
            && !send(EventType::Bookmark, bookmark(res, start, true).into()).await
        {
            return;
        }
        let prefix = Registry::prefix(res, namespace.as_deref());
        let mut watcher = registry.store.watch(&prefix, start);
        let timeout = p.timeout.unwrap_or(DEFAULT_WATCH_TIMEOUT);
        let started = tokio::time::Instant::now();
        let deadline = tokio::time::sleep_until(started + timeout);
        tokio::pin!(deadline);
        let mut marks = BookmarkSchedule::new(started, timeout);
        let next_mark = tokio::time::sleep_until(marks.next(started));
        tokio::pin!(next_mark);
        let mut last = start;
        // Delivers one store event (or the end of the store watch); false when the watch is over.
        let deliver = |next: Option<Result<Event, StoreError>>, last: &mut Revision| {
            let step = match next {
                None => Err(None),
                Some(Err(e)) => Err(Some(error_status(e, *last))),
                Some(Ok(ev)) => {
                    *last = (*last).max(ev.revision());
                    Ok(translate(res, &ev, &p, &registry.recent))
                }
            };
            let send = &send;
            async move {
                match step {
                    Err(None) => false,
                    Err(Some(status)) => {
                        send(EventType::Error, status.into()).await;
                        false
                    }
                    Ok(None) => true,
                    Ok(Some((kind, obj))) => send(kind, obj).await,
                }
            }
        };
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = &mut next_mark, if p.allow_bookmarks => {
                    // The cache hands every event up to its revision to its current watchers
                    // before it publishes that revision: once this watcher's buffer is
                    // drained, nothing at or below `progress` is left for it, so the bookmark
                    // can carry `progress` even when other resources made it (clients then
                    // resume from a recent revision instead of one that compaction may have
                    // removed). A watcher still catching up only vouches for what it sent.
                    let progress = registry.store.revision();
                    while let Some(next) = watcher.next().now_or_never() {
                        if !deliver(next, &mut last).await {
                            return;
                        }
                    }
                    if watcher.is_current() {
                        last = last.max(progress);
                    }
                    if !send(EventType::Bookmark, bookmark(res, last, false).into()).await {
                        return;
                    }
                    let now = tokio::time::Instant::now();
                    marks.sent(now);
                    next_mark.as_mut().reset(marks.next(now));
                }
                next = watcher.next() => {
                    if !deliver(next, &mut last).await {
                        return;
                    }
                }
            }
        }
    }
}

/// When a watch that allows bookmarks gets them: every [`BOOKMARK_INTERVAL`], and once shortly
/// before the watch's deadline.
struct BookmarkSchedule {
    final_at: tokio::time::Instant,
    final_sent: bool,
}

impl BookmarkSchedule {
    fn new(started: tokio::time::Instant, timeout: Duration) -> Self {
        let final_at = started + timeout - FINAL_BOOKMARK_LEAD.min(timeout / 2);
        BookmarkSchedule { final_at, final_sent: false }
    }

    /// The next bookmark after one sent (or the watch started) at `now`.
    fn next(&self, now: tokio::time::Instant) -> tokio::time::Instant {
        let periodic = now + BOOKMARK_INTERVAL;
        if self.final_sent || periodic < self.final_at {
            periodic
        } else {
            self.final_at
        }
    }

    fn sent(&mut self, now: tokio::time::Instant) {
        if now >= self.final_at {
            self.final_sent = true;
        }
    }
}

/// The watch event (if any) a store event means for a watcher with these selectors. Objects
/// come from `recent`, so watchers of one event share its decoding (and encoding).
fn translate(
    res: &'static ResourceInfo,
    ev: &Event,
    p: &WatchParams,
    recent: &RecentObjects,
) -> Option<(EventType, ServedObject)> {
    let cur = recent.decode(res, &ev.kv).ok()?;
    let unfiltered = p.labels.is_empty() && p.fields.is_empty();
    let cur_matches = unfiltered || selects(res, p, &ev.kv, recent);
    match ev.kind {
        EventKind::Create => cur_matches.then_some((EventType::Added, cur)),
        EventKind::Delete => cur_matches.then_some((EventType::Deleted, cur)),
        EventKind::Update => {
            // Without selectors the earlier version matched too; nothing to decode.
            let prev_matches = match &ev.prev {
                Some(_) if unfiltered => true,
                Some(kv) => selects(res, p, kv, recent),
                None => false,
            };
            match (prev_matches, cur_matches) {
                (true, true) => Some((EventType::Modified, cur)),
                (false, true) => Some((EventType::Added, cur)),
                (true, false) => Some((EventType::Deleted, cur)),
                (false, false) => None,
            }
        }
    }
}

/// Whether the watcher's selectors select this version of the object. A label selector reads
/// only the labels: the object is built only for a field selector.
fn selects(
    res: &'static ResourceInfo,
    p: &WatchParams,
    kv: &KeyValue,
    recent: &RecentObjects,
) -> bool {
    if p.fields.is_empty() {
        return labels_select(&p.labels, &kv.value);
    }
    recent.decode(res, kv).is_ok_and(|o| matches(res, o.value(), &p.labels, &p.fields))
}

fn error_status(e: StoreError, at: Revision) -> Value {
    let err = match e {
        StoreError::TooOld { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::CacheReset => {
            ApiError::gone(format!("too old resource version: {at} ({})", at + 1))
        }
        other => ApiError::from_store(
            other,
            crate::apiserver::status::Target { group: "", resource: "", name: "" },
        ),
    };
    err.to_status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::catalog;
    use crate::store::KeyValue;

    fn kv(labels: Value, rev: Revision) -> KeyValue {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "d", "labels": labels}});
        crate::registry::served::tests::configmap_kv(&obj, rev)
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let p =
            WatchParams { labels: LabelSelector::parse("app=web").unwrap(), ..Default::default() };
        let update = |prev: Value, cur: Value| Event {
            kind: EventKind::Update,
            kv: kv(cur, 3),
            prev: Some(kv(prev, 2)),
        };
        let recent = RecentObjects::default();
        let t = |ev: &Event| {
            translate(res, ev, &p, &recent)
                .map(|(k, o)| (k, o.value()["metadata"]["resourceVersion"].clone()))
        };
        assert_eq!(
            t(&update(json!({}), json!({"app": "web"}))),
            Some((EventType::Added, json!("3")))
        );
        assert_eq!(
            t(&update(json!({"app": "web"}), json!({}))).map(|x| x.0),
            Some(EventType::Deleted)
        );
        assert_eq!(
            t(&update(json!({"app": "web"}), json!({"app": "web", "x": "y"}))).map(|x| x.0),
            Some(EventType::Modified)
        );
        assert_eq!(t(&update(json!({}), json!({}))), None);
    }

    #[test]
    fn bookmarks_come_periodically_and_once_before_the_deadline() {
        let t0 = tokio::time::Instant::now();
        let s = |secs: u64| Duration::from_secs(secs);
        let mut short = BookmarkSchedule::new(t0, s(5));
        assert_eq!(short.next(t0), t0 + s(3));
        short.sent(t0 + s(3));
        assert_eq!(short.next(t0 + s(3)), t0 + s(33));
        let one = BookmarkSchedule::new(t0, s(1));
        assert_eq!(one.next(t0), t0 + Duration::from_millis(500));
        let mut long = BookmarkSchedule::new(t0, s(100));
        assert_eq!(long.next(t0), t0 + BOOKMARK_INTERVAL);
        long.sent(t0 + s(90));
        assert_eq!(long.next(t0 + s(90)), t0 + s(98));
        long.sent(t0 + s(98));
        assert_eq!(long.next(t0 + s(98)), t0 + s(128));
    }

    #[test]
    fn watch_params_follow_upstream_rules() {
        let p = WatchParams {
            send_initial_events: Some(true),
            allow_bookmarks: true,
            ..Default::default()
        };
        assert_eq!(validate_watch_params(&p).unwrap_err().code, 422);
        let ok = WatchParams { resource_version_match: Some("NotOlderThan".into()), ..p };
        assert!(validate_watch_params(&ok).is_ok());
        let b = bookmark(catalog().find("", "v1", "pods").unwrap(), 7, true);
        assert_eq!(b["metadata"]["annotations"][INITIAL_EVENTS_END], "true");
    }
}
