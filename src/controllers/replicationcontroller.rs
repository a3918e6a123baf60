//! The ReplicationController controller: the ReplicaSet controller run over
//! ReplicationControllers, each presented as the ReplicaSet it amounts to (its equality
//! selector as matchLabels, defaulting to the template's labels), as upstream runs it.

use std::borrow::Cow;

use k8s_openapi::api::apps::v1::{
    ReplicaSet, ReplicaSetCondition, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;

use super::informers::Informers;
use super::replicaset::{run_for, ReplicaSetError, Replicated};

impl Replicated for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";

    fn view(&self) -> Cow<'_, ReplicaSet> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.as_ref().map(|s| ReplicaSetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
            conditions: s.conditions.as_ref().map(|cs| {
                cs.iter()
                    .map(|c| ReplicaSetCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        last_transition_time: c.last_transition_time.clone(),
                    })
                    .collect()
            }),
            ..Default::default()
        });
        Cow::Owned(ReplicaSet {
            metadata: self.metadata.clone(),
            spec: Some(ReplicaSetSpec {
                replicas: spec.replicas,
                min_ready_seconds: spec.min_ready_seconds,
                selector: self.selector().map(Cow::into_owned).unwrap_or_default(),
                template: spec.template,
            }),
            status,
        })
    }

    fn selector(&self) -> Option<Cow<'_, LabelSelector>> {
        let spec = self.spec.as_ref()?;
        let labels = spec
            .selector
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone())?;
        Some(Cow::Owned(LabelSelector { match_labels: Some(labels), match_expressions: None }))
    }
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), ReplicaSetError> {
    run_for::<ReplicationController>(client, informers, workers).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_controller_reads_as_a_replica_set() {
        let rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"replicas": 2, "readyReplicas": 1},
        }))
        .expect("valid");
        let rs = rc.view();
        let spec = rs.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let labels = spec.selector.match_labels.as_ref().expect("selector from the template");
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(rs.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(rs.status.as_ref().map(|s| (s.replicas, s.ready_replicas)), Some((2, Some(1))));
    }
}
