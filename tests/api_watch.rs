//! Watch and list resourceVersion semantics over `api_router` on a real store: initial events
//! and their end bookmark, tables in watch events, and 410s after compaction.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use skiff::apiserver::handlers::api_router;
use skiff::apiserver::UserInfo;
use skiff::store::sqlite::{SqliteBackend, SqliteOptions};
use skiff::store::{CacheOptions, Store};
use tower::ServiceExt;

struct Env {
    router: axum::Router,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(CacheOptions::default()).await
}

async fn env_with(cache: CacheOptions) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend =
        SqliteBackend::open(&dir.path().join("state.db"), SqliteOptions::default()).expect("open");
    let store = Store::open(Arc::new(backend), cache).await.expect("store");
    skiff::registry::bootstrap::ensure_defaults(&store).await.expect("defaults");
    let admin = UserInfo {
        name: "admin".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
    };
    let router = api_router(store.clone()).layer(axum::middleware::from_fn(
        move |mut req: axum::extract::Request, next: axum::middleware::Next| {
            let admin = admin.clone();
            async move {
                req.extensions_mut().insert(admin);
                next.run(req).await
            }
        },
    ));
    Env { router, store, _dir: dir }
}

async fn call(
    env: &Env,
    method: &str,
    uri: &str,
    body: Value,
    accept: &str,
) -> (StatusCode, Value) {
    let mut b =
        Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if !accept.is_empty() {
        b = b.header("accept", accept);
    }
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    let resp = env.router.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Opens a watch and returns its first `n` events.
async fn watch_events(env: &Env, uri: &str, accept: &str, n: usize) -> (StatusCode, Vec<Value>) {
    let mut b = Request::builder().uri(uri);
    if !accept.is_empty() {
        b = b.header("accept", accept);
    }
    let resp = env.router.clone().oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let mut stream = resp.into_body().into_data_stream();
    let mut buf = Vec::new();
    let mut events = vec![];
    while events.len() < n {
        let chunk = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => break,
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).expect("each line is a JSON event"));
        }
    }
    (status, events)
}

