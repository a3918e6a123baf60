//! The schemas of every built-in kind skiff serves, generated from k8s-openapi's schemars
//! implementations in OpenAPI 3.0 form (references are `#/components/schemas/<name>`, names as
//! upstream spells them), and the field-to-type graph that strategic merge patch walks.
//!
//! Built once, on first use. The schemas carry no `x-kubernetes-*` extensions: those come from
//! [`super::semantics`].

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, Resource};
use serde_json::{json, Value};

/// Where references point.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// How a kind is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
    /// Only reachable as a subresource of another kind (Scale, Eviction, TokenRequest, ...).
    Subresource,
}

/// One built-in kind with a schema.
#[derive(Debug, Clone)]
pub struct KindSchema {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource (plural) name, or for subresource kinds the subresource name.
    pub plural: &'static str,
    pub scope: Scope,
    /// The list kind, for kinds that can be listed.
    pub list_kind: Option<&'static str>,
    /// The schema name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub type_name: String,
}

impl KindSchema {
    /// The schema name of the list type, e.g. `io.k8s.api.apps.v1.DeploymentList`.
    pub fn list_type_name(&self) -> Option<String> {
        self.list_kind.map(|_| format!("{}List", self.type_name))
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// What a field holds, as far as patching cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A named schema (an object type, or a named scalar such as Quantity or Time).
    Named(String),
    /// A list of values of the inner type.
    List(Box<FieldType>),
    /// An object with arbitrary keys, each holding a value of the inner type.
    Map(Box<FieldType>),
    /// Anything else: a plain scalar or an untyped value.
    Other,
}

/// The schemas of every served built-in kind and everything they reference.
#[derive(Debug)]
pub struct TypeSchemas {
    /// Schema name to schema, in OpenAPI 3.0 form.
    pub definitions: BTreeMap<String, Value>,
    /// Every kind, in registration order.
    pub kinds: Vec<KindSchema>,
    graph: HashMap<String, HashMap<String, FieldType>>,
}

static BUILT: OnceLock<TypeSchemas> = OnceLock::new();
/// Set when generation begins (tests check that start-up never begins it).
static STARTED: AtomicBool = AtomicBool::new(false);

impl TypeSchemas {
    /// The schemas, generated on first use (a strategic merge patch or an OpenAPI request; never
    /// at start-up: generating them runs schemars over every type and holds megabytes).
    pub fn get() -> &'static TypeSchemas {
        BUILT.get_or_init(build)
    }

    /// Whether the schemas have been generated.
    pub fn is_built() -> bool {
        BUILT.get().is_some()
    }

    /// Whether generating the schemas has begun (it may not have finished).
    pub fn generation_started() -> bool {
        STARTED.load(Ordering::Relaxed)
    }

    /// The schema name of `kind` in `api_version` (`v1`, `apps/v1`), if skiff knows it.
    pub fn root_type(&self, api_version: &str, kind: &str) -> Option<&str> {
        let (group, version) = split_api_version(api_version);
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
            .map(|k| k.type_name.as_str())
            .or_else(|| {
                // List kinds: the list type's schema.
                let item = kind.strip_suffix("List")?;
                let k = self
                    .kinds
                    .iter()
                    .find(|k| k.group == group && k.version == version && k.kind == item)?;
                k.list_kind?;
                self.definitions
                    .get_key_value(&format!("{}List", k.type_name))
                    .map(|(name, _)| name.as_str())
            })
    }

    /// The type of field `field` of the object type `type_name`.
    pub fn field_type(&self, type_name: &str, field: &str) -> Option<&FieldType> {
        self.graph.get(type_name)?.get(field)
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// Reads what a property schema holds.
pub fn field_type_of(schema: &Value) -> FieldType {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        return match name.strip_prefix(REF_PREFIX) {
            Some(name) => FieldType::Named(name.to_string()),
            None => FieldType::Other,
        };
    }
    if let Some([only]) = schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        return field_type_of(only);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => match schema.get("items") {
            Some(items) => FieldType::List(Box::new(field_type_of(items))),
            None => FieldType::List(Box::new(FieldType::Other)),
        },
        Some("object") => match schema.get("additionalProperties") {
            Some(values) if values.is_object() => FieldType::Map(Box::new(field_type_of(values))),
            _ => FieldType::Other,
        },
        _ => FieldType::Other,
    }
}

