//! API benchmark (run by scripts/bench-api): a release `skiff server --disable-controllers` on an
//! empty temporary data dir, driven over HTTPS (client certificate, TLS verified) by one HTTP
//! client per connection. Prints ConfigMap creates/s at 1, 16 and 64 connections with p50/p99,
//! GET latency, LIST latency over 10,000 ConfigMaps, cold start to /readyz and idle RSS; then
//! drives Debian's etcd-server JSON gateway (/v3/kv/put over HTTP) with the same client code at
//! the same concurrency and prints the skiff/etcd ratio. It prints figures; it asserts nothing.
//!
//! `--quick` runs each load for 1.5 s instead of 5 s.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use skiff::testing::etcd_server::EtcdServer;
use skiff::testing::skiff_server::{client_for, Credentials, SkiffProcess, SpawnOptions};

/// Bytes of data in each ConfigMap (and in each etcd value).
const DATA_BYTES: usize = 1024;
const LIST_OBJECTS: usize = 10_000;
const CONNECTIONS: [usize; 3] = [1, 16, 64];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn configmap(name: &str) -> Vec<u8> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"value": "x".repeat(DATA_BYTES)},
    });
    serde_json::to_vec(&body).expect("json")
}

/// One request as the load tool sends it: the same kube-rs client stack (hyper) for skiff
/// (HTTPS) and etcd (HTTP). Returns the status.
async fn send(client: &kube::Client, method: &str, path: &str, body: Vec<u8>) -> u16 {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(kube::client::Body::from(body))
        .expect("request");
    let resp = client.send(req).await.expect("send");
    let status = resp.status().as_u16();
    // Read the whole body, as a client would.
    resp.into_body().collect_bytes().await.expect("body");
    status
}

/// Figures of one load run.
struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// One task per client, each sending `make(worker, i)` requests back to back for `secs`.
async fn load(
    clients: &[kube::Client],
    secs: f64,
    make: impl Fn(usize, usize) -> (String, Vec<u8>) + Clone + Send + 'static,
    ok: u16,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(w, client)| {
            let client = client.clone();
            let make = make.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors, mut i) = (Vec::new(), 0, 0);
                while Instant::now() < deadline {
                    let (path, body) = make(w, i);
                    let t = Instant::now();
                    let status = send(&client, "POST", &path, body).await;
                    lat.push(t.elapsed());
                    if status != ok {
                        errors += 1;
                    }
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("join");
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Run {
        per_sec: (all.len() - errors) as f64 / elapsed,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
    }
}

/// `n` clients of the skiff server, each with its own connection pool (one connection each).
async fn skiff_clients(kubeconfig: &Path, n: usize) -> Vec<kube::Client> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(client_for(kubeconfig, Credentials::Kubeconfig).await.expect("client"));
    }
    out
}

fn etcd_clients(url: &str, n: usize) -> Vec<kube::Client> {
    (0..n)
        .map(|_| {
            let mut config = kube::Config::new(url.parse().expect("etcd url"));
            config.default_retry = false;
            kube::Client::try_from(config).expect("etcd client")
        })
        .collect()
}

fn print_run(what: &str, conns: usize, run: &Run) {
    let errors = if run.errors > 0 { format!("  ({} errors)", run.errors) } else { String::new() };
    println!(
        "{what}, {conns:>2} connections: {:>8.0}/s  p50 {}  p99 {}{errors}",
        run.per_sec,
        ms(run.p50),
        ms(run.p99)
    );
}

