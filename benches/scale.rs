//! Scale benchmark (run by scripts/bench-scale): a release `skiff server --simulate-nodes N` in
//! its own process (controllers, scheduler and simulated nodes in it, an empty temporary data
//! dir), then D Deployments of R replicas each created through the API over HTTPS. Prints the
//! time from the first create until every pod is Running (the Deployments' readyReplicas add up
//! to D × R, then a field-selected list confirms no pod is in another phase), the server's peak
//! RSS (VmHWM from /proc), and the latency of single-object writes during the run: the
//! Deployment creates, and a probe that creates one ConfigMap and updates another in turn every
//! 100 ms until the end. It prints figures; it asserts nothing about them.
//!
//! Arguments: `--nodes N` (1000), `--deployments D` (1000), `--replicas R` (100),
//! `--timeout-secs S` (3600).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;
use skiff::testing::skiff_server::{SkiffProcess, SpawnOptions};

/// Concurrent Deployment creates.
const CREATE_CONCURRENCY: usize = 8;
const PROBE_EVERY: Duration = Duration::from_millis(100);
const POLL_EVERY: Duration = Duration::from_secs(2);
const NAMESPACE: &str = "scale";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A /proc/PID/status field in MiB (VmRSS, VmHWM).
fn proc_mib(pid: Option<u32>, field: &str) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn deployment(i: u64, replicas: u64) -> Deployment {
    let app = format!("d{i}");
    serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .expect("deployment")
}

/// Latencies of single-object writes, and failures.
#[derive(Default)]
struct Writes {
    ok: Vec<Duration>,
    failed: usize,
}

/// Every PROBE_EVERY: creates a ConfigMap, or updates the probe ConfigMap (alternately).
async fn probe(
    client: Client,
    writes: Arc<Mutex<Writes>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current: Option<ConfigMap> = None;
    let mut i = 0u64;
    while !*stop.borrow() {
        tick.tick().await;
        i += 1;
        let began = Instant::now();
        let ok = if i % 2 == 1 || current.is_none() {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("probe-{i}")}, "data": {"n": i.to_string()}}))
            .expect("configmap");
            match api.create(&PostParams::default(), &cm).await {
                Ok(created) => {
                    if current.is_none() {
                        current = Some(created);
                    }
                    true
                }
                Err(_) => false,
            }
        } else {
            let mut cm = current.clone().unwrap_or_default();
            cm.data.get_or_insert_with(Default::default).insert("n".into(), i.to_string());
            let name = cm.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &PostParams::default(), &cm).await {
                Ok(updated) => {
                    current = Some(updated);
                    true
                }
                Err(_) => {
                    current = api.get(&name).await.ok();
                    false
                }
            }
        };
        let mut w = writes.lock();
        if ok {
            w.ok.push(began.elapsed());
        } else {
            w.failed += 1;
        }
    }
}

fn summary(label: &str, w: &Writes) {
    let mut v = w.ok.clone();
    v.sort();
    println!(
        "{label}: {} writes ({} failed), p50 {}, p99 {}, max {}",
        v.len(),
        w.failed,
        ms(percentile(&v, 0.50)),
        ms(percentile(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
    );
}

#[tokio::main]
async fn main() {
    let nodes = arg("--nodes", 1000);
    let count = arg("--deployments", 1000);
    let replicas = arg("--replicas", 100);
    let timeout = Duration::from_secs(arg("--timeout-secs", 3600));
    let total = count * replicas;
    // SKIFF_BENCH_BINARY runs another program as the server (a wrapper that profiles it).
    let binary = std::env::var_os("SKIFF_BENCH_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_skiff")).to_owned());
    let binary = binary.as_path();
    println!(
        "skiff scale benchmark: {nodes} simulated nodes, {count} Deployments × {replicas} \
         replicas = {total} pods (release skiff server in its own process, SQLite, HTTPS)"
    );
    let options = SpawnOptions {
        args: vec!["--simulate-nodes".into(), nodes.to_string()],
        ..Default::default()
    };
    let server = SkiffProcess::spawn_with(binary, options).await.expect("skiff starts");
    let pid = server.pid();
    let client = server.client().await.expect("client");

    // Wait until every node is registered.
    let started = Instant::now();
    let node_api: Api<Node> = Api::all(client.clone());
    loop {
        let n = node_api.list_metadata(&ListParams::default()).await.map(|l| l.items.len());
        if n.unwrap_or(0) as u64 >= nodes {
            break;
        }
        assert!(started.elapsed() < timeout, "nodes not registered in time");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("{nodes} nodes registered {:.1} s after start-up", started.elapsed().as_secs_f64());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");

    let probes = Arc::new(Mutex::new(Writes::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let prober = tokio::spawn(probe(client.clone(), probes.clone(), stop_rx));

    // Create the Deployments.
    let started = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let creates: Vec<Result<Duration, kube::Error>> = futures::stream::iter(0..count)
        .map(|i| {
            let api = deployments.clone();
            async move {
                let began = Instant::now();
                api.create(&PostParams::default(), &deployment(i, replicas))
                    .await
                    .map(|_| began.elapsed())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let mut create_writes = Writes::default();
    for c in creates {
        match c {
            Ok(d) => create_writes.ok.push(d),
            Err(e) => {
                eprintln!("deployment create failed: {e}");
                create_writes.failed += 1;
            }
        }
    }
    println!("created {count} Deployments in {:.1} s", started.elapsed().as_secs_f64());

    // Poll the Deployments' readyReplicas until every pod is ready.
    let mut last_print = Instant::now();
    let mut ready = 0u64;
    let done = loop {
        match deployments.list(&ListParams::default()).await {
            Ok(list) => {
                ready = list
                    .items
                    .iter()
                    .filter_map(|d| d.status.as_ref().and_then(|s| s.ready_replicas))
                    .map(|r| r as u64)
                    .sum();
            }
            Err(e) => eprintln!("list deployments: {e}"),
        }
        if ready >= total {
            break Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            break None;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "{:>6.0} s: {ready}/{total} pods ready; server RSS {:.0} MiB (peak {:.0} MiB)",
                started.elapsed().as_secs_f64(),
                proc_mib(pid, "VmRSS:"),
                proc_mib(pid, "VmHWM:")
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    let _ = stop_tx.send(true);
    let _ = prober.await;
    let peak = proc_mib(pid, "VmHWM:");
    let rss = proc_mib(pid, "VmRSS:");

    // Every pod Running? (A field-selected list: only pods in another phase come back.)
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let not_running = pods
        .list_metadata(&ListParams::default().fields("status.phase!=Running").limit(100))
        .await
        .map(|l| l.items.len());

    match done {
        Some(t) => println!(
            "all {total} pods ready (readyReplicas) {:.1} s after the first Deployment create; \
             pods not Running by then: {not_running:?}",
            t.as_secs_f64()
        ),
        None => println!("NOT DONE: {ready}/{total} pods ready after {timeout:?}"),
    }
    println!("server peak RSS (VmHWM) {peak:.0} MiB; RSS at the end {rss:.0} MiB");
    summary("single-object writes, probe (ConfigMap create/update every 100 ms)", &probes.lock());
    summary("single-object writes, Deployment creates", &create_writes);
}