struct Collector {
    generator: SchemaGenerator,
    kinds: Vec<KindSchema>,
}

impl Collector {
    fn add<T: Resource + JsonSchema + 'static>(&mut self, list_kind: Option<&'static str>) {
        let scope = if TypeId::of::<T::Scope>() == TypeId::of::<NamespaceResourceScope>() {
            Scope::Namespaced
        } else if TypeId::of::<T::Scope>() == TypeId::of::<ClusterResourceScope>() {
            Scope::Cluster
        } else {
            Scope::Subresource
        };
        self.generator.subschema_for::<T>();
        self.kinds.push(KindSchema {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
            plural: T::URL_PATH_SEGMENT,
            scope,
            list_kind,
            type_name: T::schema_name().into_owned(),
        });
    }

    fn listable<T: k8s_openapi::ListableResource + JsonSchema + 'static>(&mut self) {
        self.add::<T>(Some(T::LIST_KIND));
    }

    fn single<T: Resource + JsonSchema + 'static>(&mut self) {
        self.add::<T>(None);
    }
}

fn build() -> TypeSchemas {
    use k8s_openapi::api::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;

    STARTED.store(true, Ordering::Relaxed);

    let mut c =
        Collector { generator: SchemaSettings::openapi3().into_generator(), kinds: Vec::new() };
    macro_rules! listable { ($($t:ty),* $(,)?) => { $(c.listable::<$t>();)* }; }
    macro_rules! single { ($($t:ty),* $(,)?) => { $(c.single::<$t>();)* }; }

    listable!(
        core::v1::ComponentStatus,
        core::v1::ConfigMap,
        core::v1::Endpoints,
        core::v1::Event,
        core::v1::LimitRange,
        core::v1::Namespace,
        core::v1::Node,
        core::v1::PersistentVolume,
        core::v1::PersistentVolumeClaim,
        core::v1::Pod,
        core::v1::PodTemplate,
        core::v1::ReplicationController,
        core::v1::ResourceQuota,
        core::v1::Secret,
        core::v1::Service,
        core::v1::ServiceAccount,
        admissionregistration::v1::MutatingWebhookConfiguration,
        admissionregistration::v1::ValidatingAdmissionPolicy,
        admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        admissionregistration::v1::ValidatingWebhookConfiguration,
        apps::v1::ControllerRevision,
        apps::v1::DaemonSet,
        apps::v1::Deployment,
        apps::v1::ReplicaSet,
        apps::v1::StatefulSet,
        autoscaling::v1::HorizontalPodAutoscaler,
        autoscaling::v2::HorizontalPodAutoscaler,
        batch::v1::CronJob,
        batch::v1::Job,
        certificates::v1::CertificateSigningRequest,
        coordination::v1::Lease,
        discovery::v1::EndpointSlice,
        events::v1::Event,
        flowcontrol::v1::FlowSchema,
        flowcontrol::v1::PriorityLevelConfiguration,
        networking::v1::IPAddress,
        networking::v1::Ingress,
        networking::v1::IngressClass,
        networking::v1::NetworkPolicy,
        networking::v1::ServiceCIDR,
        node::v1::RuntimeClass,
        policy::v1::PodDisruptionBudget,
        rbac::v1::ClusterRole,
        rbac::v1::ClusterRoleBinding,
        rbac::v1::Role,
        rbac::v1::RoleBinding,
        scheduling::v1::PriorityClass,
        storage::v1::CSIDriver,
        storage::v1::CSINode,
        storage::v1::CSIStorageCapacity,
        storage::v1::StorageClass,
        storage::v1::VolumeAttachment,
        apiextensions::CustomResourceDefinition,
        apiregistration::APIService,
    );
    single!(
        core::v1::Binding,
        authentication::v1::SelfSubjectReview,
        authentication::v1::TokenRequest,
        authentication::v1::TokenReview,
        authorization::v1::LocalSubjectAccessReview,
        authorization::v1::SelfSubjectAccessReview,
        authorization::v1::SelfSubjectRulesReview,
        authorization::v1::SubjectAccessReview,
        autoscaling::v1::Scale,
        policy::v1::Eviction,
    );
    // Whatever else the registry's catalog serves.
    for r in &crate::registry::catalog().resources {
        let known =
            c.kinds.iter().any(|k| (k.group, k.version, k.kind) == (r.group, r.version, r.kind));
        if known {
            continue;
        }
        let reference = (r.subschema)(&mut c.generator);
        let Some(name) = reference.get("$ref").and_then(Value::as_str) else { continue };
        let Some(name) = name.strip_prefix(REF_PREFIX) else { continue };
        c.kinds.push(KindSchema {
            group: r.group,
            version: r.version,
            kind: r.kind,
            plural: r.plural,
            scope: if r.namespaced { Scope::Namespaced } else { Scope::Cluster },
            list_kind: (!r.list_kind.is_empty()).then_some(r.list_kind),
            type_name: name.to_string(),
        });
    }
    // The meta types every group-version's operations use.
    c.generator.subschema_for::<meta::APIGroup>();
    c.generator.subschema_for::<meta::APIGroupList>();
    c.generator.subschema_for::<meta::APIResourceList>();
    c.generator.subschema_for::<meta::APIVersions>();
    c.generator.subschema_for::<meta::Condition>();
    c.generator.subschema_for::<meta::DeleteOptions>();
    c.generator.subschema_for::<meta::Patch>();
    c.generator.subschema_for::<meta::Status>();
    c.generator.subschema_for::<meta::WatchEvent<core::v1::Pod>>();

    let mut definitions: BTreeMap<String, Value> =
        c.generator.take_definitions(true).into_iter().collect();
    for kind in &c.kinds {
        if let (Some(list_kind), Some(list_type)) = (kind.list_kind, kind.list_type_name()) {
            definitions.insert(list_type, list_schema(list_kind, &kind.type_name));
        }
    }
    let mut graph = HashMap::new();
    for (name, schema) in &definitions {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let fields: HashMap<String, FieldType> =
                props.iter().map(|(field, s)| (field.clone(), field_type_of(s))).collect();
            graph.insert(name.clone(), fields);
        }
    }
    TypeSchemas { definitions, kinds: c.kinds, graph }
}

