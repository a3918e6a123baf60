//! Scheduler throughput (run by scripts/bench-scheduler): registers SKIFF_BENCH_NODES simulated
//! nodes (default 5000), then twice creates SKIFF_BENCH_PODS pending pods (default 10000), starts
//! the scheduler alone and prints how fast it binds them all: first plain pods, then pods with
//! required pod anti-affinity (10 groups, one pod of a group per node: hostname topology), placed
//! next to the plain pods already bound. Progress is counted from a watch, so the benchmark
//! costs the server little. It prints figures; it asserts nothing about speed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use skiff::agent::simulated::{node, NodeCapacity, SimulatedOptions};
use skiff::controllers::cluster::{ComponentOptions, LocalCluster};

/// The allocator the skiff binary uses (src/main.rs), so the figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Anti-affinity groups: pods of one group go to distinct nodes.
const GROUPS: usize = 10;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn plain_pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("plain-{i}"), "labels": {"bench": "plain"}},
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
async fn phase(client: &Client, label: &str, count: usize, make: fn(usize) -> Pod) -> f64 {
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
    let mut events = watcher::watcher(pods.clone(), cfg).boxed();
    let mut bound: HashSet<String> = HashSet::new();
    let note = |p: &Pod, bound: &mut HashSet<String>| {
        if p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
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
    while bound.len() < count {
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
    rate
}

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let nodes = env("SKIFF_BENCH_NODES", 5000);
    let count = env("SKIFF_BENCH_PODS", 10000);
    let opts = ComponentOptions { controllers: false, simulate_nodes: 0, ..Default::default() };
    let cluster = LocalCluster::start_with(opts).await.expect("cluster");
    let client = cluster.client.clone();

    let started = Instant::now();
    let sim = Arc::new(SimulatedOptions::new(nodes, NodeCapacity::default()));
    node::register_all(&client, &sim).await.expect("register nodes");
    eprintln!("registered {nodes} nodes in {:?}", started.elapsed());

    let plain = phase(&client, "plain", count, plain_pod).await;
    let anti = phase(&client, "anti", count, anti_pod).await;
    println!("scheduler, {nodes} nodes, {count} pods per run:");
    println!("  plain pods:                      {plain:>8.0} pods/s");
    println!(
        "  required pod anti-affinity ({GROUPS} groups, hostname; {count} plain pods already bound): {anti:>8.0} pods/s"
    );
}