/// Sequential requests of `path`; p50 and p99.
async fn latency(client: &kube::Client, path: &str, n: usize) -> (Duration, Duration) {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let status = send(client, "GET", path, Vec::new()).await;
        lat.push(t.elapsed());
        assert_eq!(status, 200, "GET {path}");
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

async fn cold_start(binary: &Path, runs: usize) -> (Duration, Option<u64>) {
    let mut times = vec![];
    let mut rss = None;
    for _ in 0..runs {
        let options =
            SpawnOptions { args: vec!["--disable-controllers".into()], ..Default::default() };
        let mut p = SkiffProcess::spawn_with(binary, options).await.expect("skiff starts");
        times.push(p.startup);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss = p.rss_bytes();
        p.stop(Duration::from_secs(10)).await.expect("stop");
    }
    times.sort();
    (times[times.len() / 2], rss)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "?".into())
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 1.5 } else { 5.0 };
    let binary = Path::new(env!("CARGO_BIN_EXE_skiff"));
    println!(
        "skiff API benchmark (release skiff server --disable-controllers, HTTPS with a client \
         certificate, ConfigMaps with {DATA_BYTES} bytes of data, one HTTP/1.1 client per \
         connection)"
    );

    let (startup, idle_rss) = cold_start(binary, 3).await;
    println!(
        "cold start to /readyz on an empty data dir (median of 3): {}; idle RSS {}",
        ms(startup),
        mib(idle_rss)
    );

    let options = SpawnOptions { args: vec!["--disable-controllers".into()], ..Default::default() };
    let server = SkiffProcess::spawn_with(binary, options).await.expect("skiff starts");
    let mut skiff = vec![];
    for conns in CONNECTIONS {
        let clients = skiff_clients(&server.kubeconfig, conns).await;
        let run = load(
            &clients,
            secs,
            move |w, i| {
                (
                    "/api/v1/namespaces/default/configmaps".to_string(),
                    configmap(&format!("c{conns}-{w}-{i}")),
                )
            },
            201,
        )
        .await;
        print_run("skiff ConfigMap creates", conns, &run);
        skiff.push(run.per_sec);
    }

    // GET and LIST latency on their own connection.
    let client = skiff_clients(&server.kubeconfig, 1).await.remove(0);
    let (p50, p99) = latency(
        &client,
        "/api/v1/namespaces/default/configmaps/c1-0-0",
        if quick { 500 } else { 2000 },
    )
    .await;
    println!("skiff GET one ConfigMap: p50 {}  p99 {}", ms(p50), ms(p99));

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "list"}});
    send(&client, "POST", "/api/v1/namespaces", serde_json::to_vec(&ns).unwrap()).await;
    let fillers = skiff_clients(&server.kubeconfig, 16).await;
    let fill: Vec<_> = fillers
        .into_iter()
        .enumerate()
        .map(|(w, c)| {
            tokio::spawn(async move {
                for i in (w..LIST_OBJECTS).step_by(16) {
                    let status = send(
                        &c,
                        "POST",
                        "/api/v1/namespaces/list/configmaps",
                        configmap(&format!("l{i:05}")),
                    )
                    .await;
                    assert_eq!(status, 201);
                }
            })
        })
        .collect();
    for t in fill {
        t.await.expect("fill");
    }
    let list_path = "/api/v1/namespaces/list/configmaps";
    let req = axum::http::Request::get(list_path).body(kube::client::Body::empty()).unwrap();
    let bytes = client.send(req).await.expect("list").into_body().collect_bytes().await.unwrap();
    let (p50, p99) = latency(&client, list_path, if quick { 5 } else { 20 }).await;
    println!(
        "skiff LIST {LIST_OBJECTS} ConfigMaps ({:.1} MiB of JSON): p50 {}  p99 {}",
        bytes.len() as f64 / 1048576.0,
        ms(p50),
        ms(p99)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "skiff RSS after the load (every ConfigMap created above still stored): {}",
        mib(server.rss_bytes())
    );
    drop(server);

    let etcd = match tokio::task::spawn_blocking(EtcdServer::start).await.expect("join") {
        Ok(s) => s,
        Err(e) => {
            println!("etcd: not run ({e})");
            return;
        }
    };
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    for (k, conns) in CONNECTIONS.into_iter().enumerate() {
        let clients = etcd_clients(&etcd.client_url(), conns);
        let run = load(
            &clients,
            secs,
            move |w, i| {
                let key = format!("/registry/configmaps/default/c{conns}-{w}-{i}");
                let value = configmap(&format!("c{conns}-{w}-{i}"));
                let body = json!({"key": b64(key.as_bytes()), "value": b64(&value)});
                ("/v3/kv/put".to_string(), serde_json::to_vec(&body).unwrap())
            },
            200,
        )
        .await;
        print_run("etcd /v3/kv/put (JSON gateway, HTTP)", conns, &run);
        println!(
            "ratio skiff creates/s / etcd puts/s at {conns:>2} connections: {:.2}",
            skiff[k] / run.per_sec
        );
    }
}
