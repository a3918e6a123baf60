//! Start-up builds nothing large (issue #3: idle memory under 40 MB): the OpenAPI documents and
//! the type schemas behind strategic merge patch are built on first use, not when the server
//! starts, not while the controllers, scheduler and a simulated node settle, and not for
//! discovery. One test in this file: the build flags are process-wide.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::Api;
use skiff::apiserver::openapi::builds_started;
use skiff::controllers::cluster::wait_for;
use skiff::registry::merge::TypeSchemas;
use skiff::testing::skiff_server::{get, request, InProcessServer};

const T: Duration = Duration::from_secs(60);

fn nothing_large_built(when: &str) {
    assert!(!TypeSchemas::generation_started(), "type schemas generated {when}");
    assert_eq!(builds_started(), (false, false), "OpenAPI (v3, v2) built {when}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_type_schemas_are_built_on_first_use_only() {
    let server = InProcessServer::start_with(|c| {
        if let Some(components) = c.components.as_mut() {
            components.simulate_nodes = 1;
        }
    })
    .await
    .expect("server starts");
    let client = server.client.clone();
    nothing_large_built("at start-up");

    // The components have done their start-up work: the node registered and is ready, the
    // service account controller made the default namespace's account.
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for(T, "a ready node", || async {
        let list = nodes.list(&Default::default()).await.ok()?;
        let ready = list.items.iter().any(|n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        ready.then_some(())
    })
    .await
    .expect("node");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_for(T, "the default service account", || async {
        accounts.get_opt("default").await.ok()?
    })
    .await
    .expect("service account");
    // A background build would have begun by now; give a slow machine a little longer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nothing_large_built("while the components started");

    // Discovery, as kubectl does first, builds neither.
    for path in ["/api", "/apis", "/api/v1", "/apis/apps/v1"] {
        let r = get(&client, path).await.expect("discovery");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    nothing_large_built("for discovery");

    // A strategic merge patch generates the type schemas, and only them.
    let body =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"lazy"},"data":{"a":"1"}}"#;
    let json = [("content-type", "application/json")];
    let r = request(&client, "POST", "/api/v1/namespaces/default/configmaps", &json, body.to_vec())
        .await
        .expect("create");
    assert_eq!(r.status, 201, "{}", r.body);
    nothing_large_built("by a create");
    let smp = [("content-type", "application/strategic-merge-patch+json")];
    let r = request(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/lazy",
        &smp,
        br#"{"data":{"b":"2"}}"#.to_vec(),
    )
    .await
    .expect("patch");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["b"], "2");
    assert!(TypeSchemas::is_built(), "the patch generated the type schemas");
    assert_eq!(builds_started(), (false, false), "a patch builds no OpenAPI document");

    // The first OpenAPI request builds the v3 documents; v2 waits for its own first request.
    let r = get(&client, "/openapi/v3").await.expect("openapi v3 index");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["paths"]["api/v1"]["serverRelativeURL"].is_string(), "{}", r.body);
    assert_eq!(builds_started(), (true, false));
    let r = get(&client, "/openapi/v3/apis/apps/v1").await.expect("apps/v1 document");
    assert_eq!(r.status, 200);
    assert!(r.json()["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
    let r = get(&client, "/openapi/v2").await.expect("openapi v2");
    assert_eq!(r.status, 200);
    assert!(r.json()["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
    assert_eq!(builds_started(), (true, true));
    server.stop().await.expect("stop");
}
