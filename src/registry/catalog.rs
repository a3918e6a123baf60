//! The resource catalog: every served resource of the built-in GA groups at v1.33, built from
//! k8s-openapi's `Resource` trait so each entry is one line, plus what the trait does not know
//! (short names, categories, verbs, subresources) and the resource's Strategy.
//!
//! One version is served per resource (the storage version), except autoscaling, which serves
//! v1 and v2 of HorizontalPodAutoscaler. Both are stored once, as autoscaling/v2, under the same
//! key; v1 requests and responses are converted (see `resources::hpa`). events.k8s.io/v1 Events
//! are likewise stored as core v1 Events and converted, so both APIs see the same events.

use std::sync::{Arc, OnceLock};

use k8s_openapi::schemars::{JsonSchema, Schema, SchemaGenerator};
use k8s_openapi::{ClusterResourceScope, ListableResource, NamespaceResourceScope, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::resources::{self as res};
use super::strategy::{DefaultStrategy, Strategy};

use k8s_openapi::api::{
    admissionregistration::v1 as admreg, apps::v1 as apps, autoscaling::v1 as as1,
    autoscaling::v2 as as2, batch::v1 as batch, certificates::v1 as certs,
    coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, events::v1 as ev,
    flowcontrol::v1 as flow, networking::v1 as net, node::v1 as node, policy::v1 as policy,
    rbac::v1 as rbac, scheduling::v1 as sched, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

/// The verbs of an ordinary resource.
pub const ALL_VERBS: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
/// The verbs of status, scale and similar subresources.
pub const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];

/// A subresource: its name, the kind it answers with and its verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// (group, version, kind) of the subresource's object; None: the parent's.
    pub kind: Option<(&'static str, &'static str, &'static str)>,
    pub verbs: &'static [&'static str],
}

pub const STATUS: Subresource = Subresource { name: "status", kind: None, verbs: GET_PATCH_UPDATE };
pub const SCALE: Subresource = Subresource {
    name: "scale",
    kind: Some(("autoscaling", "v1", "Scale")),
    verbs: GET_PATCH_UPDATE,
};
const POD_SUBRESOURCES: &[Subresource] = &[
    Subresource {
        name: "attach",
        kind: Some(("", "v1", "PodAttachOptions")),
        verbs: &["create", "get"],
    },
    Subresource { name: "binding", kind: Some(("", "v1", "Binding")), verbs: &["create"] },
    Subresource { name: "ephemeralcontainers", kind: None, verbs: GET_PATCH_UPDATE },
    Subresource { name: "eviction", kind: Some(("policy", "v1", "Eviction")), verbs: &["create"] },
    Subresource {
        name: "exec",
        kind: Some(("", "v1", "PodExecOptions")),
        verbs: &["create", "get"],
    },
    Subresource { name: "log", kind: None, verbs: &["get"] },
    Subresource {
        name: "portforward",
        kind: Some(("", "v1", "PodPortForwardOptions")),
        verbs: &["create", "get"],
    },
    Subresource {
        name: "proxy",
        kind: Some(("", "v1", "PodProxyOptions")),
        verbs: &["create", "delete", "get", "patch", "update"],
    },
    Subresource { name: "resize", kind: None, verbs: GET_PATCH_UPDATE },
    STATUS,
];
const STATUS_SCALE: &[Subresource] = &[SCALE, STATUS];
const ONLY_STATUS: &[Subresource] = &[STATUS];

/// Moving between the served version and the stored representation, where they differ.
#[derive(Clone, Copy)]
pub struct Conversion {
    /// The key segments the objects are stored under: (group or "core", resource).
    pub storage_group: &'static str,
    /// The version of the stored form (its kind is the served kind).
    pub storage_version: &'static str,
    pub storage_resource: &'static str,
    /// A served object (already decoded) to the stored form.
    pub to_storage: fn(Value) -> Value,
    /// A stored object to the served form.
    pub from_storage: fn(Value) -> Value,
}

