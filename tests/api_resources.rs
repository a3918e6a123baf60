//! The REST API driven through kube-rs and raw requests over `api_router` on a real store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{json, Value};
use skiff::apiserver::handlers::api_router;
use skiff::apiserver::UserInfo;
use skiff::store::sqlite::{SqliteBackend, SqliteOptions};
use skiff::store::{CacheOptions, Store};
use tower::ServiceExt;

struct Env {
    router: axum::Router,
    store: Store,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = SqliteBackend::open(&dir.path().join("state.db"), SqliteOptions::default())
        .expect("open sqlite");
    let store = Store::open(Arc::new(backend), CacheOptions::default()).await.expect("open store");
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
    let client = kube::Client::new(router.clone(), "default");
    Env { router, client, store, _dir: dir }
}

/// A raw request: (status, headers, body as JSON or text).
async fn raw(
    env: &Env,
    method: &str,
    uri: &str,
    ctype: &str,
    body: &str,
    accept: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if !ctype.is_empty() {
        b = b.header("content-type", ctype);
    }
    if !accept.is_empty() {
        b = b.header("accept", accept);
    }
    let resp =
        env.router.clone().oneshot(b.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn defaults_exist() {
    let env = env().await;
    let ns: Api<Namespace> = Api::all(env.client.clone());
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
    let d = ns.get("default").await.unwrap();
    assert_eq!(d.status.unwrap().phase.as_deref(), Some("Active"));
    let svc: Api<Service> = Api::namespaced(env.client.clone(), "default");
    let k = svc.get("kubernetes").await.unwrap();
    assert_eq!(k.spec.unwrap().cluster_ip.as_deref(), Some("10.43.0.1"));
}

#[tokio::test]
async fn configmap_crud_with_metadata() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let created =
        api.create(&PostParams::default(), &cm("one", json!({"app": "web"}))).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let rv: i64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(rv > 0);
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(meta.managed_fields.as_ref().is_some_and(|m| !m.is_empty()));

    let got = api.get("one").await.unwrap();
    assert_eq!(got.metadata.resource_version, created.metadata.resource_version);

    // Update with the current resourceVersion succeeds, with a stale one conflicts.
    let mut changed = got.clone();
    changed.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = api.replace("one", &PostParams::default(), &changed).await.unwrap();
    assert_ne!(updated.metadata.resource_version, got.metadata.resource_version);
    let err = api.replace("one", &PostParams::default(), &changed).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                "Operation cannot be fulfilled on configmaps \"one\": the object has been modified; please apply your changes to the latest version and try again"
            );
        }
        other => panic!("{other:?}"),
    }

    // Merge patch and JSON patch.
    let p = api
        .patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {"extra": "1"}})))
        .await
        .unwrap();
    assert_eq!(p.data.as_ref().unwrap()["extra"], "1");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/data/extra"}])).unwrap();
    let p = api.patch("one", &PatchParams::default(), &Patch::<()>::Json(jp)).await.unwrap();
    assert!(!p.data.as_ref().unwrap().contains_key("extra"));

    // Delete answers with a Success status, then the object is gone.
    let deleted = api.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right());
    assert!(matches!(api.get("one").await, Err(kube::Error::Api(s)) if s.code == 404));
}