async fn make_cm(env: &Env, name: &str) -> String {
    let (code, v) = call(
        env,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": name}}),
        "",
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    v["metadata"]["resourceVersion"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn watch_list_sends_initial_events_then_bookmark() {
    let env = env().await;
    make_cm(&env, "a").await;
    make_cm(&env, "b").await;
    let uri = "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true\
               &resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=5";
    let (code, events) = watch_events(&env, uri, "", 3).await;
    assert_eq!(code, StatusCode::OK);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["ADDED", "ADDED", "BOOKMARK"]);
    let bm = &events[2]["object"];
    assert_eq!(bm["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert!(bm["metadata"]["resourceVersion"].as_str().is_some());

    // Without resourceVersionMatch the request is invalid.
    let (code, v) = call(
        &env,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true",
        Value::Null,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

#[tokio::test]
async fn watch_from_a_revision_and_as_table() {
    let env = env().await;
    let rv = make_cm(&env, "a").await;
    let uri = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=5"
    );
    let router_env = &env;
    let watcher = watch_events(router_env, &uri, "application/json;as=Table;v=v1;g=meta.k8s.io", 1);
    let writer = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        make_cm(router_env, "b").await;
    };
    let ((code, events), _) = tokio::join!(watcher, writer);
    assert_eq!(code, StatusCode::OK);
    assert_eq!(events[0]["type"], "ADDED");
    let table = &events[0]["object"];
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["rows"][0]["cells"][0], "b");
    assert_eq!(table["columnDefinitions"][1]["name"], "Data");
}

#[tokio::test]
async fn compacted_revisions_are_gone() {
    // A small watch window, so that early revisions fall out of it.
    let env = env_with(CacheOptions { window_events: 4, ..CacheOptions::default() }).await;
    let first = make_cm(&env, "a").await;
    for i in 0..5 {
        make_cm(&env, &format!("c{i}")).await;
    }
    let (code, page) =
        call(&env, "GET", "/api/v1/namespaces/default/configmaps?limit=2", Value::Null, "").await;
    assert_eq!(code, StatusCode::OK);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    // An exact read of the past works before compaction.
    let (code, old) = call(
        &env,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?resourceVersion={first}&resourceVersionMatch=Exact"),
        Value::Null,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{old}");
    assert_eq!(old["items"].as_array().unwrap().len(), 1);

    make_cm(&env, "late").await;
    env.store.compact(env.store.revision()).await.expect("compact");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (code, v) = call(
        &env,
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
        Value::Null,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::GONE, "{v}");
    assert_eq!(v["reason"], "Expired");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("The provided continue parameter is too old"));

    let uri = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={first}&timeoutSeconds=5"
    );
    let (code, events) = watch_events(&env, &uri, "", 1).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert!(events[0]["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version"));
}

#[tokio::test]
async fn namespaces_terminate_through_finalize() {
    let env = env().await;
    let (code, _) = call(
        &env,
        "POST",
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}),
        "",
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, ns) = call(&env, "DELETE", "/api/v1/namespaces/gone", Value::Null, "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, v) = call(
        &env,
        "POST",
        "/api/v1/namespaces/gone/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        "",
    )
    .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
    let mut fin = ns.clone();
    fin["spec"]["finalizers"] = json!([]);
    let (code, v) = call(&env, "PUT", "/api/v1/namespaces/gone/finalize", fin, "").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let (code, _) = call(&env, "GET", "/api/v1/namespaces/gone", Value::Null, "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, v) = call(&env, "DELETE", "/api/v1/namespaces/default", Value::Null, "").await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn bindings_and_evictions() {
    let env = env().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "x"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let (code, _) = call(&env, "POST", "/api/v1/namespaces/default/pods", pod, "").await;
    assert_eq!(code, StatusCode::CREATED);
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                         "metadata": {"name": "p", "annotations": {"bound-by": "test"}},
                         "target": {"kind": "Node", "name": "n1"}});
    // A dry run answers as the binding would and binds nothing; a missing pod is not found.
    let uri = "/api/v1/namespaces/default/pods/p/binding";
    let (code, v) = call(&env, "POST", &format!("{uri}?dryRun=All"), binding.clone(), "").await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let (_, p) = call(&env, "GET", "/api/v1/namespaces/default/pods/p", Value::Null, "").await;
    assert_eq!(p["spec"].get("nodeName"), None, "{p}");
    let missing = "/api/v1/namespaces/default/pods/none/binding";
    let (code, v) = call(&env, "POST", missing, binding.clone(), "").await;
    assert_eq!((code, v["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")), "{v}");
    let (code, v) = call(&env, "POST", uri, binding.clone(), "").await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let (_, p) = call(&env, "GET", "/api/v1/namespaces/default/pods/p", Value::Null, "").await;
    assert_eq!(p["spec"]["nodeName"], "n1");
    assert_eq!(p["metadata"]["annotations"]["bound-by"], "test", "{p}");
    assert_eq!(p["metadata"]["labels"]["app"], "x", "{p}");
    assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
    // As upstream, a binding writes no managedFields entry; the create's is all there is.
    let managers = p["metadata"]["managedFields"].as_array().map(Vec::len);
    assert_eq!(managers, Some(1), "{}", p["metadata"]["managedFields"]);
    let (code, v) =
        call(&env, "POST", "/api/v1/namespaces/default/pods/p/binding", binding, "").await;
    assert_eq!(code, StatusCode::CONFLICT, "{v}");

    // A budget that allows no disruption blocks eviction of a running pod.
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
                     "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}});
    let (code, _) =
        call(&env, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets", pdb, "")
            .await;
    assert_eq!(code, StatusCode::CREATED);
    let req = Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/pods/p/status")
        .header("content-type", "application/merge-patch+json")
        .body(Body::from(json!({"status": {"phase": "Running"}}).to_string()))
        .unwrap();
    let resp = env.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let eviction =
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}});
    let (code, v) =
        call(&env, "POST", "/api/v1/namespaces/default/pods/p/eviction", eviction.clone(), "")
            .await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "{v}");
    call(
        &env,
        "DELETE",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/b",
        Value::Null,
        "",
    )
    .await;
    let (code, v) =
        call(&env, "POST", "/api/v1/namespaces/default/pods/p/eviction", eviction, "").await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn kubernetes_service_endpoints_follow_the_server() {
    let env = env().await;
    let ip: std::net::IpAddr = "192.168.1.10".parse().unwrap();
    skiff::registry::bootstrap::reconcile_kubernetes_endpoints(&env.store, ip, 6443).await.unwrap();
    let other: std::net::IpAddr = "192.168.1.11".parse().unwrap();
    skiff::registry::bootstrap::reconcile_kubernetes_endpoints(&env.store, other, 6443)
        .await
        .unwrap();
    let (code, ep) =
        call(&env, "GET", "/api/v1/namespaces/default/endpoints/kubernetes", Value::Null, "").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.168.1.11");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
    let (code, slice) = call(
        &env,
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        Value::Null,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.11");
    assert_eq!(slice["addressType"], "IPv4");
}

/// A watch response read one event at a time, as slowly as a test wants.
struct EventReader {
    stream: axum::body::BodyDataStream,
    buf: Vec<u8>,
}

impl EventReader {
    async fn open(env: &Env, uri: &str) -> EventReader {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = env.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        EventReader { stream: resp.into_body().into_data_stream(), buf: Vec::new() }
    }

    /// The next event, or None once the watch ends (or nothing comes for 10 s).
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("each line is a JSON event"));
            }
            match tokio::time::timeout(Duration::from_secs(10), self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}

