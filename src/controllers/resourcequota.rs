//! The ResourceQuota controller: publishes each quota's status.hard (its spec.hard) and
//! status.used (what the namespace's objects charge, counted as quota admission counts them:
//! `registry::admission::usage`). A quota is recomputed when it changes, when an object of a
//! commonly quota'd kind changes in its namespace, and every five minutes (other `count/*`).
//!
//! Admission charges a quota before the object it admitted is stored, so a recount can briefly
//! miss an object being created. The controller therefore lowers a usage only once the quota
//! has stayed unchanged for [`SETTLE`] with the lower count seen on both sides of that wait;
//! a recount sooner (its own status write or any object change queues one) waits out the rest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{self as core, ResourceQuota};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::informer::{spawn_named, Change};
use super::informers::{Informers, StoreReady};
use super::podutil::{key_of, split_key};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};
use crate::registry::admission::quantity::{self, Quantity, ResourceList};
use crate::registry::admission::usage;
use crate::registry::catalog::catalog;

/// How long a lower count must hold, with the quota unchanged, before it is published.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How often every quota is recounted (upstream's --resource-quota-sync-period).
pub const RESYNC: Duration = Duration::from_secs(300);

/// What can go wrong keeping quotas current.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("cannot {action} for resource quota {key}")]
    Api {
        action: &'static str,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the resource quota controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    /// Quotas holding back a lower count: the resourceVersion they have had since, and when
    /// it was first seen.
    settling: Mutex<HashMap<String, (String, Instant)>>,
}

/// The kinds whose changes trigger a recount of their namespace's quotas.
fn watched() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<core::Pod>(&()),
        ApiResource::erase::<core::Service>(&()),
        ApiResource::erase::<core::ConfigMap>(&()),
        ApiResource::erase::<core::Secret>(&()),
        ApiResource::erase::<core::PersistentVolumeClaim>(&()),
        ApiResource::erase::<core::ReplicationController>(&()),
    ]
}

/// Runs the controller with `workers` concurrent syncs until an informer stops.
pub async fn run(client: Client, informers: Informers, workers: usize) -> Result<(), QuotaError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (quotas, quota_task) = informers.spawn(
        "resourcequota-informer",
        Api::<ResourceQuota>::all(client.clone()),
        watcher::Config::default(),
        move |c| match c {
            Change::Applied(rq) | Change::Deleted(rq) => q.add(key_of(rq)),
            Change::Synced => {}
        },
    );
    let mut tasks = vec![quota_task];
    for ar in watched() {
        let (q, store) = (queue.clone(), quotas.clone());
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let name = format!("resourcequota-{}-watch", ar.plural);
        tasks.push(spawn_named(&name, async move {
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let ns = match &ev {
                    Ok(Event::Apply(o)) | Ok(Event::Delete(o)) | Ok(Event::InitApply(o)) => {
                        o.namespace()
                    }
                    _ => None,
                };
                if let Some(ns) = ns {
                    for rq in store.state().iter().filter(|rq| rq.namespace() == Some(ns.clone())) {
                        q.add(key_of(rq.as_ref()));
                    }
                }
            }
        }));
    }
    let (q, store) = (queue.clone(), quotas.clone());
    tasks.push(spawn_named("resourcequota-resync", async move {
        loop {
            tokio::time::sleep(RESYNC).await;
            for rq in store.state() {
                q.add(key_of(rq.as_ref()));
            }
        }
    }));
    let _guard = super::AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    if quotas.ready().await.is_err() {
        return Err(QuotaError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, settling: Mutex::new(HashMap::new()) });
    let workers = run_workers("resourcequota", queue, workers, move |key| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    });
    let informers = futures::future::select_all(tasks);
    tokio::select! {
        _ = workers => {}
        _ = informers => {}
    }
    Err(QuotaError::InformerStopped)
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Action, QuotaError> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let err = |action: &'static str| {
        let key = key.to_string();
        move |source| QuotaError::Api { action, key, source }
    };
    let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), ns);
    let Some(rq) = api.get_opt(name).await.map_err(err("get"))? else {
        ctx.settling.lock().remove(key);
        return Ok(Action::Done);
    };
    let quota = serde_json::to_value(&rq).unwrap_or_default();
    let hard = quantity::list_from(quota.pointer("/spec/hard"));
    let counted = count(ctx, ns, &quota, &hard).await.map_err(err("list objects"))?;
    let current = quantity::list_from(quota.pointer("/status/used"));
    let rv = rq.resource_version().unwrap_or_default();
    // Lower counts wait until the quota has settled (see the module comment).
    let lowers = counted.iter().any(|(k, q)| current.get(k).is_some_and(|c| q < c));
    let since = ctx.settling.lock().get(key).filter(|(r, _)| *r == rv).map(|(_, t)| *t);
    let confirmed = lowers && since.is_some_and(|t| t.elapsed() >= SETTLE);
    let mut used = counted.clone();
    if lowers && !confirmed {
        for (k, q) in used.iter_mut() {
            if let Some(c) = current.get(k).filter(|c| *c > q) {
                *q = *c;
            }
        }
    }
    let status_hard = quantity::list_from(quota.pointer("/status/hard"));
    let unchanged = status_hard == hard
        && status_hard.keys().eq(hard.keys())
        && current == used
        && current.keys().eq(used.keys());
    let mut published_rv = rv.clone();
    if !unchanged {
        let mut new = rq.clone();
        let mut status = serde_json::to_value(new.status.take()).unwrap_or(json!({}));
        if !status.is_object() {
            status = json!({});
        }
        status["hard"] = quantity::list_to_json(&hard);
        status["used"] = quantity::list_to_json(&used);
        new.status = serde_json::from_value(status).ok();
        let written = api
            .replace_status(name, &PostParams::default(), &new)
            .await
            .map_err(err("update status"))?;
        tracing::debug!(quota = %key, used = %quantity::pretty(&used), "published quota usage");
        published_rv = written.resource_version().unwrap_or_default();
    }
    if lowers && !confirmed {
        // The wait runs from the first sight of the lower count; this controller's own write
        // (which never lowers) does not restart it.
        let since = since.unwrap_or_else(Instant::now);
        ctx.settling.lock().insert(key.to_string(), (published_rv, since));
        let rest = SETTLE.saturating_sub(since.elapsed()).max(Duration::from_millis(10));
        return Ok(Action::RequeueAfter(rest));
    }
    ctx.settling.lock().remove(key);
    Ok(Action::Done)
}

