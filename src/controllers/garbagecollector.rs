//! The garbage collector: keeps a graph of owner references over the kinds that usually have
//! owners or dependents, and
//! - deletes an object once none of its owners exists any more (background propagation);
//! - drops references to owners that are gone while other owners remain;
//! - for an owner deleted with the `orphan` finalizer, removes its references from every
//!   dependent, then the finalizer;
//! - for an owner deleted with the `foregroundDeletion` finalizer, deletes its dependents
//!   (foreground as well) and removes the finalizer once none is left.
//!
//! An owner missing from the graph is looked up through the API before anything is deleted.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use super::informer::{self, Change};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};
use super::AbortOnDrop;

mod graph;
use graph::{Graph, Node, Seen};

pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// What can go wrong collecting garbage.
#[derive(Debug, thiserror::Error)]
pub enum GarbageCollectorError {
    #[error("cannot {action} {kind} {name}")]
    Api {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the garbage collector stopped")]
    InformerStopped,
}

/// The kinds watched: those that own or are owned in a stock cluster.
fn watched() -> Vec<ApiResource> {
    vec![
        ApiResource::erase::<core::Pod>(&()),
        ApiResource::erase::<apps::ReplicaSet>(&()),
        ApiResource::erase::<apps::Deployment>(&()),
        ApiResource::erase::<apps::StatefulSet>(&()),
        ApiResource::erase::<apps::DaemonSet>(&()),
        ApiResource::erase::<apps::ControllerRevision>(&()),
        ApiResource::erase::<batch::Job>(&()),
        ApiResource::erase::<batch::CronJob>(&()),
        ApiResource::erase::<core::ReplicationController>(&()),
        ApiResource::erase::<core::ConfigMap>(&()),
        ApiResource::erase::<core::Secret>(&()),
        ApiResource::erase::<core::Service>(&()),
        ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&()),
        ApiResource::erase::<core::PersistentVolumeClaim>(&()),
    ]
}

struct Ctx {
    client: Client,
    kinds: Vec<ApiResource>,
    graph: Arc<Mutex<Graph>>,
}

/// Runs the garbage collector until an informer stops.
pub async fn run(client: Client, workers: usize) -> Result<(), GarbageCollectorError> {
    let queue = WorkQueue::new();
    let graph = Arc::new(Mutex::new(Graph::default()));
    let kinds = watched();
    let mut tasks = vec![];
    let mut readies = vec![];
    for (i, ar) in kinds.iter().enumerate() {
        let (q, g) = (queue.clone(), graph.clone());
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), ar);
        let (ready, task) = informer::spawn_metadata(
            &format!("garbagecollector-{}-informer", ar.plural),
            api,
            watcher::Config::default(),
            move |c| {
                let dirty = match c {
                    Change::Applied(o) => {
                        let Some(uid) = o.metadata.uid.as_deref() else { return };
                        let seen = Seen {
                            kind: i as u16,
                            namespace: o.metadata.namespace.as_deref(),
                            name: o.metadata.name.as_deref().unwrap_or_default(),
                            owners: o.owner_references(),
                            deleting: o.metadata.deletion_timestamp.is_some(),
                            finalizers: o.finalizers(),
                        };
                        g.lock().upsert(uid, seen)
                    }
                    Change::Deleted(o) => match o.metadata.uid.as_deref() {
                        Some(uid) => g.lock().remove(uid),
                        None => vec![],
                    },
                    Change::Synced => vec![],
                };
                for uid in dirty {
                    q.add(uid.to_string());
                }
            },
        );
        tasks.push(task);
        readies.push(ready);
    }
    let _guard = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
    for mut ready in readies {
        if ready.wait_for(|r| *r).await.is_err() {
            return Err(GarbageCollectorError::InformerStopped);
        }
    }
    let ctx = Arc::new(Ctx { client, kinds, graph });
    let workers = run_workers("garbagecollector", queue, workers, move |uid| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &uid).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = futures::future::select_all(tasks) => {}
    }
    Err(GarbageCollectorError::InformerStopped)
}

/// Whether an owner exists: in the graph, else as the API says (same uid).
async fn owner_exists(
    ctx: &Ctx,
    ns: Option<&str>,
    owner: &OwnerReference,
) -> Result<bool, GarbageCollectorError> {
    if ctx.graph.lock().contains(&owner.uid) {
        return Ok(true);
    }
    let group = owner.api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let Some(ar) = ctx.kinds.iter().find(|k| k.kind == owner.kind && k.group == group) else {
        // A kind not watched: never treat it as gone.
        return Ok(true);
    };
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, ar),
        None => Api::all_with(ctx.client.clone(), ar),
    };
    match api.get_opt(&owner.name).await {
        Ok(Some(o)) => Ok(o.uid().as_deref() == Some(owner.uid.as_str())),
        Ok(None) => Ok(false),
        Err(source) => Err(GarbageCollectorError::Api {
            action: "look up",
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            source,
        }),
    }
}

fn api_for(ctx: &Ctx, node: &Node) -> Api<DynamicObject> {
    let ar = &ctx.kinds[usize::from(node.kind)];
    match node.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, ar),
        None => Api::all_with(ctx.client.clone(), ar),
    }
}