/// Everything the registry and the API layer need to know about one served resource.
#[derive(Clone)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// The plural resource name used in URLs ("pods").
    pub plural: &'static str,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// The type's JSON schema (k8s-openapi's schemars output, without x-kubernetes-*).
    pub schema: fn() -> Schema,
    /// The type's schema as a subschema of a shared generator (references into definitions).
    pub subschema: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes a JSON object through the k8s-openapi type and back: unknown fields dropped,
    /// wrong types rejected with serde's message.
    pub decode: fn(&Value) -> Result<Value, String>,
    pub conversion: Option<Conversion>,
    pub strategy: Arc<dyn Strategy>,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceInfo({}/{} {})", self.group, self.version, self.plural)
    }
}

impl ResourceInfo {
    /// "v1" or "apps/v1".
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The subresource of that name, if served.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The group segment of storage keys ("core" for the legacy group).
    pub fn storage_group(&self) -> &'static str {
        match &self.conversion {
            Some(c) => c.storage_group,
            None if self.group.is_empty() => "core",
            None => self.group,
        }
    }

    /// The group, version and kind objects are stored as (upstream's storage version).
    pub fn storage_gvk(&self) -> (&'static str, &'static str, &'static str) {
        match &self.conversion {
            Some(c) if c.storage_group == "core" => ("", c.storage_version, self.kind),
            Some(c) => (c.storage_group, c.storage_version, self.kind),
            None => (self.group, self.version, self.kind),
        }
    }

    /// Discovery's storageVersionHash: the first 8 bytes of the SHA-256 of
    /// "group/version/kind" of the storage version, base64; it changes exactly when the
    /// storage version does, which is what clients watching it need.
    pub fn storage_version_hash(&self) -> String {
        use base64::Engine;
        let (g, v, k) = self.storage_gvk();
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{g}/{v}/{k}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(&digest.as_ref()[..8])
    }

    /// The resource segment of storage keys.
    pub fn storage_resource(&self) -> &'static str {
        self.conversion.as_ref().map_or(self.plural, |c| c.storage_resource)
    }

    fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    fn cats(mut self, categories: &'static [&'static str]) -> Self {
        self.categories = categories;
        self
    }

    fn subs(mut self, subresources: &'static [Subresource]) -> Self {
        self.subresources = subresources;
        self
    }

    fn verbs(mut self, verbs: &'static [&'static str]) -> Self {
        self.verbs = verbs;
        self
    }

    fn with(mut self, strategy: impl Strategy) -> Self {
        self.strategy = Arc::new(strategy);
        self
    }

    fn converted(mut self, conversion: Conversion) -> Self {
        self.conversion = Some(conversion);
        self
    }
}

/// A served API group and its versions, preferred first.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub name: &'static str,
    pub versions: Vec<&'static str>,
}

/// All served resources.
pub struct Catalog {
    pub resources: Vec<ResourceInfo>,
}

impl Catalog {
    /// The resource served at group/version/plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The resource of a kind in a group-version.
    pub fn find_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.resources.iter().find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// The resources of one group-version, in catalog order.
    pub fn group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceInfo> + 'a {
        self.resources.iter().filter(move |r| r.group == group && r.version == version)
    }

    /// The served groups (the legacy core group, "", first) with their versions, preferred first.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut out: Vec<GroupInfo> = vec![];
        for r in &self.resources {
            match out.iter_mut().find(|g| g.name == r.group) {
                Some(g) if !g.versions.contains(&r.version) => g.versions.push(r.version),
                Some(_) => {}
                None => out.push(GroupInfo { name: r.group, versions: vec![r.version] }),
            }
        }
        for g in &mut out {
            // Preferred first: v2 over v1 (autoscaling), GA before anything else.
            g.versions.sort_by(|a, b| b.cmp(a));
        }
        out
    }
}

/// The catalog of this build.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| Catalog { resources: build() })
}

/// Maps k8s-openapi's scope marker types to "is namespaced".
pub trait ScopeInfo {
    const NAMESPACED: bool;
}

