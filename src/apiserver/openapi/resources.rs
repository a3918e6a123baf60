//! Which resources the OpenAPI documents describe: per group-version, each resource's plural,
//! kind, scope, verbs and subresources.
//!
//! A private list for now, derived from the kinds k8s-openapi knows plus a small table of
//! exceptions; it mirrors the shape of the registry's resource catalog so the documents can
//! switch to the catalog once it is in the tree.

use crate::registry::merge::{Scope, TypeSchemas};

/// The group-versions skiff serves, core first.
pub const GROUP_VERSIONS: &[(&str, &str)] = &[
    ("", "v1"),
    ("admissionregistration.k8s.io", "v1"),
    ("apiextensions.k8s.io", "v1"),
    ("apps", "v1"),
    ("autoscaling", "v1"),
    ("autoscaling", "v2"),
    ("batch", "v1"),
    ("certificates.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    ("discovery.k8s.io", "v1"),
    ("events.k8s.io", "v1"),
    ("flowcontrol.apiserver.k8s.io", "v1"),
    ("networking.k8s.io", "v1"),
    ("node.k8s.io", "v1"),
    ("policy", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
    ("scheduling.k8s.io", "v1"),
    ("storage.k8s.io", "v1"),
];

/// One served resource.
#[derive(Debug, Clone)]
pub struct Served {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub subresources: Vec<ServedSub>,
}

/// One subresource: its name, the (group, version, kind) it speaks (None: the parent's), verbs.
#[derive(Debug, Clone)]
pub struct ServedSub {
    pub name: &'static str,
    pub kind: Option<(&'static str, &'static str, &'static str)>,
    pub verbs: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const CONNECT: &[&str] = &["create", "get"];
const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];

fn sub(name: &'static str, verbs: &'static [&'static str]) -> ServedSub {
    ServedSub {
        name,
        kind: None,
        verbs,
    }
}

fn sub_kind(
    name: &'static str,
    kind: (&'static str, &'static str, &'static str),
    verbs: &'static [&'static str],
) -> ServedSub {
    ServedSub {
        name,
        kind: Some(kind),
        verbs,
    }
}

/// Subresources of a resource, by group and plural.
fn subresources(group: &str, plural: &str) -> Vec<ServedSub> {
    let status = || sub("status", GET_PATCH_UPDATE);
    let scale = || sub_kind("scale", ("autoscaling", "v1", "Scale"), GET_PATCH_UPDATE);
    match (group, plural) {
        ("", "pods") => vec![
            sub_kind("attach", ("", "v1", "PodAttachOptions"), CONNECT),
            sub_kind("binding", ("", "v1", "Binding"), &["create"]),
            sub("ephemeralcontainers", GET_PATCH_UPDATE),
            sub_kind("eviction", ("policy", "v1", "Eviction"), &["create"]),
            sub_kind("exec", ("", "v1", "PodExecOptions"), CONNECT),
            sub("log", &["get"]),
            sub_kind("portforward", ("", "v1", "PodPortForwardOptions"), CONNECT),
            sub_kind("proxy", ("", "v1", "PodProxyOptions"), PROXY),
            sub("resize", GET_PATCH_UPDATE),
            status(),
        ],
        ("", "nodes") => vec![
            sub_kind("proxy", ("", "v1", "NodeProxyOptions"), PROXY),
            status(),
        ],
        ("", "services") => vec![
            sub_kind("proxy", ("", "v1", "ServiceProxyOptions"), PROXY),
            status(),
        ],
        ("", "namespaces") => vec![sub("finalize", &["update"]), status()],
        ("", "serviceaccounts") => vec![sub_kind(
            "token",
            ("authentication.k8s.io", "v1", "TokenRequest"),
            &["create"],
        )],
        ("", "replicationcontrollers")
        | ("apps", "deployments")
        | ("apps", "replicasets")
        | ("apps", "statefulsets") => vec![scale(), status()],
        ("certificates.k8s.io", "certificatesigningrequests") => {
            vec![sub("approval", GET_PATCH_UPDATE), status()]
        }
        ("", "persistentvolumeclaims" | "persistentvolumes" | "resourcequotas")
        | ("apps", "daemonsets")
        | ("batch", _)
        | ("autoscaling", "horizontalpodautoscalers")
        | ("networking.k8s.io", "ingresses" | "servicecidrs")
        | ("policy", "poddisruptionbudgets")
        | ("storage.k8s.io", "volumeattachments")
        | ("admissionregistration.k8s.io", "validatingadmissionpolicies")
        | ("flowcontrol.apiserver.k8s.io", _)
        | ("apiextensions.k8s.io", _) => vec![status()],
        _ => Vec::new(),
    }
}

/// Verbs of a resource, by group and plural.
fn verbs(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "bindings") => &["create"],
        ("", "componentstatuses") => &["get", "list"],
        ("", "namespaces") => &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        _ => ALL_VERBS,
    }
}

/// Every served resource, in group-version order.
pub fn served() -> Vec<Served> {
    let schemas = TypeSchemas::get();
    let mut out = Vec::new();
    for &(group, version) in GROUP_VERSIONS {
        for k in schemas
            .kinds
            .iter()
            .filter(|k| k.group == group && k.version == version)
        {
            let namespaced = match k.scope {
                Scope::Namespaced => true,
                Scope::Cluster => false,
                Scope::Subresource => continue,
            };
            if k.list_kind.is_none() && k.kind != "Binding" {
                continue;
            }
            if k.kind == "ComponentStatus" {
                continue;
            }
            out.push(Served {
                group,
                version,
                kind: k.kind,
                plural: k.plural,
                namespaced,
                verbs: verbs(group, k.plural),
                subresources: subresources(group, k.plural),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_resources_are_served() {
        let all = served();
        let find = |g: &str, p: &str| all.iter().find(|r| r.group == g && r.plural == p);
        let pods = find("", "pods").expect("pods");
        assert!(pods.namespaced && pods.verbs.contains(&"watch"));
        assert!(pods.subresources.iter().any(|s| s.name == "eviction"));
        assert!(find("apps", "deployments").is_some());
        assert!(!find("", "namespaces").expect("namespaces").namespaced);
        assert_eq!(
            all.iter()
                .filter(|r| r.plural == "horizontalpodautoscalers")
                .count(),
            2
        );
        for (g, v) in GROUP_VERSIONS {
            assert!(
                all.iter().any(|r| r.group == *g && r.version == *v),
                "{g}/{v}"
            );
        }
    }
}
