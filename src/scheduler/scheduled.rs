//! The `Scheduled` event upstream's scheduler records once a binding succeeds ("Successfully
//! assigned NS/POD to NODE", from default-scheduler). It is one more write per pod, so it stays
//! off the binding path: a successful binding only queues the event (a bounded queue; when it is
//! full the event is dropped, as upstream's event broadcaster drops events it cannot queue) and
//! one task writes the queue through the shared recorder with a few writes in flight.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::DEFAULT_SCHEDULER_NAME;
use crate::controllers::events;

/// Events waiting to be written (upstream's broadcaster queues 1,000).
const QUEUE: usize = 1000;
/// Event writes in flight at once.
const IN_FLIGHT: usize = 8;

/// Where successful bindings queue their event.
#[derive(Clone)]
pub struct ScheduledEvents {
    tx: mpsc::Sender<(Arc<Pod>, String)>,
}

impl ScheduledEvents {
    /// The queue and the task that writes it (it ends when every sender is gone).
    pub fn start(client: Client) -> (ScheduledEvents, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = ReceiverStream::new(rx)
            .map(move |(pod, node): (Arc<Pod>, String)| {
                let message = format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any()
                );
                events::write(&client, DEFAULT_SCHEDULER_NAME, &*pod, false, "Scheduled", message)
            })
            .buffer_unordered(IN_FLIGHT)
            .for_each(|()| async {});
        (ScheduledEvents { tx }, writer)
    }

    /// Queues the event for a pod bound to `node`; never waits.
    pub fn scheduled(&self, pod: Arc<Pod>, node: String) {
        if let Err(e) = self.tx.try_send((pod, node)) {
            tracing::debug!(error = %e, "Scheduled event dropped");
        }
    }
}
