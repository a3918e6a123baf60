//! Upstream's RecheckDeletionTimestamp, shared by every controller that adopts orphans: an
//! informer's copy of the owner can lag a delete that has just orphaned its dependents, and
//! adopting them back on the strength of that copy would hand them to the garbage collector
//! with their owner. So before its first adoption in a sync, a controller reads the owner live,
//! once, and adopts only if it is still the same object (same uid) and not being deleted.

use kube::api::Api;
use kube::{Client, Resource, ResourceExt};

/// What a controller that adopts can own: a namespaced kind the API can read.
pub trait Owner:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
{
}

impl<T> Owner for T where
    T: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
{
}

/// The live check of one owner, made at most once.
pub struct OwnerRecheck<K> {
    api: Api<K>,
    name: String,
    uid: Option<String>,
    verdict: Option<bool>,
}

impl<K: Owner> OwnerRecheck<K> {
    /// A check of `owner` (as the cache has it), not yet made.
    pub fn new(client: Client, owner: &K) -> Self {
        let ns = owner.namespace().unwrap_or_default();
        OwnerRecheck {
            api: Api::namespaced(client, &ns),
            name: owner.name_any(),
            uid: owner.uid(),
            verdict: None,
        }
    }

    /// Whether the owner may adopt: read live on the first call, remembered after.
    pub async fn may_adopt(&mut self) -> Result<bool, kube::Error> {
        if let Some(v) = self.verdict {
            return Ok(v);
        }
        let live = self.api.get_opt(&self.name).await?;
        let v = live.is_some_and(|l| l.uid() == self.uid && l.meta().deletion_timestamp.is_none());
        if !v {
            tracing::debug!(owner = %self.name, "owner gone or being deleted; adopting nothing");
        }
        self.verdict = Some(v);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::cluster::LocalCluster;
    use crate::controllers::ComponentOptions;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
    use serde_json::json;

    #[tokio::test]
    async fn only_the_same_live_owner_not_being_deleted_may_adopt_and_it_is_read_once() {
        let opts = ComponentOptions { controllers: false, ..Default::default() };
        let cluster = LocalCluster::start_with(opts).await.expect("cluster");
        let client = cluster.client.clone();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let owner = |finalizers: Vec<&str>| -> ConfigMap {
            serde_json::from_value(json!({"metadata": {"name": "owner", "finalizers": finalizers}}))
                .expect("config map")
        };
        let first = api.create(&PostParams::default(), &owner(vec![])).await.expect("create");

        let mut live = OwnerRecheck::new(client.clone(), &first);
        assert!(live.may_adopt().await.expect("read"));
        // Replaced by another object of the same name.
        api.delete("owner", &DeleteParams::default()).await.expect("delete");
        let second = api.create(&PostParams::default(), &owner(vec!["skiff.test/keep"])).await;
        let second = second.expect("create again");
        // The verdict is made once per check: the same check does not read again.
        assert!(live.may_adopt().await.expect("remembered"));
        assert!(!OwnerRecheck::new(client.clone(), &first).may_adopt().await.expect("read"));
        assert!(OwnerRecheck::new(client.clone(), &second).may_adopt().await.expect("read"));
        // Being deleted (held by its finalizer), then gone.
        api.delete("owner", &DeleteParams::default()).await.expect("delete");
        assert!(!OwnerRecheck::new(client.clone(), &second).may_adopt().await.expect("read"));
        let release = json!({"metadata": {"finalizers": null}});
        api.patch("owner", &PatchParams::default(), &Patch::Merge(release)).await.expect("patch");
        assert!(!OwnerRecheck::new(client.clone(), &second).may_adopt().await.expect("read"));
    }
}
