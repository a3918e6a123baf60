//! The controllers of the controller manager, each an ordinary API client (kube-rs) that
//! watches through informers and writes through the API: ReplicaSet, Deployment, StatefulSet and
//! DaemonSet (their ControllerRevision history in [`history`]), Namespace, ServiceAccount, the
//! garbage collector, Job and CronJob, PodDisruptionBudgets (disruption), Endpoints and
//! EndpointSlice, node lifecycle (with taint-based eviction), the pod garbage collector and
//! TTL-after-finished, and the HorizontalPodAutoscaler ([`horizontal`]). [`run_all`] starts
//! them and the scheduler as named tasks; [`start_cluster_components`] is what the server calls
//! after bootstrap.

pub mod client;
pub mod cluster;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod expectations;
pub mod garbagecollector;
pub mod history;
pub mod horizontal;
pub mod informer;
pub mod informers;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod ownerindex;
pub mod podcontrol;
pub mod podgc;
pub mod podutil;
pub mod queue;
pub mod recheck;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod rollout;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttlafterfinished;
pub mod worker;

pub use client::in_process_client;
pub use cluster::{start_cluster_components, ComponentOptions};

use futures::future::BoxFuture;
use futures::FutureExt;

use informer::spawn_named;

/// Which controllers run and how many workers each has.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Concurrent syncs per controller (upstream's --concurrent-*-syncs, default 5).
    pub workers: usize,
    /// Whether the scheduler runs alongside the controllers.
    pub scheduler: bool,
    /// The base of the Job controller's pod failure back-off (upstream: 10 s).
    pub job_pod_failure_backoff: std::time::Duration,
    /// Node health: monitor period and grace periods.
    pub node_lifecycle: nodelifecycle::NodeLifecycleOptions,
    /// The pod garbage collector's threshold, period and quarantine.
    pub pod_gc: podgc::PodGcOptions,
    /// The HPA controller's sync period, tolerance and windows.
    pub hpa: horizontal::HpaOptions,
    /// The shared informers the controllers and the scheduler subscribe to.
    pub informers: informers::Informers,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            workers: 5,
            scheduler: true,
            job_pod_failure_backoff: job::DEFAULT_POD_FAILURE_BACKOFF,
            node_lifecycle: Default::default(),
            pod_gc: Default::default(),
            hpa: Default::default(),
            informers: Default::default(),
        }
    }
}

/// What ended the controller manager.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("controller {name} failed")]
    Failed {
        name: &'static str,
        #[source]
        source: anyhow::Error,
    },
    #[error("controller {name} stopped")]
    Stopped { name: &'static str },
}

/// Starts every controller (and the scheduler, if asked) as named tasks; returns when one of
/// them ends, with the reason. They are meant to run for the life of the process.
pub async fn run_all(client: kube::Client, opts: ControllerOptions) -> anyhow::Result<()> {
    let w = opts.workers;
    let inf = opts.informers.clone();
    let mut tasks: Vec<(&'static str, BoxFuture<'static, anyhow::Result<()>>)> = vec![
        (
            "replicaset",
            replicaset::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "replicationcontroller",
            replicationcontroller::run(client.clone(), inf.clone(), w)
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
        (
            "deployment",
            deployment::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "namespace",
            namespace::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "serviceaccount",
            serviceaccount::run(client.clone(), inf.clone(), w)
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
        (
            "garbagecollector",
            garbagecollector::run(client.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "statefulset",
            statefulset::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "daemonset",
            daemonset::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "job",
            job::run(
                client.clone(),
                inf.clone(),
                job::JobOptions { workers: w, pod_failure_backoff: opts.job_pod_failure_backoff },
            )
            .map(|r| r.map_err(Into::into))
            .boxed(),
        ),
        (
            "cronjob",
            cronjob::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "disruption",
            disruption::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "endpoints",
            endpoints::run(client.clone(), inf.clone(), w).map(|r| r.map_err(Into::into)).boxed(),
        ),
        (
            "endpointslice",
            endpointslice::run(client.clone(), inf.clone(), w)
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
        (
            "nodelifecycle",
            nodelifecycle::run(client.clone(), inf.clone(), opts.node_lifecycle.clone())
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
        (
            "podgc",
            podgc::run(client.clone(), inf.clone(), opts.pod_gc.clone())
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
        (
            "ttlafterfinished",
            ttlafterfinished::run(client.clone(), inf.clone(), w)
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
        (
            "resourcequota",
            resourcequota::run(client.clone(), inf.clone(), w)
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
        (
            "horizontal",
            horizontal::run(client.clone(), inf.clone(), w, opts.hpa.clone())
                .map(|r| r.map_err(Into::into))
                .boxed(),
        ),
    ];
    if opts.scheduler {
        let c = client.clone();
        let sched =
            crate::scheduler::SchedulerOptions { informers: inf.clone(), ..Default::default() };
        tasks.push((
            "scheduler",
            async move { crate::scheduler::run(c, sched).await.map_err(Into::into) }.boxed(),
        ));
    }
    let handles: Vec<_> = tasks
        .into_iter()
        .map(|(name, fut)| {
            tracing::info!(controller = name, "starting");
            (name, spawn_named(name, fut))
        })
        .collect();
    let _guard = AbortOnDrop(handles.iter().map(|(_, h)| h.abort_handle()).collect());
    let waits = handles.into_iter().map(|(name, h)| h.map(move |r| (name, r)));
    let ((name, result), _, _) = futures::future::select_all(waits).await;
    match result {
        Ok(Ok(())) => Err(ControllerError::Stopped { name }.into()),
        Ok(Err(source)) => Err(ControllerError::Failed { name, source }.into()),
        Err(join) => Err(ControllerError::Failed { name, source: join.into() }.into()),
    }
}

/// Aborts tasks when dropped, so no component outlives the group it belongs to.
pub struct AbortOnDrop(pub Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
