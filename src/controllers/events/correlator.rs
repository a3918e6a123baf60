//! The event correlator (client-go's EventCorrelator, tools/record/events_cache.go): before an
//! event is written it is aggregated with similar ones, counted against an identical earlier
//! one, and rate limited per source and object.
//!
//! - Aggregation: events from one source about one object with the same type and reason but
//!   different messages; once 10 distinct messages were seen within 10 minutes, each further one
//!   becomes a single "(combined from similar events): MESSAGE" event.
//! - De-duplication: an event identical to an earlier one (message included; for combined events,
//!   the aggregation group) updates the earlier Event (count + 1, lastTimestamp, message).
//! - Spam filter: a token bucket per source and object (burst 25, one more every 5 minutes);
//!   an event beyond it is dropped, though it still counts as observed, as upstream.
//!
//! All three tables are bounded LRU caches of 4096 entries. The correlator decides; writing is
//! the caller's: each de-duplication [`Slot`] holds the state still to be written, so writes for
//! one Event happen in order, one at a time, and a burst folds into fewer writes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Entries in each of the correlator's caches, as upstream.
pub const CACHE_ENTRIES: usize = 4096;
/// Distinct messages within [`AGGREGATE_INTERVAL`] after which similar events are combined.
pub const AGGREGATE_MAX_EVENTS: usize = 10;
/// How long an aggregation group lives after its last event.
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
/// Events a source may record about one object at once.
pub const SPAM_BURST: f64 = 25.0;
/// Seconds for the spam filter to grant one more event.
pub const SPAM_REFILL_SECS: f64 = 300.0;
/// The message prefix of a combined event.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// The write state of one recorded Event: what the server has, and what is still to send.
#[derive(Debug)]
pub struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug)]
pub struct SlotState {
    /// The Event as first recorded (its name, involved object, source, first timestamp).
    pub template: Event,
    /// How many times the event was observed, filtered ones included.
    pub observed: i32,
    /// The newest state that passed the spam filter and is not yet written.
    pub pending: Option<Update>,
    /// A writer is sending this slot's pending state.
    pub writing: bool,
    /// The server has (or had) this Event, so later states are patches.
    pub created: bool,
}

/// The fields a repeated event changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub count: i32,
    pub last_timestamp: Option<Time>,
    pub message: Option<String>,
}

impl Slot {
    fn new(template: Event) -> Slot {
        Slot {
            state: Mutex::new(SlotState {
                template,
                observed: 1,
                pending: None,
                writing: false,
                created: false,
            }),
        }
    }

    /// The slot's state; a panic elsewhere while it was held does not make it unusable.
    pub fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SlotState {
    /// The full Event carrying `update`, for a create.
    pub fn event_with(&self, update: &Update) -> Event {
        let mut e = self.template.clone();
        e.count = Some(update.count);
        e.last_timestamp = update.last_timestamp.clone();
        e.message = update.message.clone();
        e
    }
}

/// What the correlator made of one event that passed the spam filter.
#[derive(Debug)]
pub struct Correlated {
    /// The event as it should now stand on the server (name, count, message).
    pub event: Event,
    /// It repeats an Event already recorded: a patch, not a create.
    pub update: bool,
    /// Set when the caller must start writing this slot (no writer is busy with it).
    pub writer: Option<Arc<Slot>>,
}

struct Aggregate {
    messages: HashSet<String>,
    last: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed / SPAM_REFILL_SECS).min(SPAM_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Aggregation groups, recorded events and spam buckets.
pub struct Correlator {
    aggregates: LruCache<String, Aggregate>,
    logs: LruCache<String, Arc<Slot>>,
    spam: LruCache<String, Bucket>,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(CACHE_ENTRIES)
    }
}

const SEP: &str = "\u{1f}";

fn source_and_object(e: &Event) -> Vec<&str> {
    let src = e.source.as_ref();
    let obj = &e.involved_object;
    vec![
        src.and_then(|s| s.component.as_deref()).unwrap_or(""),
        src.and_then(|s| s.host.as_deref()).unwrap_or(""),
        obj.kind.as_deref().unwrap_or(""),
        obj.namespace.as_deref().unwrap_or(""),
        obj.name.as_deref().unwrap_or(""),
        obj.uid.as_deref().unwrap_or(""),
        obj.api_version.as_deref().unwrap_or(""),
    ]
}

/// The spam filter's key: source and involved object.
fn spam_key(e: &Event) -> String {
    source_and_object(e).join(SEP)
}

/// The aggregation group: source, object, type, reason and reporting controller/instance.
fn aggregate_key(e: &Event) -> String {
    let mut parts = source_and_object(e);
    parts.extend([
        e.type_.as_deref().unwrap_or(""),
        e.reason.as_deref().unwrap_or(""),
        e.reporting_component.as_deref().unwrap_or(""),
        e.reporting_instance.as_deref().unwrap_or(""),
    ]);
    format!("aggregate{SEP}{}", parts.join(SEP))
}

/// An event's identity for de-duplication: source, object (with field path), type, reason and
/// message.
fn event_key(e: &Event) -> String {
    let mut parts = source_and_object(e);
    parts.push(e.involved_object.field_path.as_deref().unwrap_or(""));
    parts.extend([
        e.type_.as_deref().unwrap_or(""),
        e.reason.as_deref().unwrap_or(""),
        e.message.as_deref().unwrap_or(""),
    ]);
    format!("event{SEP}{}", parts.join(SEP))
}

/// Nanoseconds since the epoch of an event timestamp (0 when absent).
fn nanos(t: Option<&Time>) -> i128 {
    t.map(|t| t.0.as_nanosecond()).unwrap_or(0)
}

impl Correlator {
    pub fn new(entries: usize) -> Correlator {
        Correlator {
            aggregates: LruCache::new(entries),
            logs: LruCache::new(entries),
            spam: LruCache::new(entries),
        }
    }