async fn sync(ctx: &Ctx, uid: &str) -> Result<Action, GarbageCollectorError> {
    let Some(node) = ctx.graph.lock().get(uid) else { return Ok(Action::Done) };
    let api = api_for(ctx, &node);
    let err = |action: &'static str, n: &Node| {
        let (kind, name) = (ctx.kinds[usize::from(n.kind)].kind.clone(), n.name.to_string());
        move |source| GarbageCollectorError::Api { action, kind, name, source }
    };
    if node.deleting && node.orphan {
        orphan_dependents(ctx, uid).await?;
        return remove_finalizer(&api, &node, ORPHAN_FINALIZER)
            .await
            .map_err(err("remove a finalizer of", &node));
    }
    if node.deleting && node.foreground {
        let dependents = ctx.graph.lock().dependents_of(uid);
        if dependents.is_empty() {
            return remove_finalizer(&api, &node, FOREGROUND_FINALIZER)
                .await
                .map_err(err("remove a finalizer of", &node));
        }
        for (d_uid, d) in dependents.iter().filter(|(_, d)| !d.deleting) {
            delete(&api_for(ctx, d), d_uid, d, DeleteParams::foreground())
                .await
                .map_err(err("delete", d))?;
        }
        return Ok(Action::Done);
    }
    if node.owners.is_empty() {
        return Ok(Action::Done);
    }
    let mut dangling = vec![];
    let mut solid = 0;
    for owner in &node.owners {
        if owner_exists(ctx, node.namespace.as_deref(), owner).await? {
            solid += 1;
        } else {
            dangling.push(owner.uid.clone());
        }
    }
    if dangling.is_empty() {
        return Ok(Action::Done);
    }
    // The graph may lag behind the object (an orphaning delete may just have removed the
    // owner reference): decide on the object as it is now, not on the cached copy.
    let live = match api.get_opt(&node.name).await.map_err(err("read", &node))? {
        Some(obj) if obj.uid().as_deref() == Some(uid) => obj,
        _ => return Ok(Action::Done),
    };
    let live_owners: HashSet<&str> =
        live.owner_references().iter().map(|o| o.uid.as_str()).collect();
    let cached_owners: HashSet<&str> = node.owners.iter().map(|o| o.uid.as_str()).collect();
    if live_owners != cached_owners {
        // The informer will deliver the newer object; look again then (or shortly).
        return Ok(Action::RequeueAfter(std::time::Duration::from_millis(200)));
    }
    if solid == 0 {
        if !node.deleting {
            tracing::debug!(kind = %ctx.kinds[usize::from(node.kind)].kind, name = %node.name, "deleting an object whose owners are gone");
            // Precondition on the version read above: if the object changed since (409), look
            // again rather than act on what may be stale.
            let mut dp = DeleteParams::background();
            dp.preconditions = Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: live.resource_version(),
            });
            match api.delete(&node.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::RequeueAfter(std::time::Duration::from_millis(200)));
                }
                Err(e) => return Err(err("delete", &node)(e)),
            }
        }
        return Ok(Action::Done);
    }
    let refs: Vec<serde_json::Value> =
        dangling.iter().map(|u| json!({"$patch": "delete", "uid": u})).collect();
    let patch = json!({"metadata": {"ownerReferences": refs}});
    match api.patch(&node.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
        Err(e) => Err(err("drop owner references of", &node)(e)),
    }
}

async fn delete(
    api: &Api<DynamicObject>,
    uid: &str,
    node: &Node,
    mut dp: DeleteParams,
) -> Result<(), kube::Error> {
    // The uid precondition makes sure a recreated namesake is left alone.
    dp.preconditions = Some(Preconditions { uid: Some(uid.to_string()), resource_version: None });
    match api.delete(&node.name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes references to `owner_uid` from each of its dependents.
async fn orphan_dependents(ctx: &Ctx, owner_uid: &str) -> Result<(), GarbageCollectorError> {
    let dependents = ctx.graph.lock().dependents_of(owner_uid);
    for (_, d) in dependents {
        let patch =
            json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}]}});
        match api_for(ctx, &d)
            .patch(&d.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(GarbageCollectorError::Api {
                    action: "orphan",
                    kind: ctx.kinds[usize::from(d.kind)].kind.clone(),
                    name: d.name.to_string(),
                    source,
                })
            }
        }
    }
    Ok(())
}

async fn remove_finalizer(
    api: &Api<DynamicObject>,
    node: &Node,
    finalizer: &str,
) -> Result<Action, kube::Error> {
    let Some(current) = api.get_opt(&node.name).await? else { return Ok(Action::Done) };
    let rest: Vec<&String> = current.finalizers().iter().filter(|f| *f != finalizer).collect();
    if rest.len() == current.finalizers().len() {
        return Ok(Action::Done);
    }
    let patch =
        json!({"metadata": {"finalizers": rest, "resourceVersion": current.resource_version()}});
    match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(Action::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
        Err(e) => Err(e),
    }
}
