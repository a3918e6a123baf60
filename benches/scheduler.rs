//! Scheduler throughput (run by scripts/bench-scheduler): registers SKIFF_BENCH_NODES simulated
//! nodes (default 5000), creates SKIFF_BENCH_PODS pending pods (default 10000), then starts the
//! scheduler alone and prints how fast it binds them all. It prints figures; it asserts nothing
//! about speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff::agent::simulated::{node, NodeCapacity, SimulatedOptions};
use skiff::controllers::cluster::{ComponentOptions, LocalCluster};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
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

    let started = Instant::now();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let results: Vec<bool> = futures::stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("bench-{i}"), "labels": {"bench": "yes"}},
                    "spec": {"containers": [{"name": "c", "image": "pause",
                              "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                }))
                .expect("pod");
                pods.create(&PostParams::default(), &p).await.is_ok()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(results.iter().all(|ok| *ok), "every pod created");
    eprintln!("created {count} pods in {:?}", started.elapsed());

    let started = Instant::now();
    let sched = tokio::spawn(skiff::scheduler::run(client.clone(), Default::default()));
    // Poll for unbound pods only (the list shrinks as they are bound), twice a second.
    let unbound = ListParams::default().labels("bench=yes").fields("spec.nodeName=");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = pods.list(&unbound).await.expect("list").items.len();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} pods still unbound after 600 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    sched.abort();
    eprintln!(
        "scheduled {count} pods on {nodes} nodes in {elapsed:?}: {:.0} pods/s",
        count as f64 / elapsed.as_secs_f64()
    );
}
