//! The event recorder every controller and the scheduler share: core/v1 Events, as
//! `kubectl describe` shows them. Recording is best effort: a failed write is logged, never
//! retried.

use chrono::Utc;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::api::PostParams;
use kube::{Api, Client, Resource, ResourceExt};

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
/// event writes are in flight, such as the scheduler).
pub fn write<K: Resource<DynamicType = ()>>(
    client: &Client,
    component: &'static str,
    obj: &K,
    warning: bool,
    reason: &str,
    message: String,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                obj.name_any(),
                Utc::now().timestamp_nanos_opt().unwrap_or(0)
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: Some(obj.name_any()),
            namespace: Some(ns.clone()),
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
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    async move {
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "cannot record event");
        }
    }
}