#[tokio::test]
async fn generate_name_and_namespace_checks() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let obj: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let made = api.create(&PostParams::default(), &obj).await.unwrap();
    let name = made.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(name[4..].bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));

    let missing: Api<ConfigMap> = Api::namespaced(env.client.clone(), "nope");
    match missing.create(&PostParams::default(), &cm("x", json!({}))).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.message, "namespaces \"nope\" not found");
        }
        other => panic!("{other:?}"),
    }

    let (code, _, body) = raw(
        &env,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","namespace":"other"}}"#,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    let (code, _, body) = raw(
        &env,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"a"}}"#,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("does not match the expected API version"));

    let (code, _, body) = raw(
        &env,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");

    let (code, _, body) = raw(
        &env,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        "{not json",
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["kind"], "Status");

    let (code, _, _) =
        raw(&env, "POST", "/api/v1/namespaces/default/configmaps", "application/cbor", "x", "")
            .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (code, _, body) = raw(
        &env,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n",
        "application/yaml",
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    assert!(body.as_str().unwrap().contains("name: from-yaml"));
}

#[tokio::test]
async fn field_validation_modes() {
    let env = env().await;
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fv"},"data":{"a":"b"},"spec":{"foo":1}}"#;
    let (code, _, v) = raw(
        &env,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        body,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: \
         unknown field \"spec\""
    );
    let (code, headers, v) = raw(
        &env,
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Warn",
        "application/json",
        body,
        "",
    )
    .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(headers.get("warning").unwrap(), "299 - \"unknown field \\\"spec\\\"\"");
    assert!(v.get("spec").is_none());
}

#[tokio::test]
async fn selectors_and_pagination() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    for i in 0..7 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({"tier": tier, "n": i.to_string()})),
        )
        .await
        .unwrap();
    }
    let front = api.list(&ListParams::default().labels("tier=front")).await.unwrap();
    assert_eq!(front.items.len(), 4);
    let notin = api.list(&ListParams::default().labels("tier notin (front),n")).await.unwrap();
    assert_eq!(notin.items.len(), 3);
    let by_name = api.list(&ListParams::default().fields("metadata.name=c3")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);

    // Pages of 3 with a selector: every matching item once.
    let mut seen = vec![];
    let mut lp = ListParams::default().labels("tier=front").limit(3);
    loop {
        let page = api.list(&lp).await.unwrap();
        seen.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(seen, vec!["c0", "c2", "c4", "c6"]);

    let (code, _, v) = raw(
        &env,
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
        "",
        "",
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    let (code, _, v) = raw(
        &env,
        "GET",
        "/api/v1/namespaces/default/configmaps?fieldSelector=spec.foo%3Dx",
        "",
        "",
        "",
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["message"],
        "\"spec.foo\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    );
    let (code, _, _) =
        raw(&env, "GET", "/api/v1/namespaces/default/configmaps?continue=garbage", "", "", "")
            .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn table_output() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    api.create(&PostParams::default(), &cm("tbl", json!({}))).await.unwrap();
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (code, _, t) =
        raw(&env, "GET", "/api/v1/namespaces/default/configmaps", "", "", accept).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["columnDefinitions"][0]["name"], "Name");
    let row = &t["rows"][0];
    assert_eq!(row["cells"][0], "tbl");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(row["object"]["metadata"]["name"], "tbl");
    let (code, _, t) = raw(
        &env,
        "GET",
        "/api/v1/namespaces/default/configmaps/tbl?includeObject=Object",
        "",
        "",
        accept,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(t["rows"][0]["object"]["kind"], "ConfigMap");
    let (code, _, _) = raw(
        &env,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        "",
        "",
        "application/vnd.kubernetes.protobuf",
    )
    .await;
    assert_eq!(code, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn discovery_documents() {
    let env = env().await;
    let (_, _, v) = raw(&env, "GET", "/api", "", "", "").await;
    assert_eq!(v["versions"][0], "v1");
    let (_, _, v) = raw(&env, "GET", "/apis", "", "", "").await;
    assert!(v["groups"].as_array().unwrap().iter().any(|g| g["name"] == "apps"));
    let (_, headers, v) = raw(
        &env,
        "GET",
        "/apis",
        "",
        "",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
    )
    .await;
    assert_eq!(v["kind"], "APIGroupDiscoveryList");
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let (_, _, v) = raw(&env, "GET", "/api/v1", "", "", "").await;
    assert!(v["resources"].as_array().unwrap().iter().any(|r| r["name"] == "pods/log"));
    let pods = v["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
    assert_eq!(pods["storageVersionHash"], "xPOwRZ+Yhw8=", "as a v1.33 kube-apiserver says");
    let (code, _, _) = raw(&env, "GET", "/apis/nope/v1", "", "", "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // kube-rs discovery walks all of it.
    let d = kube::Discovery::new(env.client.clone()).run().await.unwrap();
    assert!(d.has_group("apps"));
}

#[tokio::test]
async fn watch_streams_changes() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let first = api.create(&PostParams::default(), &cm("w0", json!({"app": "w"}))).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    let wp = WatchParams::default().labels("app=w").timeout(10);
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("w1", json!({"app": "w"}))).await.unwrap();
    api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"data": {"x": "y"}})))
        .await
        .unwrap();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    let mut kinds = vec![];
    while kinds.len() < 3 {
        match stream.try_next().await.unwrap() {
            Some(WatchEvent::Added(c)) => kinds.push(format!("ADDED {}", c.metadata.name.unwrap())),
            Some(WatchEvent::Modified(c)) => {
                kinds.push(format!("MODIFIED {}", c.metadata.name.unwrap()))
            }
            Some(WatchEvent::Deleted(c)) => {
                kinds.push(format!("DELETED {}", c.metadata.name.unwrap()))
            }
            Some(WatchEvent::Bookmark(_)) => {}
            Some(WatchEvent::Error(e)) => panic!("{e:?}"),
            None => break,
        }
    }
    assert_eq!(kinds, vec!["ADDED w1", "MODIFIED w1", "DELETED w1"]);

    // A kube-runtime watcher sees the initial state.
    let events: Vec<_> =
        kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default())
            .take(3)
            .try_collect()
            .await
            .unwrap();
    assert!(matches!(events[0], kube::runtime::watcher::Event::Init));
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    let mut obj = cm("fin", json!({}));
    obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &obj).await.unwrap();
    let marked = api.delete("fin", &DeleteParams::default()).await.unwrap();
    let marked = marked.left().expect("object, not status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(api.get("fin").await.is_ok());
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(matches!(api.get("fin").await, Err(kube::Error::Api(s)) if s.code == 404));

    // Foreground records its finalizer.
    api.create(&PostParams::default(), &cm("fg", json!({}))).await.unwrap();
    let marked = api.delete("fg", &DeleteParams::foreground()).await.unwrap().left().unwrap();
    assert_eq!(marked.metadata.finalizers.unwrap(), vec!["foregroundDeletion"]);

    // Preconditions.
    let c = api.create(&PostParams::default(), &cm("pre", json!({}))).await.unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete("pre", &dp).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert!(
                s.message.contains("Precondition failed: UID in precondition: wrong"),
                "{}",
                s.message
            );
        }
        other => panic!("{other:?}"),
    }
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: c.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    api.delete("pre", &dp).await.unwrap();
}

