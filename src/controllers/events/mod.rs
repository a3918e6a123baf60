//! The event recorder every controller and the scheduler share: core/v1 Events, as
//! `kubectl describe` shows them. Every event first goes through one process-wide
//! [`correlator::Correlator`] (client-go's EventCorrelator): similar events are combined, a
//! repeated one raises the count of the Event already written (a merge patch of count,
//! lastTimestamp and message) and a source may not flood one object. Recording is best effort: a
//! failed write is logged, never retried.

pub mod correlator;

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};

use correlator::{Correlator, Slot, Update};

static CORRELATOR: LazyLock<Mutex<Correlator>> = LazyLock::new(Default::default);

/// Records an event about `obj` from `component` without waiting for the write.
pub fn record<K: Resource<DynamicType = ()>>(
    client: &Client,
    component: &'static str,
    obj: &K,
    warning: bool,
    reason: &str,
    message: String,
) {
    tokio::spawn(write(client, component, obj, warning, reason, message));
}

/// Like [`record`], but the returned future does the write (callers that bound how many
/// event writes are in flight, such as the scheduler). The event is correlated at once, in call
/// order; the future writes it, or does nothing when the spam filter dropped it or another
/// write of the same Event is under way (that one sends the newest state).
pub fn write<K: Resource<DynamicType = ()>>(
    client: &Client,
    component: &'static str,
    obj: &K,
    warning: bool,
    reason: &str,
    message: String,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let event = new_event::<K>(obj, &ns, component, warning, reason, message);
    let correlated = {
        let mut c = CORRELATOR.lock().unwrap_or_else(|e| e.into_inner());
        c.correlate(event, Instant::now())
    };
    let writer = match correlated {
        None => {
            tracing::debug!(
                component,
                reason,
                object = %obj.name_any(),
                namespace = %ns,
                "event dropped by the spam filter"
            );
            None
        }
        Some(c) => c.writer,
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    async move {
        if let Some(slot) = writer {
            flush(api, slot).await;
        }
    }
}

/// A fresh event (count 1, both timestamps now) about `obj`.
fn new_event<K: Resource<DynamicType = ()>>(
    obj: &K,
    ns: &str,
    component: &'static str,
    warning: bool,
    reason: &str,
    message: String,
) -> Event {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", obj.name_any(), now.0.as_nanosecond())),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(obj.name_any()),
            namespace: Some(ns.to_string()),
            uid: obj.uid(),
            resource_version: obj.resource_version(),
            ..Default::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource { component: Some(component.into()), host: None }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        event_time: None,
        count: Some(1),
        reporting_component: Some(component.into()),
        reporting_instance: None,
        action: None,
        related: None,
        series: None,
    }
}

/// Clears the slot's writer flag if its writer is dropped before it finished (a caller that
/// dropped the future from [`write`]), so later events start a new writer.
struct WriterGuard {
    slot: Arc<Slot>,
    armed: bool,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if self.armed {
            self.slot.lock().writing = false;
        }
    }
}

/// Sends the slot's pending state until none is left: a create for a new Event, a merge patch
/// for one the server has (a create again if it expired, as upstream).
async fn flush(api: Api<Event>, slot: Arc<Slot>) {
    let mut guard = WriterGuard { slot, armed: true };
    loop {
        let (update, created, name, event) = {
            let mut st = guard.slot.lock();
            let Some(update) = st.pending.take() else {
                st.writing = false;
                guard.armed = false;
                return;
            };
            let name = st.template.metadata.name.clone().unwrap_or_default();
            let event = st.event_with(&update);
            (update, st.created, name, event)
        };
        let ok = if created {
            patch_or_create(&api, &name, &update, &event).await
        } else {
            create(&api, &name, &update, &event).await
        };
        if ok {
            guard.slot.lock().created = true;
        }
    }
}

/// Creates `event`; one that already exists (a create that raced) is patched instead.
async fn create(api: &Api<Event>, name: &str, update: &Update, event: &Event) -> bool {
    match api.create(&PostParams::default(), event).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 409 => patch(api, name, update).await.is_ok(),
        Err(e) => {
            tracing::debug!(error = %e, event = name, "cannot record event");
            false
        }
    }
}

async fn patch_or_create(api: &Api<Event>, name: &str, update: &Update, event: &Event) -> bool {
    match patch(api, name, update).await {
        Ok(()) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => create(api, name, update, event).await,
        Err(e) => {
            tracing::debug!(error = %e, event = name, "cannot update event");
            false
        }
    }
}

async fn patch(api: &Api<Event>, name: &str, update: &Update) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "count": update.count,
        "lastTimestamp": update.last_timestamp,
        "message": update.message,
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await.map(|_| ())
}