impl ScopeInfo for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl ScopeInfo for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// A catalog entry for a k8s-openapi type, with defaults: all verbs, no subresources, no short
/// names or categories, the default strategy.
pub fn entry<T>() -> ResourceInfo
where
    T: Resource + ListableResource + JsonSchema + Serialize + DeserializeOwned + 'static,
    T::Scope: ScopeInfo,
{
    base::<T>(T::LIST_KIND)
}

/// An entry for a type that cannot be listed (bindings): create only.
pub fn create_only<T>() -> ResourceInfo
where
    T: Resource + JsonSchema + Serialize + DeserializeOwned + 'static,
    T::Scope: ScopeInfo,
{
    base::<T>("").verbs(&["create"])
}

fn base<T>(list_kind: &'static str) -> ResourceInfo
where
    T: Resource + JsonSchema + Serialize + DeserializeOwned + 'static,
    T::Scope: ScopeInfo,
{
    ResourceInfo {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_kind,
        plural: T::URL_PATH_SEGMENT,
        singular: T::KIND.to_ascii_lowercase(),
        namespaced: <T::Scope as ScopeInfo>::NAMESPACED,
        short_names: &[],
        categories: &[],
        verbs: ALL_VERBS,
        subresources: &[],
        schema: schema_of::<T>,
        subschema: subschema_of::<T>,
        decode: decode_as::<T>,
        conversion: None,
        strategy: Arc::new(DefaultStrategy),
    }
}

fn schema_of<T: JsonSchema>() -> Schema {
    SchemaGenerator::default().into_root_schema_for::<T>()
}

fn subschema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// Decodes through the typed form and back.
pub fn decode_as<T: Serialize + DeserializeOwned>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

const ALL: &[&str] = &["all"];
const API_EXT: &[&str] = &["api-extensions"];

fn build() -> Vec<ResourceInfo> {
    vec![
        // core/v1
        create_only::<core::Binding>(),
        entry::<core::ConfigMap>().short(&["cm"]).with(res::configmaps::ConfigMapStrategy),
        entry::<core::Endpoints>().short(&["ep"]).with(res::misc::EndpointsStrategy),
        entry::<core::Event>().short(&["ev"]).with(res::events::EventStrategy),
        entry::<core::LimitRange>().short(&["limits"]).with(res::limitranges::LimitRangeStrategy),
        entry::<core::Namespace>()
            .short(&["ns"])
            .verbs(&["create", "delete", "get", "list", "patch", "update", "watch"])
            .subs(&[Subresource { name: "finalize", kind: None, verbs: &["update"] }, STATUS])
            .with(res::namespaces::NamespaceStrategy),
        entry::<core::Node>()
            .short(&["no"])
            .subs(&[
                Subresource {
                    name: "proxy",
                    kind: Some(("", "v1", "NodeProxyOptions")),
                    verbs: &["create", "delete", "get", "patch", "update"],
                },
                STATUS,
            ])
            .with(res::nodes::NodeStrategy),
        entry::<core::PersistentVolumeClaim>()
            .short(&["pvc"])
            .subs(ONLY_STATUS)
            .with(res::volumes::PersistentVolumeClaimStrategy),
        entry::<core::PersistentVolume>()
            .short(&["pv"])
            .subs(ONLY_STATUS)
            .with(res::volumes::PersistentVolumeStrategy),
        entry::<core::Pod>()
            .short(&["po"])
            .cats(ALL)
            .subs(POD_SUBRESOURCES)
            .with(res::pods::PodStrategy),
        entry::<core::PodTemplate>(),
        entry::<core::ReplicationController>()
            .short(&["rc"])
            .cats(ALL)
            .subs(STATUS_SCALE)
            .with(res::replicationcontrollers::ReplicationControllerStrategy),
        entry::<core::ResourceQuota>().short(&["quota"]).subs(ONLY_STATUS),
        entry::<core::Secret>().with(res::secrets::SecretStrategy),
        entry::<core::ServiceAccount>()
            .short(&["sa"])
            .subs(&[Subresource {
                name: "token",
                kind: Some(("authentication.k8s.io", "v1", "TokenRequest")),
                verbs: &["create"],
            }])
            .with(res::misc::ServiceAccountStrategy),
        entry::<core::Service>()
            .short(&["svc"])
            .cats(ALL)
            .subs(&[
                Subresource {
                    name: "proxy",
                    kind: Some(("", "v1", "ServiceProxyOptions")),
                    verbs: &["create", "delete", "get", "patch", "update"],
                },
                STATUS,
            ])
            .with(res::services::ServiceStrategy),
        // apps/v1
        entry::<apps::ControllerRevision>(),
        entry::<apps::DaemonSet>()
            .short(&["ds"])
            .cats(ALL)
            .subs(ONLY_STATUS)
            .with(res::daemonsets::DaemonSetStrategy),
        entry::<apps::Deployment>()
            .short(&["deploy"])
            .cats(ALL)
            .subs(STATUS_SCALE)
            .with(res::deployments::DeploymentStrategy),
        entry::<apps::ReplicaSet>()
            .short(&["rs"])
            .cats(ALL)
            .subs(STATUS_SCALE)
            .with(res::replicasets::ReplicaSetStrategy),
        entry::<apps::StatefulSet>()
            .short(&["sts"])
            .cats(ALL)
            .subs(STATUS_SCALE)
            .with(res::statefulsets::StatefulSetStrategy),
        // batch/v1
        entry::<batch::CronJob>()
            .short(&["cj"])
            .cats(ALL)
            .subs(ONLY_STATUS)
            .with(res::cronjobs::CronJobStrategy),
        entry::<batch::Job>().cats(ALL).subs(ONLY_STATUS).with(res::jobs::JobStrategy),
        // autoscaling/v2 (stored) and v1 (converted)
        entry::<as2::HorizontalPodAutoscaler>()
            .short(&["hpa"])
            .cats(ALL)
            .subs(ONLY_STATUS)
            .with(res::hpa::HpaStrategy),
        entry::<as1::HorizontalPodAutoscaler>()
            .short(&["hpa"])
            .cats(ALL)
            .subs(ONLY_STATUS)
            .with(res::hpa::HpaStrategy)
            .converted(res::hpa::V1_CONVERSION),
        // coordination.k8s.io/v1
        entry::<coord::Lease>().with(res::misc::LeaseStrategy),
        // discovery.k8s.io/v1
        entry::<disc::EndpointSlice>().with(res::misc::EndpointSliceStrategy),
        // events.k8s.io/v1 (stored as core v1 events)
        entry::<ev::Event>()
            .short(&["ev"])
            .with(res::events::EventStrategy)
            .converted(res::events::EVENTS_V1_CONVERSION),
        // networking.k8s.io/v1
        entry::<net::IngressClass>(),
        entry::<net::Ingress>().short(&["ing"]).subs(ONLY_STATUS).with(res::misc::IngressStrategy),
        entry::<net::IPAddress>().short(&["ip"]).with(res::ipaddresses::IpAddressStrategy),
        entry::<net::NetworkPolicy>().short(&["netpol"]),
        entry::<net::ServiceCIDR>().subs(ONLY_STATUS),
        // policy/v1
        entry::<policy::PodDisruptionBudget>()
            .short(&["pdb"])
            .subs(ONLY_STATUS)
            .with(res::misc::PodDisruptionBudgetStrategy),
        // rbac.authorization.k8s.io/v1
        entry::<rbac::ClusterRoleBinding>().with(res::rbac::BindingStrategy { cluster: true }),
        entry::<rbac::ClusterRole>().with(res::rbac::RoleStrategy),
        entry::<rbac::RoleBinding>().with(res::rbac::BindingStrategy { cluster: false }),
        entry::<rbac::Role>().with(res::rbac::RoleStrategy),
        // scheduling.k8s.io/v1
        entry::<sched::PriorityClass>().short(&["pc"]).with(res::misc::PriorityClassStrategy),
        // storage.k8s.io/v1
        entry::<storage::CSIDriver>(),
        entry::<storage::CSINode>(),
        entry::<storage::CSIStorageCapacity>(),
        entry::<storage::StorageClass>().short(&["sc"]).with(res::misc::StorageClassStrategy),
        entry::<storage::VolumeAttachment>().subs(ONLY_STATUS),
        // node.k8s.io/v1
        entry::<node::RuntimeClass>(),
        // certificates.k8s.io/v1
        entry::<certs::CertificateSigningRequest>()
            .short(&["csr"])
            .subs(&[Subresource { name: "approval", kind: None, verbs: GET_PATCH_UPDATE }, STATUS])
            .with(res::misc::CsrStrategy),
        // admissionregistration.k8s.io/v1
        entry::<admreg::MutatingWebhookConfiguration>().cats(API_EXT),
        entry::<admreg::ValidatingAdmissionPolicy>().cats(API_EXT).subs(ONLY_STATUS),
        entry::<admreg::ValidatingAdmissionPolicyBinding>().cats(API_EXT),
        entry::<admreg::ValidatingWebhookConfiguration>().cats(API_EXT),
        // flowcontrol.apiserver.k8s.io/v1
        entry::<flow::FlowSchema>().subs(ONLY_STATUS),
        entry::<flow::PriorityLevelConfiguration>().subs(ONLY_STATUS),
        // apiextensions.k8s.io/v1
        entry::<apiext::CustomResourceDefinition>()
            .short(&["crd", "crds"])
            .cats(API_EXT)
            .subs(ONLY_STATUS)
            .with(res::crds::CustomResourceDefinitionStrategy),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_knows_the_common_resources() {
        let c = catalog();
        let pods = c.find("", "v1", "pods").expect("pods");
        assert!(pods.namespaced);
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.list_kind, "PodList");
        assert_eq!(pods.singular, "pod");
        assert!(pods.categories.contains(&"all"));
        assert!(pods.subresource("log").is_some());
        let deploy = c.find("apps", "v1", "deployments").expect("deployments");
        assert_eq!(deploy.short_names, &["deploy"]);
        assert!(deploy.subresource("scale").is_some());
        assert!(!c.find("", "v1", "namespaces").unwrap().namespaced);
        assert!(c.find("autoscaling", "v1", "horizontalpodautoscalers").is_some());
        assert_eq!(
            c.find("autoscaling", "v1", "horizontalpodautoscalers").unwrap().storage_group(),
            "autoscaling"
        );
        assert_eq!(c.find("events.k8s.io", "v1", "events").unwrap().storage_group(), "core");
    }

    #[test]
    fn storage_version_hashes_are_upstreams() {
        let c = catalog();
        let hash = |g: &str, v: &str, r: &str| c.find(g, v, r).unwrap().storage_version_hash();
        // Values a v1.33 kube-apiserver publishes.
        assert_eq!(hash("", "v1", "pods"), "xPOwRZ+Yhw8=");
        assert_eq!(hash("", "v1", "configmaps"), "qFsyl6wFWjQ=");
        assert_eq!(hash("apps", "v1", "deployments"), "8aSe+NMegvE=");
        // Served in one version, stored in another: the hash is the storage version's.
        let hpa = "horizontalpodautoscalers";
        assert_eq!(hash("autoscaling", "v1", hpa), hash("autoscaling", "v2", hpa));
        assert_eq!(hash("events.k8s.io", "v1", "events"), hash("", "v1", "events"));
        assert_ne!(hash("", "v1", "pods"), hash("", "v1", "services"));
    }

    #[test]
    fn groups_list_core_first_and_prefer_v2_autoscaling() {
        let groups = catalog().groups();
        assert_eq!(groups[0].name, "");
        let autoscaling = groups.iter().find(|g| g.name == "autoscaling").unwrap();
        assert_eq!(autoscaling.versions, vec!["v2", "v1"]);
        assert_eq!(groups.len(), 17);
    }

    #[test]
    fn decode_drops_unknown_fields_and_schema_builds() {
        let pods = catalog().find("", "v1", "pods").unwrap();
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"foo": 1, "containers": []}});
        let out = (pods.decode)(&v).unwrap();
        assert!(out["spec"].get("foo").is_none());
        let schema = (pods.schema)();
        assert!(
            schema.as_value().get("properties").is_some()
                || schema.as_value().get("$ref").is_some()
        );
    }
}
