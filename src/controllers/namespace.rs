//! The Namespace controller: once a namespace is being deleted (phase Terminating, the
//! `kubernetes` finalizer in spec.finalizers), it deletes every namespaced object in it,
//! resource by resource as discovery lists them, waits until they are all gone (pods leave after
//! their grace period), then removes the finalizer through /finalize so the namespace goes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::OnceCell;

use super::informer::{self, Change};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};
use super::AbortOnDrop;

/// The finalizer this controller owns.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// How soon a namespace whose contents are still going is looked at again.
const CONTENT_REMAINING_RETRY: Duration = Duration::from_millis(500);

/// What can go wrong emptying a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot discover the API's resources")]
    Discovery(#[source] kube::Error),
    #[error("cannot {action} {resource} in namespace {namespace}")]
    Api {
        action: &'static str,
        resource: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the namespace controller stopped")]
    InformerStopped,
}

struct Ctx {
    client: Client,
    namespaces: Store<Namespace>,
    /// Namespaced resources that can be listed and deleted (discovered once).
    resources: OnceCell<Vec<ApiResource>>,
}

/// Runs the controller until its informer stops.
pub async fn run(client: Client, workers: usize) -> Result<(), NamespaceError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (namespaces, task) = informer::spawn(
        "namespace-informer",
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        move |c| {
            if let Change::Applied(ns) = c {
                if ns.metadata.deletion_timestamp.is_some() {
                    q.add(ns.name_any());
                }
            }
        },
    );
    let _guard = AbortOnDrop(vec![task.abort_handle()]);
    if namespaces.wait_until_ready().await.is_err() {
        return Err(NamespaceError::InformerStopped);
    }
    let ctx = Arc::new(Ctx { client, namespaces, resources: OnceCell::new() });
    let workers = run_workers("namespace", queue, workers, move |name| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &name).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = task => {}
    }
    Err(NamespaceError::InformerStopped)
}

async fn discover(client: &Client) -> Result<Vec<ApiResource>, NamespaceError> {
    let discovery =
        Discovery::new(client.clone()).run().await.map_err(NamespaceError::Discovery)?;
    let mut out = vec![];
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::DELETE)
            {
                out.push(ar);
            }
        }
    }
    Ok(out)
}

async fn sync(ctx: &Ctx, name: &str) -> Result<Action, NamespaceError> {
    let Some(ns) = ctx.namespaces.get(&ObjectRef::new(name)) else { return Ok(Action::Done) };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::Done);
    }
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == KUBERNETES_FINALIZER) {
        return Ok(Action::Done);
    }
    let resources = ctx.resources.get_or_try_init(|| discover(&ctx.client)).await?;
    let mut remaining = 0usize;
    for ar in resources {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), name, ar);
        let err = |action: &'static str| {
            let (resource, namespace) = (ar.plural.clone(), name.to_string());
            move |source| NamespaceError::Api { action, resource, namespace, source }
        };
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
            Err(e) => return Err(err("list")(e)),
        };
        for obj in &list.items {
            remaining += 1;
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api.delete(&obj.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(err("delete")(e)),
            }
        }
    }
    if remaining > 0 {
        tracing::debug!(namespace = name, remaining, "namespace content remaining");
        return Ok(Action::RequeueAfter(CONTENT_REMAINING_RETRY));
    }
    let mut finalized = (*ns).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers =
            Some(finalizers.into_iter().filter(|f| f != KUBERNETES_FINALIZER).collect());
    }
    finalized.metadata.managed_fields = None;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.replace_subresource("finalize", name, &PostParams::default(), &finalized).await {
        Ok(_) => {
            tracing::info!(namespace = name, "namespace emptied and finalized");
            Ok(Action::Done)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::Done),
        Err(source) => Err(NamespaceError::Api {
            action: "finalize",
            resource: "namespaces".into(),
            namespace: name.into(),
            source,
        }),
    }
}
