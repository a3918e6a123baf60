//! Where the HPA controller gets pod usage: [`MetricsSource`] is what upstream reads from the
//! resource metrics API (metrics.k8s.io, served by metrics-server), and [`SimulatedMetrics`]
//! answers it for pods on simulated nodes from the usage they declare in annotations
//! (`agent::simulated::pods::CPU_USAGE_ANNOTATION`, `MEMORY_USAGE_ANNOTATION`). Real figures
//! come with the node agent, as another implementation.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::agent::simulated::pods::declared_usage;
use crate::registry::admission::quantity::Quantity;

/// One pod's usage of a resource: milli-units (millicores, or milli-bytes as upstream's
/// MilliValue), when the sample was taken and over what window.
#[derive(Clone, Debug, PartialEq)]
pub struct PodMetric {
    pub milli: i64,
    pub timestamp: DateTime<Utc>,
    pub window: Duration,
}

/// Usage by pod name.
pub type PodMetrics = HashMap<String, PodMetric>;

/// Why no usage could be read (the words are upstream's metrics client's).
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("no metrics returned from resource metrics API")]
    NoMetrics,
    #[error("unable to fetch metrics from resource metrics API: {0}")]
    Fetch(String),
}

/// Pod usage of a resource ("cpu", "memory") by namespace and label selector.
pub trait MetricsSource: Send + Sync {
    /// The usage of `resource` by the pods in `namespace` that match `selector` (label selector
    /// syntax, as a Scale's status.selector), for the pods that have a sample.
    fn pod_usage<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
        resource: &'a str,
    ) -> BoxFuture<'a, Result<PodMetrics, MetricsError>>;
}

/// Usage declared by pods on simulated nodes: every running pod with the annotation for the
/// resource has a sample taken now (a zero window: the figure holds from the moment it is read).
pub struct SimulatedMetrics {
    client: Client,
}

impl SimulatedMetrics {
    pub fn new(client: Client) -> SimulatedMetrics {
        SimulatedMetrics { client }
    }
}

/// The samples `pods` declare for `resource` at `now`.
pub fn declared_metrics(pods: &[Pod], resource: &str, now: DateTime<Utc>) -> PodMetrics {
    let mut out = PodMetrics::new();
    for pod in pods {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let Some(name) = pod.metadata.name.clone().filter(|_| running) else { continue };
        let Some(q) = declared_usage(pod, resource).and_then(|v| Quantity::parse(v.trim())) else {
            continue;
        };
        let milli = i64::try_from(q.milli()).unwrap_or(i64::MAX).max(0);
        out.insert(name, PodMetric { milli, timestamp: now, window: Duration::ZERO });
    }
    out
}

impl MetricsSource for SimulatedMetrics {
    fn pod_usage<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
        resource: &'a str,
    ) -> BoxFuture<'a, Result<PodMetrics, MetricsError>> {
        async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let pods = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| MetricsError::Fetch(super::api_message(&e)))?;
            let metrics = declared_metrics(&pods.items, resource, Utc::now());
            if metrics.is_empty() {
                return Err(MetricsError::NoMetrics);
            }
            Ok(metrics)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, cpu: Option<&str>) -> Pod {
        let mut p = json!({"metadata": {"name": name}, "status": {"phase": phase}});
        if let Some(c) = cpu {
            p["metadata"]["annotations"] = json!({"skiff.dev/simulate-cpu-usage": c});
        }
        serde_json::from_value(p).expect("pod")
    }

    #[test]
    fn running_pods_with_usage_have_samples() {
        let pods = vec![
            pod("a", "Running", Some("250m")),
            pod("b", "Running", None),
            pod("c", "Pending", Some("1")),
            pod("d", "Running", Some("1.5")),
            pod("e", "Running", Some("bogus")),
        ];
        let m = declared_metrics(&pods, "cpu", Utc::now());
        assert_eq!(m.len(), 2);
        assert_eq!(m["a"].milli, 250);
        assert_eq!(m["d"].milli, 1500);
        assert!(declared_metrics(&pods, "memory", Utc::now()).is_empty());
    }
}
