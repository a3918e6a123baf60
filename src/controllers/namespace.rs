//! The Namespace controller: once a namespace is being deleted (phase Terminating, the
//! `kubernetes` finalizer in spec.finalizers), it deletes every namespaced object in it,
//! resource by resource as discovery lists them, waits until they are all gone (pods leave after
//! their grace period), then removes the finalizer through /finalize so the namespace goes.
//! Meanwhile the namespace's status conditions say what is left (`kubectl describe namespace`):
//! which resources remain and which finalizers hold them, in upstream's words.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::OnceCell;

use super::informer::Change;
use super::informers::{Informers, StoreReady};
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
pub async fn run(
    client: Client,
    informers: Informers,
    workers: usize,
) -> Result<(), NamespaceError> {
    let queue = WorkQueue::new();
    let q = queue.clone();
    let (namespaces, task) = informers.spawn(
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
    if namespaces.ready().await.is_err() {
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
    let mut left = Remaining::default();
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
            left.count(ar, obj);
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
    write_conditions(ctx, &ns, &left).await;
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

/// What is still in a terminating namespace: instances by "plural.group", and by finalizer.
#[derive(Debug, Default)]
struct Remaining {
    resources: BTreeMap<String, usize>,
    finalizers: BTreeMap<String, usize>,
}

impl Remaining {
    fn count(&mut self, ar: &ApiResource, obj: &DynamicObject) {
        *self.resources.entry(format!("{}.{}", ar.plural, ar.group)).or_default() += 1;
        for f in obj.metadata.finalizers.iter().flatten() {
            *self.finalizers.entry(f.clone()).or_default() += 1;
        }
    }

    /// The deletion conditions upstream's namespace controller reports (type, status, reason,
    /// message); discovery and deletion failures end the pass with an error instead.
    fn conditions(&self) -> Vec<(&'static str, &'static str, &'static str, String)> {
        let content = if self.resources.is_empty() {
            ("False", "ContentRemoved", "All content successfully removed".to_string())
        } else {
            let parts: Vec<String> = self
                .resources
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            (
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            )
        };
        let finalizers = if self.finalizers.is_empty() {
            (
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".to_string(),
            )
        } else {
            let parts: Vec<String> = self
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            (
                "True",
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                ),
            )
        };
        vec![
            (
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
            (
                "NamespaceDeletionGroupVersionParsingFailure",
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".into(),
            ),
            (
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            ),
            ("NamespaceContentRemaining", content.0, content.1, content.2),
            ("NamespaceFinalizersRemaining", finalizers.0, finalizers.1, finalizers.2),
        ]
    }
}

/// Writes the deletion conditions when they changed (best effort: the next pass retries).
async fn write_conditions(ctx: &Ctx, ns: &Namespace, left: &Remaining) {
    let old = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut changed = false;
    let mut conditions: Vec<NamespaceCondition> =
        old.iter().filter(|c| !DELETION_CONDITIONS.contains(&c.type_.as_str())).cloned().collect();
    for (kind, status, reason, message) in left.conditions() {
        let prev = old.iter().find(|c| c.type_ == kind);
        let same = prev.is_some_and(|c| {
            c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(&message)
        });
        changed |= !same;
        let transition = match prev {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        conditions.push(NamespaceCondition {
            type_: kind.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: transition,
        });
    }
    if !changed {
        return;
    }
    let mut updated = ns.clone();
    updated.metadata.managed_fields = None;
    updated.status.get_or_insert_with(Default::default).conditions = Some(conditions);
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if let Err(e) = api.replace_status(&ns.name_any(), &PostParams::default(), &updated).await {
        tracing::debug!(namespace = %ns.name_any(), error = %e, "cannot write namespace conditions");
    }
}

/// The condition types [`write_conditions`] owns.
const DELETION_CONDITIONS: [&str; 5] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_name_what_remains_as_upstream() {
        let mut left = Remaining::default();
        let ar = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let mut obj = DynamicObject::new("hold", &ar);
        obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        left.count(&ar, &obj);
        let c = left.conditions();
        assert_eq!(c[3].3, "Some resources are remaining: configmaps. has 1 resource instances");
        assert_eq!(
            c[4].3,
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        assert_eq!((c[4].1, c[4].2), ("True", "SomeFinalizersRemain"));
        let done = Remaining::default().conditions();
        assert!(done.iter().all(|c| c.1 == "False"), "{done:?}");
    }
}