    /// Aggregates, de-duplicates and rate limits `event` (a fresh event with count 1 and both
    /// timestamps set to its time); `None` when the spam filter drops it.
    pub fn correlate(&mut self, event: Event, now: Instant) -> Option<Correlated> {
        let (event, key) = self.aggregate(event, now);
        let (event, slot, update) = self.observe(event, key);
        let bucket = self
            .spam
            .entry(spam_key(&event))
            .or_insert_with(|| Bucket { tokens: SPAM_BURST, at: now });
        if !bucket.try_take(now) {
            return None;
        }
        let mut st = slot.lock();
        st.pending = Some(Update {
            count: event.count.unwrap_or(1),
            last_timestamp: event.last_timestamp.clone(),
            message: event.message.clone(),
        });
        let writer = (!st.writing).then(|| {
            st.writing = true;
            slot.clone()
        });
        drop(st);
        Some(Correlated { event, update, writer })
    }

    /// The event to record and its de-duplication key: the event itself, or, once its group has
    /// seen enough distinct messages, a combined event keyed by the group.
    fn aggregate(&mut self, event: Event, now: Instant) -> (Event, String) {
        let group = aggregate_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let agg = self
            .aggregates
            .entry(group.clone())
            .or_insert_with(|| Aggregate { messages: HashSet::new(), last: now });
        if now.saturating_duration_since(agg.last) > AGGREGATE_INTERVAL {
            agg.messages.clear();
        }
        agg.messages.insert(message.clone());
        agg.last = now;
        if agg.messages.len() < AGGREGATE_MAX_EVENTS {
            let key = event_key(&event);
            return (event, key);
        }
        // Keep the group's set at its bound.
        if let Some(any) = agg.messages.iter().next().cloned() {
            agg.messages.remove(&any);
        }
        let object = event.involved_object.name.as_deref().unwrap_or("");
        let at = event.last_timestamp.clone();
        let combined = Event {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(format!("{object}.{:x}", nanos(at.as_ref()))),
                namespace: event.metadata.namespace.clone(),
                ..Default::default()
            },
            count: Some(1),
            first_timestamp: at.clone(),
            last_timestamp: at,
            message: Some(format!("{COMBINED_PREFIX}{message}")),
            involved_object: event.involved_object,
            type_: event.type_,
            reason: event.reason,
            source: event.source,
            reporting_component: event.reporting_component,
            reporting_instance: event.reporting_instance,
            ..Default::default()
        };
        (combined, group)
    }

