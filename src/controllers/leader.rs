//! Leader election over a coordination.k8s.io Lease, as client-go's leaderelection package does
//! it, so that several `skiff server` processes sharing one etcd run the controllers and the
//! scheduler in one process at a time.
//!
//! A candidate reads the Lease and takes it when it is free or when its record has not changed
//! for a whole lease duration as measured by the candidate's own clock (never by comparing
//! timestamps written by another host). Every write is compare-and-swap on the Lease's
//! resourceVersion. The leader renews every retry period; when it cannot renew within the renew
//! deadline, or sees another holder, it stops leading. [`run_while_leader`] runs a group of tasks
//! only while this process leads, and campaigns again when it loses the Lease: the API keeps
//! being served throughout.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

use super::informer::spawn_named;
use super::AbortOnDrop;

/// The Lease the controllers and the scheduler of skiff servers share.
pub const DEFAULT_LEASE_NAME: &str = "skiff-controllers";
/// Where leader-election Leases live (as upstream's components keep theirs).
pub const LEASE_NAMESPACE: &str = "kube-system";
/// How long a Lease stays valid after its last change (upstream's default: 15 s).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps retrying a failed renewal before it stops leading (upstream: 10 s).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// The pause between attempts to acquire or renew (upstream: 2 s).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Acquire attempts wait the retry period plus up to this fraction more (upstream: 1.2).
const JITTER_FACTOR: f64 = 1.2;
/// The component named in the events this module records.
const COMPONENT: &str = DEFAULT_LEASE_NAME;

/// Which Lease to campaign for, as whom, and the timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's holderIdentity; unique per process (see [`default_identity`]).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// The skiff controllers' Lease in kube-system with upstream's timings, as `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        LeaderElectionConfig {
            namespace: LEASE_NAMESPACE.into(),
            name: DEFAULT_LEASE_NAME.into(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }
}

/// This host's name and a random suffix (upstream: hostname + "_" + a UUID), so that two
/// processes on one host are distinct candidates.
pub fn default_identity() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Why an attempt to acquire or renew the Lease failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot read lease {namespace}/{name}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write lease {namespace}/{name}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the lease request timed out")]
    Timeout,
    #[error("the tasks run while leading stopped")]
    Stopped,
}

/// What to do about the Lease as last read.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// No Lease exists: create this one.
    Create(Lease),
    /// Free, expired or ours: write this (it carries the resourceVersion read).
    Update(Lease),
    /// Another candidate holds a valid Lease.
    Wait { holder: String },
}

/// The record last seen and when (by this process's clock).
#[derive(Clone, Debug)]
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

/// The state of one candidate: what it last saw of the Lease. [`Elector::plan`] is the pure
/// decision; [`Elector::try_acquire_or_renew`] carries it out against the API.
#[derive(Debug)]
pub struct Elector {
    config: LeaderElectionConfig,
    observed: Option<Observed>,
    /// The Lease as last written by this candidate (for events).
    last_written: Option<Lease>,
}

impl Elector {
    pub fn new(config: LeaderElectionConfig) -> Self {
        Elector { config, observed: None, last_written: None }
    }

    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    /// Whether the record last seen names this candidate as the holder.
    pub fn is_leader(&self) -> bool {
        self.observed_holder() == Some(self.config.identity.as_str())
    }

    /// The holder in the record last seen (None: none seen, or no holder).
    pub fn observed_holder(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .and_then(|o| o.spec.holder_identity.as_deref())
            .filter(|h| !h.is_empty())
    }