fn rv_of(event: &Value) -> u64 {
    event["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

/// Creates `n` ConfigMaps named `prefix-0` .. in order.
async fn make_many(env: &Env, prefix: &str, n: usize) {
    for i in 0..n {
        make_cm(env, &format!("{prefix}-{i}")).await;
    }
}

/// A watch whose client stops reading falls behind the watch cache's buffer and window (both
/// tiny here), and behind the response's own buffer. Once the client reads again it gets every
/// event once, in order, read back from the database's history: no 410 and no relist needed.
#[tokio::test]
async fn a_watch_that_falls_behind_catches_up_from_history() {
    let env = env_with(CacheOptions { window_events: 4, watcher_buffer: 4 }).await;
    let start = make_cm(&env, "start").await;
    let uri = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={start}&timeoutSeconds=60"
    );
    let mut watch = EventReader::open(&env, &uri).await;
    make_many(&env, "cm", 800).await;
    let mut names = vec![];
    let mut last = start.parse::<u64>().unwrap();
    while names.len() < 800 {
        let event = watch.next().await.unwrap_or_else(|| panic!("ended after {}", names.len()));
        assert_eq!(event["type"], "ADDED", "{event}");
        let rv = rv_of(&event);
        assert!(rv > last, "revisions increase: {rv} after {last}");
        last = rv;
        names.push(event["object"]["metadata"]["name"].as_str().unwrap().to_string());
    }
    let want: Vec<String> = (0..800).map(|i| format!("cm-{i}")).collect();
    assert_eq!(names, want, "every event once, in order");
    // And it is live again: a new write arrives promptly.
    make_cm(&env, "after").await;
    let event = watch.next().await.expect("a live event");
    assert_eq!(event["object"]["metadata"]["name"], "after");
}

/// A bookmark sent while a watch is still catching up carries only the revision it has sent,
/// never the cache's newer one: a client resuming from it would otherwise skip the events it
/// had not received yet.
#[tokio::test]
async fn a_bookmark_never_runs_ahead_of_a_watch_that_is_catching_up() {
    let env = env_with(CacheOptions { window_events: 4, watcher_buffer: 4 }).await;
    let start = make_cm(&env, "start").await;
    // The final bookmark is due 2 s before the 10 s timeout; the client reads only after that.
    let opened = std::time::Instant::now();
    let uri = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={start}\
         &allowWatchBookmarks=true&timeoutSeconds=10"
    );
    let mut watch = EventReader::open(&env, &uri).await;
    make_many(&env, "cm", 2_000).await;
    tokio::time::sleep(Duration::from_millis(8_300).saturating_sub(opened.elapsed())).await;
    let mut events = vec![];
    while let Some(event) = watch.next().await {
        events.push(event);
    }
    let bookmarks: Vec<usize> =
        (0..events.len()).filter(|i| events[*i]["type"] == "BOOKMARK").collect();
    assert!(!bookmarks.is_empty(), "the final bookmark was sent");
    for &i in &bookmarks {
        let mark = rv_of(&events[i]);
        let later = events[i + 1..].iter().filter(|e| e["type"] == "ADDED").map(rv_of).min();
        if let Some(later) = later {
            assert!(mark < later, "bookmark {mark} sent before the event at {later}");
        }
    }
    // The first bookmark came in the middle of the catch-up (what this test is about): events
    // followed it.
    let after = events[bookmarks[0]..].iter().filter(|e| e["type"] == "ADDED").count();
    assert!(after > 0, "the bookmark came after all {} events", events.len());
}