#[tokio::test]
async fn server_side_apply_and_conflicts() {
    let env = env().await;
    let api: Api<Deployment> = Api::default_namespaced(env.client.clone());
    let cfg = |replicas: i32| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        })
    };
    let d = api.patch("web", &PatchParams::apply("alice"), &Patch::Apply(cfg(1))).await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(d.metadata.generation, Some(1));
    let mf = d.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    match api.patch("web", &PatchParams::apply("bob"), &Patch::Apply(cfg(3))).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.message, "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas");
        }
        other => panic!("{other:?}"),
    }
    let d =
        api.patch("web", &PatchParams::apply("bob").force(), &Patch::Apply(cfg(3))).await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));
    assert_eq!(d.metadata.generation, Some(2));

    // Scale subresource.
    let s = api.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(3));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=web"));
    api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("web").await.unwrap().spec.unwrap().replicas, Some(5));

    // Status changes through the main resource are ignored; /status takes only status.
    let mut d = api.get("web").await.unwrap();
    d.status = Some(serde_json::from_value(json!({"replicas": 9})).unwrap());
    let after = api.replace("web", &PostParams::default(), &d).await.unwrap();
    assert!(after.status.as_ref().and_then(|s| s.replicas).is_none());
    let st = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 4}, "spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().replicas, Some(4));
    assert_eq!(st.spec.unwrap().replicas, Some(5));
}