    /// Decides from `current` (the Lease as just read; None when there is none) at `now` by
    /// this process's clock and `wall` by the wall clock (written as acquire and renew times).
    pub fn plan(&mut self, current: Option<&Lease>, now: Instant, wall: Timestamp) -> Plan {
        let me = self.config.identity.clone();
        let stamp = MicroTime(wall);
        let Some(lease) = current else {
            let spec = LeaseSpec {
                holder_identity: Some(me),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(stamp.clone()),
                renew_time: Some(stamp),
                lease_transitions: Some(0),
                ..Default::default()
            };
            return Plan::Create(Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec),
            });
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if self.observed.as_ref().map(|o| &o.spec) != Some(&spec) {
            self.observed = Some(Observed { spec: spec.clone(), at: now });
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if !holder.is_empty() && holder != me && self.observed_valid(now) {
            return Plan::Wait { holder };
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let (acquire_time, lease_transitions) = if holder == me {
            (spec.acquire_time.clone().unwrap_or_else(|| stamp.clone()), transitions)
        } else {
            (stamp.clone(), transitions.saturating_add(1))
        };
        let mut next = lease.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: Some(acquire_time),
            renew_time: Some(stamp),
            lease_transitions: Some(lease_transitions),
            ..spec
        });
        Plan::Update(next)
    }

    /// Records `written` (as the API returned it) as the record seen at `now`.
    pub fn observe_written(&mut self, written: Lease, now: Instant) {
        let spec = written.spec.clone().unwrap_or_default();
        self.observed = Some(Observed { spec, at: now });
        self.last_written = Some(written);
    }

    /// Whether the record last seen is still within its lease duration.
    fn observed_valid(&self, now: Instant) -> bool {
        self.observed.as_ref().is_some_and(|o| {
            let secs = o.spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
            o.at + Duration::from_secs(secs) > now
        })
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One attempt: read the Lease, then create, take or renew it when [`Elector::plan`] says
    /// so. Ok(true) when this candidate holds the Lease afterwards; a conflicting write is
    /// Ok(false).
    pub async fn try_acquire_or_renew(&mut self, api: &Api<Lease>) -> Result<bool, LeaderError> {
        let current = api.get_opt(&self.config.name).await.map_err(|source| LeaderError::Get {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        })?;
        let written = match self.plan(current.as_ref(), Instant::now(), Timestamp::now()) {
            Plan::Wait { .. } => return Ok(false),
            Plan::Create(lease) => api.create(&PostParams::default(), &lease).await,
            Plan::Update(lease) => {
                api.replace(&self.config.name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(lease) => {
                self.observe_written(lease, Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(source) => Err(LeaderError::Write {
                namespace: self.config.namespace.clone(),
                name: self.config.name.clone(),
                source,
            }),
        }
    }

    /// [`Elector::try_acquire_or_renew`] bounded by `limit`.
    async fn attempt(&mut self, api: &Api<Lease>, limit: Duration) -> Result<bool, LeaderError> {
        tokio::time::timeout(limit, self.try_acquire_or_renew(api))
            .await
            .unwrap_or(Err(LeaderError::Timeout))
    }

    /// Campaigns until this candidate holds the Lease.
    pub async fn acquire(&mut self, api: &Api<Lease>) {
        let mut last_holder: Option<String> = None;
        loop {
            match self.attempt(api, self.config.renew_deadline).await {
                Ok(true) => return,
                Ok(false) => {
                    let holder = self.observed_holder().map(str::to_string);
                    if holder.is_some() && holder != last_holder {
                        tracing::info!(
                            lease = %self.config.name,
                            holder = holder.as_deref().unwrap_or_default(),
                            "lease held by another candidate; waiting"
                        );
                    }
                    last_holder = holder;
                }
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %error_chain(&e), "cannot acquire lease")
                }
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews every retry period; returns once leadership is lost: a renewal did not succeed
    /// within the renew deadline, or another holder was seen.
    pub async fn renew_until_lost(&mut self, api: &Api<Lease>) {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let deadline = Instant::now() + self.config.renew_deadline;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.attempt(api, left).await {
                    Ok(true) => break,
                    Ok(false) if !self.is_leader() && self.observed_holder().is_some() => {
                        tracing::warn!(
                            lease = %self.config.name,
                            holder = self.observed_holder().unwrap_or_default(),
                            "another candidate holds the lease"
                        );
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(lease = %self.config.name, error = %error_chain(&e), "cannot renew lease")
                    }
                }
                if Instant::now() + self.config.retry_period >= deadline {
                    tracing::warn!(
                        lease = %self.config.name,
                        deadline_s = self.config.renew_deadline.as_secs(),
                        "lease not renewed within the renew deadline"
                    );
                    return;
                }
                tokio::time::sleep(self.config.retry_period).await;
            }
        }
    }

    /// Gives the Lease up when this process stops leading on purpose: holder cleared and a
    /// one-second duration, so another candidate takes over at once instead of waiting for the
    /// lease to expire (client-go's ReleaseOnCancel). Best effort: a lost race means someone
    /// else already holds it.
    pub async fn release(&mut self, api: &Api<Lease>) {
        let Some(mut lease) = self.last_written.clone() else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        let now = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        let pp = PostParams::default();
        let write = api.replace(&self.config.name, &pp, &lease);
        match tokio::time::timeout(self.config.retry_period, write).await {
            Ok(Ok(written)) => {
                tracing::info!(lease = %self.config.name, "released the lease");
                self.observe_written(written, Instant::now());
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.config.name, error = %error_chain(&e), "cannot release the lease")
            }
            Err(_) => tracing::warn!(lease = %self.config.name, "releasing the lease timed out"),
        }
    }

    /// Records an event about the Lease (best effort), as upstream's elector does.
    fn record(&self, client: &Client, message: &str) {
        if let Some(lease) = &self.last_written {
            let text = format!("{} {message}", self.config.identity);
            super::events::record(client, COMPONENT, lease, false, "LeaderElection", text);
        }
    }
}

/// Runs the tasks `start` makes only while this process holds the Lease `config` names: waits to
/// acquire it, starts them, renews, and when leadership is lost aborts them and campaigns
/// again. When `shutdown` turns true it stops the tasks, releases the Lease if held, and returns
/// Ok; otherwise it returns only when the tasks end on their own (with their result; they are
/// meant to run for the life of the process).
pub async fn run_while_leader<F, Fut>(
    client: Client,
    config: LeaderElectionConfig,
    mut shutdown: Option<watch::Receiver<bool>>,
    mut start: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut elector = Elector::new(config);
    tracing::info!(
        identity = %elector.config.identity,
        lease = %format!("{}/{}", elector.config.namespace, elector.config.name),
        "campaigning for leadership"
    );
    loop {
        tokio::select! {
            () = elector.acquire(&api) => {}
            () = stopped(&mut shutdown) => return Ok(()),
        }
        tracing::info!(identity = %elector.config.identity, "became leader; starting controllers");
        elector.record(&client, "became leader");
        let mut task = spawn_named("leading", start());
        let guard = AbortOnDrop(vec![task.abort_handle()]);
        tokio::select! {
            joined = &mut task => {
                return match joined {
                    Ok(Ok(())) => Err(LeaderError::Stopped.into()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(e.into()),
                };
            }
            () = elector.renew_until_lost(&api) => {}
            () = stopped(&mut shutdown) => {
                drop(guard);
                let _ = task.await;
                elector.release(&api).await;
                return Ok(());
            }
        }
        drop(guard);
        let _ = task.await;
        tracing::warn!(identity = %elector.config.identity, "leadership lost; controllers stopped");
        elector.record(&client, "stopped leading");
    }
}

/// Resolves once `shutdown` is true or its sender is gone; never without a receiver.
async fn stopped(shutdown: &mut Option<watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            let _ = rx.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

/// The retry period plus a random part of up to [`JITTER_FACTOR`] times it.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(rand::random::<f64>() * JITTER_FACTOR)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me_1";
    const OTHER: &str = "other_2";

    fn wall(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid timestamp")
    }

    fn lease(holder: &str, transitions: i32, renew: i64, rv: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(DEFAULT_LEASE_NAME.into()),
                namespace: Some(LEASE_NAMESPACE.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(wall(0))),
                renew_time: Some(MicroTime(wall(renew))),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    fn spec_of(plan: &Plan) -> LeaseSpec {
        match plan {
            Plan::Create(l) | Plan::Update(l) => l.spec.clone().expect("spec"),
            Plan::Wait { holder } => panic!("expected a write, got a wait for {holder}"),
        }
    }

    #[test]
    fn no_lease_is_created_with_this_holder() {
        let mut e = Elector::new(LeaderElectionConfig::new(ME));
        let plan = e.plan(None, Instant::now(), wall(5));
        assert!(matches!(plan, Plan::Create(_)));
        let spec = spec_of(&plan);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall(5))));
        assert_eq!(spec.renew_time, Some(MicroTime(wall(5))));
    }

    #[test]
    fn a_valid_lease_of_another_waits_until_unchanged_for_a_lease_duration() {
        let mut e = Elector::new(LeaderElectionConfig::new(ME));
        let t0 = Instant::now();
        // The record's own renewTime is long past: only this process's clock counts.
        let held = lease(OTHER, 3, -1000, "10");
        assert_eq!(e.plan(Some(&held), t0, wall(0)), Plan::Wait { holder: OTHER.into() });
        assert_eq!(
            e.plan(Some(&held), t0 + Duration::from_secs(14), wall(14)),
            Plan::Wait { holder: OTHER.into() }
        );
        assert!(!e.is_leader());
        let plan = e.plan(Some(&held), t0 + Duration::from_secs(16), wall(16));
        let Plan::Update(next) = &plan else { panic!("expected a takeover, got {plan:?}") };
        assert_eq!(next.metadata.resource_version.as_deref(), Some("10"));
        let spec = spec_of(&plan);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall(16))));
        assert_eq!(spec.renew_time, Some(MicroTime(wall(16))));
    }

    #[test]
    fn a_renewal_by_the_holder_restarts_the_wait() {
        let mut e = Elector::new(LeaderElectionConfig::new(ME));
        let t0 = Instant::now();
        e.plan(Some(&lease(OTHER, 0, 0, "10")), t0, wall(0));
        let renewed = lease(OTHER, 0, 10, "11");
        let at = |s| t0 + Duration::from_secs(s);
        assert!(matches!(e.plan(Some(&renewed), at(10), wall(10)), Plan::Wait { .. }));
        assert!(matches!(e.plan(Some(&renewed), at(20), wall(20)), Plan::Wait { .. }));
        assert!(matches!(e.plan(Some(&renewed), at(26), wall(26)), Plan::Update(_)));
    }

    #[test]
    fn the_holder_renews_keeping_acquire_time_and_transitions() {
        let mut e = Elector::new(LeaderElectionConfig::new(ME));
        let t0 = Instant::now();
        let mine = lease(ME, 2, 4, "20");
        e.observe_written(mine.clone(), t0);
        assert!(e.is_leader());
        let plan = e.plan(Some(&mine), t0 + Duration::from_secs(2), wall(6));
        assert!(matches!(plan, Plan::Update(_)));
        let spec = spec_of(&plan);
        assert_eq!(spec.lease_transitions, Some(2));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(wall(6))));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut e = Elector::new(LeaderElectionConfig::new(ME));
        let released = lease("", 5, 0, "30");
        let spec = spec_of(&e.plan(Some(&released), Instant::now(), wall(1)));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(6));
    }

    #[test]
    fn seeing_another_holder_ends_leadership() {
        let mut e = Elector::new(LeaderElectionConfig::new(ME));
        let t0 = Instant::now();
        e.observe_written(lease(ME, 0, 0, "1"), t0);
        assert!(e.is_leader());
        let taken = lease(OTHER, 1, 20, "2");
        assert!(matches!(
            e.plan(Some(&taken), t0 + Duration::from_secs(20), wall(20)),
            Plan::Wait { .. }
        ));
        assert!(!e.is_leader());
        assert_eq!(e.observed_holder(), Some(OTHER));
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(a.contains('_'));
    }
}
