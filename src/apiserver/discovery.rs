//! Discovery: /api (APIVersions), /apis (APIGroupList), /apis/<group> (APIGroup), and
//! /api/v1 and /apis/<group>/<version> (APIResourceList), all built from the resource catalog;
//! plus aggregated discovery (apidiscovery.k8s.io v2 and v2beta1 APIGroupDiscoveryList) on /api
//! and /apis when the Accept header asks for it, as kubectl 1.27+ does.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::request::{MediaType, Target};
use super::status::ApiError;
use crate::registry::catalog::{catalog, GroupInfo, ResourceInfo};

/// Answers a discovery request for `target`.
pub fn serve(target: &Target, headers: &HeaderMap) -> Result<Response, ApiError> {
    let aggregated = aggregated_version(headers);
    match target {
        Target::ApiRoot => match aggregated {
            Some(v) => Ok(aggregated_response(&v, &legacy_group_list(&v))),
            None => Ok(json_response(api_versions(headers))),
        },
        Target::ApisRoot => match aggregated {
            Some(v) => Ok(aggregated_response(&v, &group_discovery_list(&v))),
            None => Ok(json_response(api_group_list())),
        },
        Target::Group(g) => {
            let group = named_groups().into_iter().find(|x| x.name == g).ok_or_else(not_found)?;
            let mut v = api_group(&group);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            Ok(json_response(v))
        }
        Target::GroupVersion { group, version } => {
            let list = resource_list(group, version).ok_or_else(not_found)?;
            Ok(json_response(list))
        }
        Target::Resource(_) => Err(not_found()),
    }
}

/// The APIResourceList of one group-version; None if it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<&ResourceInfo> = catalog().group_version(group, version).collect();
    if resources.is_empty() {
        return None;
    }
    let mut out = vec![];
    for r in resources {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
            "storageVersionHash": r.storage_version_hash(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        out.push(entry);
        for s in r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind.map_or(r.kind, |k| k.2),
                "verbs": s.verbs,
            });
            if let Some((g, v, _)) = s.kind {
                if g != r.group || v != r.version {
                    sub["group"] = json!(g);
                    sub["version"] = json!(v);
                }
            }
            out.push(sub);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

/// The media type for aggregated discovery, if the Accept header asks for it ("v2"/"v2beta1").
fn aggregated_version(headers: &HeaderMap) -> Option<String> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for item in accept.split(',') {
        let m = MediaType::parse(item);
        if m.essence == "application/json"
            && m.param("g") == Some("apidiscovery.k8s.io")
            && m.param("as") == Some("APIGroupDiscoveryList")
        {
            if let Some(v @ ("v2" | "v2beta1")) = m.param("v") {
                return Some(v.to_string());
            }
        }
        if m.essence == "application/json" && m.param("as").is_none() {
            // Plain JSON comes first: the client prefers the unaggregated documents.
            return None;
        }
    }
    None
}

fn api_versions(headers: &HeaderMap) -> Value {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    })
}

fn named_groups() -> Vec<GroupInfo> {
    catalog().groups().into_iter().filter(|g| !g.name.is_empty()).collect()
}

fn api_group(g: &GroupInfo) -> Value {
    let versions: Vec<Value> = g
        .versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{}/{v}", g.name), "version": v}))
        .collect();
    json!({"name": g.name, "versions": versions, "preferredVersion": versions[0].clone()})
}

fn api_group_list() -> Value {
    let groups: Vec<Value> = named_groups().iter().map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn legacy_group_list(version: &str) -> Value {
    let core = GroupInfo { name: "", versions: vec!["v1"] };
    discovery_list(version, &[core])
}

fn group_discovery_list(version: &str) -> Value {
    discovery_list(version, &named_groups())
}

fn discovery_list(version: &str, groups: &[GroupInfo]) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            let versions: Vec<Value> = g
                .versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> =
                        catalog().group_version(g.name, v).map(discovery_resource).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g.name, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

fn discovery_resource(r: &ResourceInfo) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|s| {
                let (g, ver, k) = s.kind.unwrap_or((r.group, r.version, r.kind));
                json!({"subresource": s.name, "responseKind": {"group": g, "version": ver, "kind": k}, "verbs": s.verbs})
            })
            .collect();
        v["subresources"] = json!(subs);
    }
    v
}

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), (header::VARY, "Accept")],
        serde_json::to_vec(&v).unwrap_or_default(),
    )
        .into_response()
}

fn aggregated_response(version: &str, v: &Value) -> Response {
    let ctype =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, ctype.as_str()), (header::VARY, "Accept")],
        serde_json::to_vec(v).unwrap_or_default(),
    )
        .into_response()
}

fn not_found() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
        .with_details(Default::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_include_subresources() {
        let v = resource_list("apps", "v1").unwrap();
        assert_eq!(v["groupVersion"], "apps/v1");
        let names: Vec<&str> = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments"));
        assert!(names.contains(&"deployments/scale"));
        let scale = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("apps", "v2").is_none());
    }

    #[test]
    fn aggregated_discovery_is_chosen_by_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
                .parse()
                .unwrap(),
        );
        assert_eq!(aggregated_version(&h).as_deref(), Some("v2"));
        let list = group_discovery_list("v2");
        let apps = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["shortNames"][0], "deploy");
        let autoscaling = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "autoscaling")
            .unwrap();
        assert_eq!(autoscaling["versions"][0]["version"], "v2");
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert_eq!(aggregated_version(&h), None);
    }
}
