//! Pod writes on behalf of an owning controller, as upstream's pod control and slow-start batch:
//! creations go out in batches of 1, 2, 4, ... and stop at the first batch with a failure (a
//! systematic failure, such as a quota, costs one request rather than hundreds); deletions go out
//! at once, each under the pod's uid precondition. Every write is recorded in the controller's
//! expectations and as an event on the owner, with upstream's reasons and messages.

use std::future::Future;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};

use super::events::record;
use super::expectations::Expectations;
use super::podutil::{api_message, namespace_terminating};

/// The pods API and the bookkeeping of one controller syncing one owner.
pub struct PodControl<'a, K> {
    pub client: &'a Client,
    /// The controller's name, as events report it.
    pub component: &'static str,
    pub owner: &'a K,
    pub api: &'a Api<Pod>,
    pub expectations: &'a Expectations,
    /// The owner's work-queue key, which the expectations are kept under.
    pub key: &'a str,
}

impl<K: Resource<DynamicType = ()>> PodControl<'_, K> {
    /// Creates `pods` in slow-start batches; returns how many were created. The first failed
    /// batch ends the creations with its error, except that a namespace being terminated ends
    /// them quietly (no event and no error, as upstream: retrying cannot help).
    pub async fn create(&self, pods: Vec<Pod>) -> Result<usize, kube::Error> {
        let mut pods = pods.into_iter();
        let (mut created, mut batch) = (0, 1);
        loop {
            let chunk: Vec<Pod> = pods.by_ref().take(batch).collect();
            if chunk.is_empty() {
                return Ok(created);
            }
            let pp = PostParams::default();
            let results = join_all(chunk.iter().map(|p| self.api.create(&pp, p))).await;
            let mut names = vec![];
            let mut failure = None;
            for r in results {
                match r {
                    Ok(p) => {
                        self.event(
                            false,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        );
                        names.push(p.name_any());
                    }
                    Err(e) => {
                        if !namespace_terminating(&e) {
                            self.event(
                                true,
                                "FailedCreate",
                                format!("Error creating: {}", api_message(&e)),
                            );
                        }
                        failure = Some(e);
                    }
                }
            }
            created += names.len();
            tracing::debug!(owner = %self.key, created = names.len(), "created pods");
            self.expectations.expect_creations(self.key, names);
            match failure {
                Some(e) if namespace_terminating(&e) => return Ok(created),
                Some(e) => return Err(e),
                None => batch *= 2,
            }
        }
    }

    /// Deletes `victims`, each only while it is still the same pod (uid precondition). Pods
    /// already gone or replaced are not errors. On another failure the expectations are
    /// dropped, so the next sync counts afresh.
    pub async fn delete<'p>(
        &self,
        victims: impl IntoIterator<Item = &'p Pod>,
    ) -> Result<(), kube::Error> {
        let victims: Vec<&Pod> = victims.into_iter().collect();
        if victims.is_empty() {
            return Ok(());
        }
        let uids = victims.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.expectations.expect_deletions(self.key, uids);
        let results = join_all(victims.iter().map(|p| self.delete_one(p))).await;
        for (r, p) in results.into_iter().zip(&victims) {
            match r {
                Ok(_) => {
                    self.event(false, "SuccessfulDelete", format!("Deleted pod: {}", p.name_any()))
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    self.event(
                        true,
                        "FailedDelete",
                        format!("Error deleting: {}", api_message(&e)),
                    );
                    self.expectations.clear(self.key);
                    return Err(e);
                }
            }
        }
        tracing::debug!(owner = %self.key, deleted = victims.len(), "deleted pods");
        Ok(())
    }

    fn delete_one(&self, p: &Pod) -> impl Future<Output = Result<(), kube::Error>> + '_ {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = p.name_any();
        async move { self.api.delete(&name, &dp).await.map(|_| ()) }
    }

    fn event(&self, warning: bool, reason: &str, message: String) {
        record(self.client, self.component, self.owner, warning, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{ConfigMap, Event};
    use kube::api::ListParams;
    use serde_json::json;

    use super::*;
    use crate::controllers::cluster::LocalCluster;
    use crate::controllers::ComponentOptions;

    fn pod(name: &str) -> Pod {
        let p = json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        serde_json::from_value(p).expect("pod")
    }

    async fn reasons(events: &Api<Event>, want: usize) -> Vec<String> {
        for _ in 0..200 {
            let list = events.list(&ListParams::default()).await.expect("events");
            let mut seen: Vec<String> =
                list.items.iter().map(|e| e.reason.clone().unwrap_or_default()).collect();
            if seen.len() >= want {
                seen.sort();
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {want} events");
    }

    #[tokio::test]
    async fn creations_stop_at_the_first_failed_batch_and_deletions_skip_replaced_pods() {
        let opts = ComponentOptions { controllers: false, ..Default::default() };
        let cluster = LocalCluster::start_with(opts).await.expect("cluster");
        let client = cluster.client.clone();
        let owners: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let owner = serde_json::from_value(json!({"metadata": {"name": "owner"}})).expect("owner");
        let owner = owners.create(&PostParams::default(), &owner).await.expect("owner");
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        let expectations = Expectations::default();
        let control = PodControl {
            client: &client,
            component: "test-controller",
            owner: &owner,
            api: &api,
            expectations: &expectations,
            key: "default/owner",
        };

        // Batches of 1, 2, 4, ...: the second batch holds an invalid pod, so the third is never
        // sent. The valid pod of the failed batch is created and expected.
        let mut pods: Vec<Pod> = (0..10).map(|i| pod(&format!("p{i}"))).collect();
        pods[1].metadata.name = Some("Not_A_Name".into());
        let err = control.create(pods).await.expect_err("an invalid pod fails its batch");
        assert!(matches!(&err, kube::Error::Api(e) if e.code == 422), "{err}");
        let names = |l: kube::core::ObjectList<Pod>| l.items.iter().map(|p| p.name_any()).collect();
        let created: Vec<String> = names(api.list(&ListParams::default()).await.expect("list"));
        assert_eq!(created, ["p0", "p2"]);
        let seen = |n: &str| created.iter().any(|c| c == n);
        assert!(!expectations.satisfied("default/owner", |_| false, |_| true));
        assert!(expectations.satisfied("default/owner", seen, |_| true));

        // p0 is deleted; p2 was replaced by another pod of the same name (its uid no longer
        // matches, 409) and a third is gone (404): neither is an error or an event.
        let p0 = api.get("p0").await.expect("p0");
        let old_p2 = api.get("p2").await.expect("p2");
        api.delete("p2", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .expect("delete p2");
        api.create(&PostParams::default(), &pod("p2")).await.expect("new p2");
        let mut gone = pod("gone");
        gone.metadata.uid = Some("no-such-uid".into());
        control.delete([&p0, &old_p2, &gone]).await.expect("deletions");
        let left: Vec<String> = names(api.list(&ListParams::default()).await.expect("list"));
        assert!(left.iter().all(|n| n != "p0") && left.contains(&"p2".to_string()), "{left:?}");

        // Two pods created, one failure, one deletion: each an event on the owner.
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let got = reasons(&events, 4).await;
        assert_eq!(
            got,
            ["FailedCreate", "SuccessfulCreate", "SuccessfulCreate", "SuccessfulDelete"]
        );
    }
}