    /// Counts `event` against an earlier one with the same key: the earlier Event's name and
    /// first timestamp with the count raised, or a new slot.
    fn observe(&mut self, mut event: Event, key: String) -> (Event, Arc<Slot>, bool) {
        if let Some(slot) = self.logs.get(&key) {
            let slot = slot.clone();
            let mut st = slot.lock();
            st.observed = st.observed.saturating_add(1);
            event.metadata.name = st.template.metadata.name.clone();
            event.first_timestamp = st.template.first_timestamp.clone();
            event.count = Some(st.observed);
            drop(st);
            return (event, slot, true);
        }
        event.count = Some(1);
        let slot = Arc::new(Slot::new(event.clone()));
        self.logs.insert(key, slot.clone());
        (event, slot, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};

    fn event(reason: &str, message: &str) -> Event {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        Event {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(format!("web.{:x}", now.0.as_nanosecond())),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some("ReplicaSet".into()),
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some("replicaset-controller".into()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        }
    }

    /// Finishes the write a correlation asked for (as a writer that succeeded would).
    fn written(c: &Correlated) {
        if let Some(slot) = &c.writer {
            let mut st = slot.lock();
            st.pending = None;
            st.writing = false;
            st.created = true;
        }
    }

    #[test]
    fn tenth_distinct_message_and_later_ones_are_combined_into_one_event() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let mut names = HashSet::new();
        for i in 0..9 {
            let r = c.correlate(event("SuccessfulCreate", &format!("Created pod: p{i}")), now);
            let r = r.expect("within burst");
            assert!(!r.update);
            assert_eq!(r.event.message.as_deref(), Some(format!("Created pod: p{i}").as_str()));
            names.insert(r.event.metadata.name.clone());
            written(&r);
        }
        let mut combined = None;
        for i in 9..15 {
            let r = c.correlate(event("SuccessfulCreate", &format!("Created pod: p{i}")), now);
            let r = r.expect("within burst");
            assert_eq!(
                r.event.message.as_deref(),
                Some(format!("{COMBINED_PREFIX}Created pod: p{i}").as_str())
            );
            assert_eq!(r.event.count, Some(i - 8));
            assert_eq!(r.update, i > 9);
            let name = r.event.metadata.name.clone();
            assert!(!names.contains(&name));
            assert_eq!(combined.get_or_insert(name.clone()), &name);
            written(&r);
        }
        // Another reason is another group.
        let r = c.correlate(event("SuccessfulDelete", "Deleted pod: p0"), now).expect("burst");
        assert_eq!(r.event.message.as_deref(), Some("Deleted pod: p0"));
    }

    #[test]
    fn aggregation_group_expires_after_ten_quiet_minutes() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        for i in 0..9 {
            c.correlate(event("R", &format!("m{i}")), t0).expect("burst");
        }
        let later = t0 + AGGREGATE_INTERVAL + Duration::from_secs(1);
        let r = c.correlate(event("R", "m9"), later).expect("burst");
        assert_eq!(r.event.message.as_deref(), Some("m9"));
    }

    #[test]
    fn identical_event_raises_the_count_of_the_first_one() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let first = c.correlate(event("Started", "same"), now).expect("burst");
        assert_eq!((first.update, first.event.count), (false, Some(1)));
        assert!(first.writer.is_some());
        written(&first);
        for n in 2..=5 {
            let r = c.correlate(event("Started", "same"), now).expect("burst");
            assert!(r.update);
            assert_eq!(r.event.count, Some(n));
            assert_eq!(r.event.metadata.name, first.event.metadata.name);
            assert_eq!(r.event.first_timestamp, first.event.first_timestamp);
            written(&r);
        }
    }

    #[test]
    fn a_busy_writer_takes_the_newest_state_instead_of_a_second_writer() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let first = c.correlate(event("Started", "same"), now).expect("burst");
        let slot = first.writer.clone().expect("first starts a writer");
        for _ in 0..3 {
            let r = c.correlate(event("Started", "same"), now).expect("burst");
            assert!(r.writer.is_none());
        }
        let st = slot.lock();
        assert_eq!(st.pending.as_ref().map(|u| u.count), Some(4));
        assert!(st.writing);
    }

    #[test]
    fn spam_filter_allows_a_burst_of_25_per_object_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        let passed = (0..30).filter(|_| c.correlate(event("Tick", "same"), t0).is_some()).count();
        assert_eq!(passed, 25);
        // Dropped events still count as observed: the next written state says so.
        let later = t0 + Duration::from_secs(301);
        let r = c.correlate(event("Tick", "same"), later).expect("refilled");
        assert_eq!(r.event.count, Some(31));
        assert!(c.correlate(event("Tick", "same"), later).is_none());
        // Another object has its own bucket.
        let mut other = event("Tick", "same");
        other.involved_object.uid = Some("u-2".into());
        assert!(c.correlate(other, later).is_some());
    }

    #[test]
    fn thirty_creations_show_nine_events_and_one_combined_with_count_sixteen() {
        let mut c = Correlator::default();
        let now = Instant::now();
        let mut last_combined = None;
        for i in 0..30 {
            if let Some(r) =
                c.correlate(event("SuccessfulCreate", &format!("Created pod: p{i}")), now)
            {
                if r.update || i >= 9 {
                    last_combined = Some(r.event.count);
                }
            }
        }
        assert_eq!(last_combined, Some(Some(16)));
    }

    #[test]
    fn caches_are_bounded() {
        let mut c = Correlator::new(8);
        let now = Instant::now();
        for i in 0..100 {
            let mut e = event("R", "m");
            e.involved_object.uid = Some(format!("u-{i}"));
            c.correlate(e, now);
        }
        // The entry API may hold one more than the bound until the next insert.
        assert!(c.logs.len() <= 9 && c.aggregates.len() <= 9 && c.spam.len() <= 9);
    }
}
