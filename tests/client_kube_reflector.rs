//! kube-rs's watcher and reflector against a real skiff server over HTTPS: the initial state is
//! fetched either as a paginated list (page size 7 over 50 ConfigMaps, so continue tokens are
//! followed) or as a streaming list (watch with sendInitialEvents, ended by the
//! initial-events-end bookmark), and the reflector's store must then follow creates, updates and
//! deletes until it holds exactly the server's objects, across watch restarts that resume from
//! bookmarks. A raw watch with a short timeout must see a BOOKMARK before the server ends it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::api::{WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use skiff::testing::skiff_server::InProcessServer;

const OBJECTS: usize = 50;
const PAGE: u32 = 7;
/// Server-side timeout of the watcher's watches: short, so the test sees them restart from the
/// last bookmark's resourceVersion.
const WATCH_TIMEOUT_SECS: u32 = 3;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client from the server's kubeconfig that records every request's method, path and query.
async fn recording_client(server: &InProcessServer) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let kc = Kubeconfig::read_from(&server.kubeconfig).expect("read kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    config.default_retry = false;
    let recorder = log.clone();
    let layer =
        tower::util::MapRequestLayer::new(move |req: axum::http::Request<kube::client::Body>| {
            if let Some(pq) = req.uri().path_and_query() {
                recorder.lock().unwrap().push(format!("{} {pq}", req.method()));
            }
            req
        });
    let client = kube::client::ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&layer)
        .build();
    (client, log)
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(BTreeMap::from([("value".to_string(), value.to_string())])),
        ..Default::default()
    }
}

/// name → (resourceVersion, data.value)
type Snapshot = BTreeMap<String, (String, String)>;

fn snapshot<'a>(items: impl IntoIterator<Item = &'a ConfigMap>) -> Snapshot {
    items
        .into_iter()
        .map(|cm| {
            let value = cm.data.as_ref().and_then(|d| d.get("value")).cloned().unwrap_or_default();
            (
                cm.metadata.name.clone().unwrap_or_default(),
                (cm.metadata.resource_version.clone().unwrap_or_default(), value),
            )
        })
        .collect()
}

async fn server_snapshot(api: &Api<ConfigMap>) -> Snapshot {
    let list = api.list(&ListParams::default()).await.expect("list");
    snapshot(list.items.iter())
}

fn store_snapshot(reader: &reflector::Store<ConfigMap>) -> Snapshot {
    let state = reader.state();
    snapshot(state.iter().map(|a| a.as_ref()))
}