/// The schema of a list kind (k8s-openapi's generic `List<T>` has none).
fn list_schema(list_kind: &str, item_type: &str) -> Value {
    let item_kind = item_type.rsplit('.').next().unwrap_or(item_type);
    json!({
        "description": format!("{list_kind} is a list of {item_kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("The {item_kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item_type}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata.",
                "allOf": [{"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}],
            },
        },
        "required": ["items"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_to_upstream_names() {
        let s = TypeSchemas::get();
        assert_eq!(s.root_type("v1", "Pod"), Some("io.k8s.api.core.v1.Pod"));
        assert_eq!(s.root_type("apps/v1", "Deployment"), Some("io.k8s.api.apps.v1.Deployment"));
        assert_eq!(
            s.root_type("autoscaling/v2", "HorizontalPodAutoscaler"),
            Some("io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler")
        );
        assert_eq!(s.root_type("v1", "PodList"), Some("io.k8s.api.core.v1.PodList"));
        assert_eq!(s.root_type("example.com/v1", "Widget"), None);
        let pod = s.kinds.iter().find(|k| k.kind == "Pod").expect("pod");
        assert_eq!((pod.plural, pod.scope), ("pods", Scope::Namespaced));
    }

    #[test]
    fn graph_follows_references() {
        let s = TypeSchemas::get();
        assert_eq!(
            s.field_type("io.k8s.api.core.v1.Pod", "spec"),
            Some(&FieldType::Named("io.k8s.api.core.v1.PodSpec".into()))
        );
        assert_eq!(
            s.field_type("io.k8s.api.core.v1.PodSpec", "containers"),
            Some(&FieldType::List(Box::new(FieldType::Named(
                "io.k8s.api.core.v1.Container".into()
            ))))
        );
        let props = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        assert_eq!(
            s.field_type(props, "properties"),
            Some(&FieldType::Map(Box::new(FieldType::Named(props.into()))))
        );
        assert!(matches!(
            s.field_type("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels"),
            Some(FieldType::Map(_))
        ));
    }

    #[test]
    fn no_definition_keeps_a_defs_reference() {
        let text = serde_json::to_string(&TypeSchemas::get().definitions).expect("json");
        assert!(!text.contains("$defs"));
        assert!(!text.contains("\"#/definitions"));
    }
}
