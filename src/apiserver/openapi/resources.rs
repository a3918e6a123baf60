//! Which resources the OpenAPI documents describe: per group-version, each resource's plural,
//! kind, scope, verbs and subresources, as the registry's resource catalog serves them.

use crate::registry::catalog;

/// The served group-versions, core first, as (group, version).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    catalog()
        .groups()
        .into_iter()
        .flat_map(|g| g.versions.into_iter().map(move |v| (g.name, v)))
        .collect()
}

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

/// Every served resource, in catalog order.
pub fn served() -> Vec<Served> {
    catalog()
        .resources
        .iter()
        .map(|r| Served {
            group: r.group,
            version: r.version,
            kind: r.kind,
            plural: r.plural,
            namespaced: r.namespaced,
            verbs: r.verbs,
            subresources: r
                .subresources
                .iter()
                .map(|s| ServedSub { name: s.name, kind: s.kind, verbs: s.verbs })
                .collect(),
        })
        .collect()
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
        assert_eq!(all.iter().filter(|r| r.plural == "horizontalpodautoscalers").count(), 2);
        for (g, v) in group_versions() {
            assert!(all.iter().any(|r| r.group == g && r.version == v), "{g}/{v}");
        }
    }
}