/// Waits until the reflector's store equals the server's list (names, resourceVersions, data).
async fn converge(api: &Api<ConfigMap>, reader: &reflector::Store<ConfigMap>, what: &str) {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let want = server_snapshot(api).await;
        let have = store_snapshot(reader);
        if want == have {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.keys().filter(|k| !have.contains_key(*k)).collect();
            let extra: Vec<_> = have.keys().filter(|k| !want.contains_key(*k)).collect();
            let stale: Vec<_> =
                want.iter().filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v)).collect();
            panic!(
                "{what}: the reflector did not converge within {CONVERGE_TIMEOUT:?}: \
                 missing {missing:?}, extra {extra:?}, stale {stale:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("ns");
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Initial {
    PaginatedList,
    StreamingList,
}

async fn reflector_follows_the_server(initial: Initial) {
    let server = InProcessServer::start().await.expect("server");
    let (client, requests) = recording_client(&server).await;
    let ns = "reflect";
    create_namespace(&client, ns).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..OBJECTS {
        api.create(&PostParams::default(), &configmap(&format!("cm-{i:03}"), "v0"))
            .await
            .expect("create");
    }

    let mut config = watcher::Config::default().page_size(PAGE).timeout(WATCH_TIMEOUT_SECS);
    if initial == Initial::StreamingList {
        config = config.streaming_lists();
    }
    assert!(config.bookmarks, "bookmarks are on by default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let (ev, er) = (events.clone(), errors.clone());
    let task = tokio::spawn(
        reflector(writer, watcher(api.clone(), config)).default_backoff().for_each(move |e| {
            match e {
                Ok(e) => ev.lock().unwrap().push(e.to_string()),
                Err(e) => er.lock().unwrap().push(format!("{e:?}")),
            }
            futures::future::ready(())
        }),
    );

    tokio::time::timeout(CONVERGE_TIMEOUT, reader.wait_until_ready())
        .await
        .expect("the reflector became ready in time")
        .expect("writer alive");
    // The server's state is read through another client, so the log shows only the watcher.
    let truth: Api<ConfigMap> = Api::namespaced(server.client.clone(), ns);
    converge(&truth, &reader, "initial state").await;
    assert_eq!(reader.state().len(), OBJECTS);

    // How the initial state was fetched.
    let seen = requests.lock().unwrap().clone();
    let cm_path = format!("GET /api/v1/namespaces/{ns}/configmaps?");
    let lists: Vec<&String> =
        seen.iter().filter(|r| r.starts_with(&cm_path) && !r.contains("watch=true")).collect();
    let watches: Vec<&String> =
        seen.iter().filter(|r| r.starts_with(&cm_path) && r.contains("watch=true")).collect();
    match initial {
        Initial::PaginatedList => {
            let pages = OBJECTS.div_ceil(PAGE as usize);
            assert_eq!(lists.len(), pages, "one list request per page: {lists:#?}");
            assert!(lists.iter().all(|r| r.contains(&format!("limit={PAGE}"))), "{lists:#?}");
            assert_eq!(
                lists.iter().filter(|r| r.contains("continue=")).count(),
                pages - 1,
                "every page after the first follows a continue token: {lists:#?}"
            );
        }
        Initial::StreamingList => {
            assert!(lists.is_empty(), "a streaming list makes no list request: {lists:#?}");
            let first = watches.first().expect("a watch request");
            assert!(first.contains("sendInitialEvents=true"), "{first}");
            // kube-rs only reports InitDone after the bookmark annotated initial-events-end.
            let log = events.lock().unwrap().clone();
            assert_eq!(log.iter().filter(|e| *e == "InitApply").count(), 0);
            assert!(log.iter().any(|e| e == "InitDone"), "{log:?}");
        }
    }
    assert!(
        watches.iter().all(|r| r.contains("allowWatchBookmarks=true")),
        "watches ask for bookmarks: {watches:#?}"
    );

    // Updates (replace and merge patch), deletes and creates, converging after each batch.
    for i in (0..OBJECTS).step_by(3) {
        let name = format!("cm-{i:03}");
        let mut cm = api.get(&name).await.expect("get");
        cm.data = Some(BTreeMap::from([("value".to_string(), "v1".to_string())]));
        api.replace(&name, &PostParams::default(), &cm).await.expect("replace");
    }
    for i in (1..OBJECTS).step_by(4) {
        let patch = serde_json::json!({"data": {"value": "v2"}});
        api.patch(&format!("cm-{i:03}"), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch");
    }
    converge(&truth, &reader, "after updates").await;

    for i in (0..OBJECTS).step_by(5) {
        api.delete(&format!("cm-{i:03}"), &DeleteParams::default()).await.expect("delete");
    }
    for i in 0..10 {
        api.create(&PostParams::default(), &configmap(&format!("new-{i:02}"), "fresh"))
            .await
            .expect("create");
    }
    converge(&truth, &reader, "after deletes and creates").await;

    // Writes elsewhere move the cluster's revision past every ConfigMap here. Outlive two watch
    // timeouts: the watcher restarts its watch from the last resourceVersion it saw, and the
    // bookmark before each watch's end carries the cluster's progress, so the watch it resumes
    // starts past those writes (and would survive their compaction).
    let own_latest: u64 = store_snapshot(&reader)
        .values()
        .map(|(rv, _)| rv.parse::<u64>().expect("numeric resourceVersion"))
        .max()
        .expect("objects");
    create_namespace(&client, "elsewhere").await;
    let elsewhere: Api<ConfigMap> = Api::namespaced(server.client.clone(), "elsewhere");
    for i in 0..5 {
        elsewhere.create(&PostParams::default(), &configmap(&format!("x{i}"), "x")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2 * WATCH_TIMEOUT_SECS as u64 + 1)).await;
    let resumed_at: u64 = requests
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.starts_with(&cm_path) && r.contains("watch=true"))
        .and_then(|r| r.split("resourceVersion=").nth(1))
        .and_then(|rv| rv.split('&').next())
        .and_then(|rv| rv.parse().ok())
        .expect("a resumed watch with a resourceVersion");
    assert!(
        resumed_at > own_latest + 5,
        "the watch resumed at {resumed_at}, not past the writes elsewhere (own latest {own_latest})"
    );
    for i in (2..OBJECTS).step_by(5) {
        api.delete(&format!("cm-{i:03}"), &DeleteParams::default()).await.expect("delete");
    }
    api.patch(
        "new-00",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"data": {"value": "again"}})),
    )
    .await
    .expect("patch");
    converge(&truth, &reader, "after a watch restart").await;

    let watches_now = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with(&cm_path) && r.contains("watch=true"))
        .count();
    assert!(watches_now >= 2, "the watch restarted after its timeout");
    let relists = events.lock().unwrap().iter().filter(|e| *e == "Init").count();
    assert_eq!(relists, 1, "restarts resume the watch, never re-list");
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "watcher errors: {errors:#?}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_with_paginated_initial_list() {
    reflector_follows_the_server(Initial::PaginatedList).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_with_streaming_initial_list() {
    reflector_follows_the_server(Initial::StreamingList).await;
}

