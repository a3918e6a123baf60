//! The ServiceAccount controller: every active namespace has a `default` service account; it is
//! created when missing (also after someone deletes it).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::informer::Change;
use super::informers::{Informers, StoreReady};
use super::queue::WorkQueue;
use super::worker::{run_workers, Action};
use super::AbortOnDrop;

/// The service account every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// What can go wrong ensuring a service account.
#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("cannot create the default service account in namespace {namespace}")]
    Create {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("an informer of the serviceaccount controller stopped")]
    InformerStopped,
}

/// Runs the controller until an informer stops.
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), ServiceAccountError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (namespaces, ns_task) = informers.spawn(
        "serviceaccount-namespace-informer",
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        move |c| {
            if let Change::Applied(ns) = c {
                q.add(ns.name_any());
            }
        },
    );
    let q = queue.clone();
    let (accounts, sa_task) = informers.spawn(
        "serviceaccount-informer",
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
        move |c| {
            if let Change::Deleted(sa) = c {
                q.add(sa.namespace().unwrap_or_default());
            }
        },
    );
    let _guard = AbortOnDrop(vec![ns_task.abort_handle(), sa_task.abort_handle()]);
    let ready = futures::future::join(namespaces.ready(), accounts.ready()).await;
    if ready.0.is_err() || ready.1.is_err() {
        return Err(ServiceAccountError::InformerStopped);
    }
    let ctx = Arc::new((client, namespaces, accounts));
    let workers = run_workers("serviceaccount", queue, workers, move |ns| {
        let ctx = ctx.clone();
        async move { sync(&ctx.0, &ctx.1, &ctx.2, &ns).await }
    });
    tokio::select! {
        _ = workers => {}
        _ = ns_task => {}
        _ = sa_task => {}
    }
    Err(ServiceAccountError::InformerStopped)
}

async fn sync(
    client: &Client,
    namespaces: &Store<Namespace>,
    accounts: &Store<ServiceAccount>,
    ns: &str,
) -> Result<Action, ServiceAccountError> {
    let Some(namespace) = namespaces.get(&ObjectRef::new(ns)) else { return Ok(Action::Done) };
    let active = namespace.metadata.deletion_timestamp.is_none()
        && namespace.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Active")
            == "Active";
    if !active || accounts.get(&ObjectRef::new(DEFAULT_SERVICE_ACCOUNT).within(ns)).is_some() {
        return Ok(Action::Done);
    }
    let sa = ServiceAccount {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {
            tracing::debug!(namespace = ns, "created the default service account");
            Ok(Action::Done)
        }
        // Exists already, or the namespace is terminating / gone.
        Err(kube::Error::Api(e)) if matches!(e.code, 409 | 403 | 404) => Ok(Action::Done),
        Err(source) => Err(ServiceAccountError::Create { namespace: ns.into(), source }),
    }
}
