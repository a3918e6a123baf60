//! What kubectl needs from the documents, and the HTTP behaviour of the routes.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use super::*;

fn doc(group: &str, version: &str) -> Value {
    let d = document(group, version).expect("served");
    serde_json::from_slice(&d.body).expect("json")
}

/// Follows `$ref` (directly or through a single `allOf`) to the named schema.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let target = schema
        .get("$ref")
        .or_else(|| schema.get("allOf").and_then(|a| a.get(0)).and_then(|a| a.get("$ref")))
        .and_then(Value::as_str);
    match target.and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => schema,
    }
}

#[test]
fn apps_v1_describes_deployments_as_kubectl_needs() {
    let d = doc("apps", "v1");
    assert_eq!(d["openapi"], "3.0.0");
    let deployment = &d["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        serde_json::json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    // kubectl explain deployment.spec.strategy
    let spec = resolve(&d, &deployment["properties"]["spec"]);
    let strategy_field = &spec["properties"]["strategy"];
    assert_eq!(strategy_field["x-kubernetes-patch-strategy"], "retainKeys");
    let strategy = resolve(&d, strategy_field);
    assert!(strategy["properties"]["rollingUpdate"].is_object());
    assert!(strategy["properties"]["type"].is_object());
    // kubectl apply's patch computation: merge keys on containers
    let template = resolve(&d, &spec["properties"]["template"]);
    let pod_spec = resolve(&d, &template["properties"]["spec"]);
    let containers = &pod_spec["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    let container = resolve(&d, &containers["items"]);
    assert_eq!(container["properties"]["env"]["x-kubernetes-patch-merge-key"], "name");
    // The patch operation: GVK, strategic merge patch, fieldValidation.
    let patch = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    let content = &patch["requestBody"]["content"];
    for media in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content[media].is_object(), "{media}");
    }
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in ["dryRun", "fieldManager", "fieldValidation", "force"] {
        assert!(params.contains(&p), "{p}");
    }
}

#[test]
fn every_patch_operation_detects_field_validation() {
    // kubectl looks at the first PATCH operation carrying the kind's GVK (in any order), so every
    // one of them must list fieldValidation among its own query parameters.
    for d in document::documents() {
        let v: Value = serde_json::from_slice(&d.body).expect("json");
        for (path, item) in v["paths"].as_object().expect("paths") {
            let Some(patch) = item.get("patch") else {
                continue;
            };
            if patch["x-kubernetes-action"] == "connect" {
                continue;
            }
            assert!(patch["x-kubernetes-group-version-kind"].is_object(), "{path}");
            let has = patch["parameters"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
            });
            assert!(has, "{path}");
        }
    }
}

#[test]
fn every_kind_of_a_group_version_has_a_schema_with_its_gvk() {
    for (group, version) in resources::group_versions() {
        let d = doc(group, version);
        let schemas = d["components"]["schemas"].as_object().expect("schemas");
        for r in resources::served().iter().filter(|r| r.group == group && r.version == version) {
            let found = schemas.values().any(|s| {
                s["x-kubernetes-group-version-kind"].as_array().is_some_and(|gvks| {
                    gvks.iter().any(|g| {
                        g["group"] == group && g["version"] == version && g["kind"] == r.kind
                    })
                })
            });
            assert!(found, "{group}/{version} {}", r.kind);
        }
        let text =
            String::from_utf8_lossy(&document(group, version).expect("doc").body).to_string();
        assert!(!text.contains("$defs"), "{group}/{version}");
        for r in text.split("\"$ref\":\"").skip(1) {
            let target = r.split('"').next().unwrap_or_default();
            let name = target.strip_prefix("#/components/schemas/").expect("component ref");
            assert!(schemas.contains_key(name), "{group}/{version}: dangling {target}");
        }
    }
}

#[test]
fn core_v1_has_pods_and_meta_types() {
    let d = doc("", "v1");
    let schemas = &d["components"]["schemas"];
    assert!(schemas["io.k8s.api.core.v1.Pod"].is_object());
    assert!(schemas["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"].is_array());
    let meta = &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
    assert_eq!(meta["finalizers"]["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(meta["ownerReferences"]["x-kubernetes-patch-merge-key"], "uid");
    let list = &d["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    assert_eq!(list["x-kubernetes-action"], "list");
    assert_eq!(list["operationId"], "listCoreV1NamespacedPod");
    let create = &d["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"];
    assert_eq!(create["x-kubernetes-action"], "post");
    assert!(d["paths"]["/api/v1/pods"]["get"].is_object());
    assert!(d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"].is_object());
    assert_eq!(
        d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
            ["x-kubernetes-group-version-kind"]["group"],
        "policy"
    );
}

#[test]
fn index_lists_every_group_version() {
    let index = index_json();
    let paths = index["paths"].as_object().expect("paths");
    for key in [
        "api/v1",
        "apis/apps/v1",
        "apis/autoscaling/v1",
        "apis/autoscaling/v2",
        "apis/rbac.authorization.k8s.io/v1",
    ] {
        let url = paths[key]["serverRelativeURL"].as_str().expect(key);
        assert!(url.starts_with(&format!("/openapi/v3/{key}?hash=")), "{url}");
    }
    assert_eq!(paths.len(), resources::group_versions().len());
}

async fn get(uri: &str) -> axum::response::Response {
    openapi_router()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response")
}

#[tokio::test]
async fn routes_serve_the_index_and_cacheable_documents() {
    let response = get("/openapi/v3").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let index: Value = serde_json::from_slice(&body).expect("json");
    let url =
        index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("url").to_string();

    let response = get(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, immutable");
    assert!(response.headers().contains_key("etag"));
    assert_eq!(response.headers()["content-type"], "application/json");

    let stale = get("/openapi/v3/apis/apps/v1?hash=0000").await;
    assert_eq!(stale.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(stale.headers()["location"], url.as_str());

    let plain = get("/openapi/v3/api/v1").await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(plain.headers()["cache-control"], "no-cache, private");

    assert_eq!(get("/openapi/v3/apis/example.com/v1").await.status(), StatusCode::NOT_FOUND);
}