#[tokio::test]
async fn pods_default_and_delete_gracefully() {
    let env = env().await;
    let api: Api<Pod> = Api::default_namespaced(env.client.clone());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})).unwrap();
    let p = api.create(&PostParams::default(), &pod).await.unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.containers[0].image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    // Unscheduled: deleted at once.
    api.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(api.get("p").await.is_err());

    let mut scheduled = pod.clone();
    scheduled.spec.as_mut().unwrap().node_name = Some("n1".into());
    api.create(&PostParams::default(), &scheduled).await.unwrap();
    let marked = api.delete("p", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(30));
    api.delete("p", &DeleteParams::default().grace_period(0)).await.unwrap();
    assert!(api.get("p").await.is_err());
}

/// A paged list stays consistent while far more writes than the store's revision floor happen
/// between pages: its continue token lasts minutes, as against etcd behind kube-apiserver.
#[tokio::test(flavor = "multi_thread")]
async fn continue_tokens_survive_heavy_writes_between_pages() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    for i in 0..20 {
        api.create(&PostParams::default(), &cm(&format!("p{i:02}"), json!({"v": "0"})))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(5)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("more pages");
    // 1,200 writes: more revisions than SQLite keeps by count; then long enough for an
    // automatic compaction run (every 5 s).
    let hot = api.create(&PostParams::default(), &cm("hot", json!({}))).await.unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..300 {
                    let patch = json!({"data": {format!("w{w}"): i.to_string()}});
                    api.patch("hot", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let latest = api.get("hot").await.unwrap();
    let written = latest.metadata.resource_version.unwrap().parse::<i64>().unwrap()
        - hot.metadata.resource_version.unwrap().parse::<i64>().unwrap();
    assert!(written >= 1_200, "{written} revisions written");
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;

    let mut names: Vec<String> =
        first.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    let mut lp = ListParams::default().limit(5).continue_token(&token);
    loop {
        let page = api.list(&lp).await.expect("the continue token is still good");
        assert_eq!(page.metadata.resource_version, first.metadata.resource_version);
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let expected: Vec<String> = (0..20).map(|i| format!("p{i:02}")).collect();
    assert_eq!(names, expected, "the list shows the state of its first page: no 'hot'");
}

/// Patches without a resourceVersion never fail with a conflict, however many clients patch
/// one object at once: the server retries them from a fresh read (upstream's guaranteed update).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_of_one_object_all_apply() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    api.create(&PostParams::default(), &cm("shared", json!({}))).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let patch = json!({"data": {format!("w{w}"): i.to_string()}});
                    api.patch("shared", &PatchParams::default(), &Patch::Merge(&patch)).await?;
                }
                Ok::<_, kube::Error>(())
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap().expect("every patch applies");
    }
    let data = api.get("shared").await.unwrap().data.unwrap();
    assert_eq!(data.len(), 9, "{data:?}");
    assert!((0..8).all(|w| data[&format!("w{w}")] == "99"), "{data:?}");
}

/// A continue token whose revision has been compacted gets upstream's 410 Expired, and the
/// Status carries a token that lists on from the same key at the latest revision.
#[tokio::test]
async fn an_expired_continue_token_offers_one_that_lists_on_at_the_latest_revision() {
    let env = env().await;
    let api: Api<ConfigMap> = Api::default_namespaced(env.client.clone());
    for i in 0..6 {
        api.create(&PostParams::default(), &cm(&format!("e{i}"), json!({}))).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.expect("more pages");
    api.create(&PostParams::default(), &cm("e9", json!({}))).await.unwrap();
    api.delete("e3", &DeleteParams::default()).await.unwrap();
    env.store.compact(env.store.revision()).await.unwrap();

    let uri = format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}");
    let (code, _, status) = raw(&env, "GET", &uri, "", "", "").await;
    assert_eq!(code, StatusCode::GONE, "{status}");
    assert_eq!(status["reason"], "Expired");
    assert!(status["message"].as_str().unwrap().starts_with("The provided continue parameter"));
    let inconsistent = status["metadata"]["continue"].as_str().expect("a token to go on with");

    let mut names = vec![];
    let mut lp = ListParams::default().limit(2).continue_token(inconsistent);
    loop {
        let page = api.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(names, vec!["e2", "e4", "e5", "e9"], "the rest, as it is now");
}