/// A raw watch with allowWatchBookmarks and a short timeout sees a BOOKMARK carrying a current
/// resourceVersion before the server ends it; a watch without bookmarks sees none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_watches_get_a_bookmark_before_they_end() {
    let server = InProcessServer::start().await.expect("server");
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let created = api.create(&PostParams::default(), &configmap("one", "1")).await.expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");

    for bookmarks in [true, false] {
        let mut wp = WatchParams::default().timeout(2);
        if !bookmarks {
            wp = wp.disable_bookmarks();
        }
        let started = Instant::now();
        let stream = api.watch(&wp, &rv).await.expect("watch");
        let events: Vec<WatchEvent<ConfigMap>> =
            tokio::time::timeout(Duration::from_secs(10), stream.try_collect())
                .await
                .expect("the server ends the watch at its timeout")
                .expect("watch stream");
        assert!(started.elapsed() >= Duration::from_secs(1), "the watch lasted until its timeout");
        let marks: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
                _ => None,
            })
            .collect();
        if bookmarks {
            assert_eq!(marks.len(), 1, "one bookmark before the end: {events:?}");
            let at: u64 = marks[0].parse().expect("numeric resourceVersion");
            assert!(at >= rv.parse::<u64>().unwrap(), "bookmark at {at}, object at {rv}");
        } else {
            assert!(marks.is_empty(), "no bookmarks unless allowed: {events:?}");
        }
    }
    // The initial-events-end bookmark of a streaming list is there too.
    let wp = WatchParams::streaming_lists().timeout(2);
    let events: Vec<WatchEvent<ConfigMap>> =
        api.watch(&wp, "0").await.expect("watch").try_collect().await.expect("watch stream");
    let ends = events
        .iter()
        .filter(|e| {
            matches!(e, WatchEvent::Bookmark(b)
                if b.metadata.annotations.contains_key("k8s.io/initial-events-end"))
        })
        .count();
    assert_eq!(ends, 1, "{events:?}");
    assert!(
        matches!(events.first(), Some(WatchEvent::Added(cm)) if cm.metadata.name.as_deref() == Some("one"))
    );
}
