//! Scheduler throughput (run by scripts/bench-scheduler): registers SKIFF_BENCH_NODES simulated
//! nodes (default 5000), then creates SKIFF_BENCH_PODS pending pods (default 10000), starts the
//! scheduler alone and prints how fast it binds them all: plain pods (SKIFF_BENCH_RUNS times,
//! default 3, and the median), then pods with required pod anti-affinity (10 groups, one pod of a
//! group per node: hostname topology), placed next to the plain pods already bound. Progress is
//! counted from a watch that decodes only names and nodes, so the benchmark costs the server
//! little. It prints figures; it asserts nothing about speed.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use skiff::agent::simulated::{node, NodeCapacity, SimulatedOptions};
use skiff::controllers::cluster::{ComponentOptions, LocalCluster};

/// The allocator the skiff binary uses (src/main.rs), so the figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the benchmark's own watch reads of a pod: its name and node. Decoding only these keeps
/// the watch that counts bindings from competing with the scheduler for the CPU.
#[derive(Clone, Debug, serde::Deserialize)]
struct BoundPod {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: BoundSpec,
}

#[derive(Clone, Debug, Default, serde::Deserialize)]
struct BoundSpec {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

impl kube::Resource for BoundPod {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Anti-affinity groups: pods of one group go to distinct nodes.
const GROUPS: usize = 10;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn plain_pod(run: usize, i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("plain{run}-{i}"), "labels": {"bench": format!("plain{run}")}},
        "spec": {"containers": [{"name": "c", "image": "pause",
                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .expect("pod")
}

fn anti_pod(i: usize) -> Pod {
    let group = format!("g{}", i % GROUPS);
    serde_json::from_value(json!({
        "metadata": {"name": format!("anti-{i}"), "labels": {"bench": "anti", "group": group}},
        "spec": {
            "containers": [{"name": "c", "image": "pause",
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"group": group}},
                "topologyKey": "kubernetes.io/hostname"}]}},
        },
    }))
    .expect("pod")
}

/// Creates the pods, runs the scheduler until every pod labelled bench=`label` is bound and
/// returns pods/s.
async fn phase(
    client: &Client,
    label: &str,
    count: usize,
    make: &(dyn Fn(usize) -> Pod + Sync),
) -> Rate {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let started = Instant::now();
    let created: Vec<bool> = futures::stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &make(i)).await.is_ok() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(created.iter().all(|ok| *ok), "every pod created");
    eprintln!("{label}: created {count} pods in {:?}", started.elapsed());

    // Count bound pods from a watch (started before the scheduler, so nothing is missed).
    let cfg = watcher::Config::default().labels(&format!("bench={label}"));
    let watched: Api<BoundPod> = Api::default_namespaced(client.clone());
    let mut events = watcher::watcher(watched, cfg).boxed();
    let mut bound: HashSet<String> = HashSet::new();
    let note = |p: &BoundPod, bound: &mut HashSet<String>| {
        if p.spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
            bound.insert(p.name_any());
        }
    };
    // Initial list first (every pod pending), then the scheduler.
    loop {
        match events.try_next().await.expect("watch") {
            Some(watcher::Event::InitDone) => break,
            Some(watcher::Event::InitApply(p)) => note(&p, &mut bound),
            _ => {}
        }
    }
    let started = Instant::now();
    let sched = tokio::spawn(skiff::scheduler::run(client.clone(), Default::default()));
    let deadline = Duration::from_secs(900);
    let mut first_bound: Option<Instant> = None;
    while bound.len() < count {
        if first_bound.is_none() && !bound.is_empty() {
            first_bound = Some(Instant::now());
        }
        let next = tokio::time::timeout(deadline.saturating_sub(started.elapsed()), events.next());
        match next.await {
            Ok(Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)))) => {
                note(&p, &mut bound)
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("watch ended"),
            Err(_) => panic!("{} pods still unbound after {deadline:?}", count - bound.len()),
        }
    }
    let elapsed = started.elapsed();
    sched.abort();
    let _ = sched.await;
    let rate = count as f64 / elapsed.as_secs_f64();
    eprintln!("{label}: scheduled {count} pods in {elapsed:?}: {rate:.0} pods/s");
    // The scheduler starts by listing every node and pod; once its caches are filled, bindings
    // follow one another at its steady rate.
    let startup = first_bound.map(|t| t - started).unwrap_or_default();
    let steady = (count.saturating_sub(1)) as f64 / (elapsed - startup).as_secs_f64();
    eprintln!("{label}: first binding after {startup:?}, then {steady:.0} pods/s");
    Rate { overall: rate, startup, steady }
}

/// One phase's figures.
struct Rate {
    /// Pods over the time from the scheduler's start (informer lists included) to the last binding.
    overall: f64,
    /// From the scheduler's start to the first binding seen.
    startup: Duration,
    /// Pods over the time from the first binding seen to the last.
    steady: f64,
}

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let nodes = env("SKIFF_BENCH_NODES", 5000);
    let count = env("SKIFF_BENCH_PODS", 10000);
    let runs = env("SKIFF_BENCH_RUNS", 3).max(1);
    let opts = ComponentOptions { controllers: false, simulate_nodes: 0, ..Default::default() };
    let cluster = LocalCluster::start_with(opts).await.expect("cluster");
    let client = cluster.client.clone();

    let started = Instant::now();
    let sim = Arc::new(SimulatedOptions::new(nodes, NodeCapacity::default()));
    node::register_all(&client, &sim).await.expect("register nodes");
    eprintln!("registered {nodes} nodes in {:?}", started.elapsed());

    // A 10,000-pod run lasts about two seconds, so single runs are noisy: the plain phase runs
    // several times (fresh pods each time, the earlier ones staying bound) and the median counts.
    let mut plain = vec![];
    for run in 1..=runs {
        let label = format!("plain{run}");
        plain.push(phase(&client, &label, count, &|i| plain_pod(run, i)).await);
    }
    let anti = phase(&client, "anti", count, &anti_pod).await;
    println!("scheduler, {nodes} nodes, {count} pods per run:");
    let show = |what: &str, r: &Rate| {
        println!(
            "  {what}: {:>6.0} pods/s once scheduling (first binding after {:.2} s of cache sync); {:>6.0} pods/s overall",
            r.steady,
            r.startup.as_secs_f64(),
            r.overall
        )
    };
    for (run, r) in plain.iter().enumerate() {
        show(&format!("plain pods, run {}", run + 1), r);
    }
    plain.sort_by(|a, b| a.steady.total_cmp(&b.steady));
    show("plain pods, median run", &plain[plain.len() / 2]);
    let bound = count * runs;
    show(&format!("required pod anti-affinity ({GROUPS} groups, hostname; {bound} plain pods already bound)"), &anti);
}