/// What the namespace's objects charge for each resource the quota tracks ("0" if nothing).
async fn count(
    ctx: &Ctx,
    ns: &str,
    quota: &Value,
    hard: &ResourceList,
) -> Result<ResourceList, kube::Error> {
    let mut used: ResourceList = hard.keys().map(|k| (k.clone(), Quantity::ZERO)).collect();
    let mut kinds: BTreeMap<(String, String), ApiResource> = BTreeMap::new();
    for k in hard.keys() {
        if let Some(ar) = resource_for(k) {
            kinds.entry((ar.group.clone(), ar.plural.clone())).or_insert(ar);
        }
    }
    let now = Utc::now();
    for ((group, plural), ar) in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        let list = api.list(&ListParams::default()).await?;
        for obj in list.items {
            let obj = serde_json::to_value(&obj).unwrap_or_default();
            if !usage::quota_matches_scopes(quota, &group, &plural, &obj) {
                continue;
            }
            for (k, q) in usage::usage(&group, &plural, &obj, now) {
                if let Some(u) = used.get_mut(&k) {
                    *u = u.add(&q);
                }
            }
        }
    }
    Ok(used)
}

/// The kind whose objects charge a quota resource.
fn resource_for(name: &str) -> Option<ApiResource> {
    let (group, plural) = match name.strip_prefix("count/") {
        Some(rest) => match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        },
        None => {
            let core = ["pods", "services", "persistentvolumeclaims", "configmaps", "secrets"]
                .into_iter()
                .chain(["replicationcontrollers", "resourcequotas"])
                .find(|p| usage::charged_by("", p, name))?;
            (String::new(), core.to_string())
        }
    };
    let info = catalog()
        .resources
        .iter()
        .find(|r| r.group == group && r.plural == plural && r.namespaced)?;
    Some(ApiResource {
        group: info.group.to_string(),
        version: info.version.to_string(),
        api_version: info.api_version(),
        kind: info.kind.to_string(),
        plural: info.plural.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::cluster::LocalCluster;
    use crate::controllers::ComponentOptions;

    async fn used_pods(api: &Api<ResourceQuota>) -> String {
        let rq = api.get("q").await.expect("quota");
        let used = rq.status.and_then(|s| s.used).unwrap_or_default();
        used.get("pods").map(|q| q.0.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_lower_count_is_published_only_after_it_held_for_the_settle_time() {
        let opts = ComponentOptions { controllers: false, ..Default::default() };
        let cluster = LocalCluster::start_with(opts).await.expect("cluster");
        let client = cluster.client.clone();
        let api: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
        let rq = serde_json::from_value(json!({"metadata": {"name": "q"},
            "spec": {"hard": {"pods": "5"}}}))
        .expect("quota");
        let mut rq = api.create(&PostParams::default(), &rq).await.expect("create");
        // Five pods charged by admission whose objects are not stored yet: none exist.
        rq.status = serde_json::from_value(json!({"hard": {"pods": "5"}, "used": {"pods": "5"}}))
            .expect("status");
        api.replace_status("q", &PostParams::default(), &rq).await.expect("charge");
        let ctx = Ctx { client: client.clone(), settling: Mutex::new(HashMap::new()) };

        let started = Instant::now();
        assert!(matches!(sync(&ctx, "default/q").await, Ok(Action::RequeueAfter(_))));
        // A recount at once (any object change queues one) does not confirm the lower count.
        let again = sync(&ctx, "default/q").await.expect("sync");
        assert!(matches!(again, Action::RequeueAfter(d) if d <= SETTLE), "{again:?}");
        assert_eq!(used_pods(&api).await, "5", "lowered before the settle time");
        tokio::time::sleep(SETTLE.saturating_sub(started.elapsed())).await;
        assert!(matches!(sync(&ctx, "default/q").await, Ok(Action::Done)));
        assert_eq!(used_pods(&api).await, "0");
    }

    #[test]
    fn quota_names_map_to_kinds() {
        let plural = |n: &str| resource_for(n).map(|a| (a.group, a.plural));
        assert_eq!(plural("requests.cpu"), Some(("".into(), "pods".into())));
        assert_eq!(plural("services.nodeports"), Some(("".into(), "services".into())));
        assert_eq!(plural("count/deployments.apps"), Some(("apps".into(), "deployments".into())));
        assert_eq!(plural("count/configmaps"), Some(("".into(), "configmaps".into())));
        assert_eq!(plural("requests.storage"), Some(("".into(), "persistentvolumeclaims".into())));
        assert_eq!(plural("count/nonsense.example.com"), None);
    }
}
