//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), which
//! kubectl 1.32+ sends for objects it builds itself (`kubectl create namespace|configmap|secret|
//! deployment ...`). Responses are always JSON: clients that send protobuf also accept JSON.
//!
//! The body is the "k8s\0" magic and a runtime.Unknown envelope around the object's protobuf
//! bytes. The object is decoded with its k8s-pb type; since those types carry no JSON mapping,
//! the value is read back through its derived `Debug` output (field names, values, nesting),
//! renamed to the JSON field names and with the few special types (Time, Quantity,
//! IntOrString, bytes, raw JSON) rendered as the JSON encoding renders them.

use base64::Engine;
use serde_json::{Map, Value};

use crate::apiserver::status::ApiError;

/// The media type of Kubernetes protobuf bodies.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// What went wrong reading a protobuf body.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    Magic,
    #[error("cannot decode the protobuf envelope: {0}")]
    Envelope(String),
    #[error("protobuf bodies of kind {0} are not supported; send JSON or YAML")]
    Kind(String),
    #[error("cannot decode the {kind} protobuf: {why}")]
    Object { kind: String, why: String },
}

impl From<ProtobufError> for ApiError {
    fn from(e: ProtobufError) -> Self {
        match e {
            ProtobufError::Kind(_) => ApiError::unsupported_media_type(e.to_string()),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

/// Decodes a protobuf request body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    use prost::Message;
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::Magic)?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest)
        .map_err(|e| ProtobufError::Envelope(e.to_string()))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let debug = debug_of(&api_version, &kind, &raw)?;
    let parsed = DebugParser::new(&debug)
        .value()
        .map_err(|why| ProtobufError::Object { kind: kind.clone(), why })?;
    let mut obj = to_json(&parsed, "");
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), Value::from(api_version));
        m.insert("kind".into(), Value::from(kind));
    }
    Ok(obj)
}

/// The Debug rendering of the object, decoded with the k8s-pb type of its kind.
fn debug_of(api_version: &str, kind: &str, raw: &[u8]) -> Result<String, ProtobufError> {
    use k8s_pb::api;
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    macro_rules! table {
        ($(($av:literal, $kind:literal, $ty:ty)),* $(,)?) => {
            match (api_version, kind) {
                $(($av, $kind) => dbg::<$ty>(kind, raw),)*
                _ => Err(ProtobufError::Kind(format!("{api_version}/{kind}"))),
            }
        };
    }
    table![
        ("v1", "Binding", api::core::v1::Binding),
        ("v1", "ConfigMap", api::core::v1::ConfigMap),
        ("v1", "Endpoints", api::core::v1::Endpoints),
        ("v1", "Event", api::core::v1::Event),
        ("v1", "LimitRange", api::core::v1::LimitRange),
        ("v1", "Namespace", api::core::v1::Namespace),
        ("v1", "Node", api::core::v1::Node),
        ("v1", "PersistentVolume", api::core::v1::PersistentVolume),
        ("v1", "PersistentVolumeClaim", api::core::v1::PersistentVolumeClaim),
        ("v1", "Pod", api::core::v1::Pod),
        ("v1", "PodTemplate", api::core::v1::PodTemplate),
        ("v1", "ReplicationController", api::core::v1::ReplicationController),
        ("v1", "ResourceQuota", api::core::v1::ResourceQuota),
        ("v1", "Secret", api::core::v1::Secret),
        ("v1", "Service", api::core::v1::Service),
        ("v1", "ServiceAccount", api::core::v1::ServiceAccount),
        ("v1", "DeleteOptions", meta::DeleteOptions),
        ("meta.k8s.io/v1", "DeleteOptions", meta::DeleteOptions),
        ("apps/v1", "ControllerRevision", api::apps::v1::ControllerRevision),
        ("apps/v1", "DaemonSet", api::apps::v1::DaemonSet),
        ("apps/v1", "Deployment", api::apps::v1::Deployment),
        ("apps/v1", "ReplicaSet", api::apps::v1::ReplicaSet),
        ("apps/v1", "StatefulSet", api::apps::v1::StatefulSet),
        ("autoscaling/v1", "Scale", api::autoscaling::v1::Scale),
        (
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            api::autoscaling::v1::HorizontalPodAutoscaler
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            api::autoscaling::v2::HorizontalPodAutoscaler
        ),
        ("batch/v1", "CronJob", api::batch::v1::CronJob),
        ("batch/v1", "Job", api::batch::v1::Job),
        ("coordination.k8s.io/v1", "Lease", api::coordination::v1::Lease),
        ("discovery.k8s.io/v1", "EndpointSlice", api::discovery::v1::EndpointSlice),
        ("events.k8s.io/v1", "Event", api::events::v1::Event),
        ("networking.k8s.io/v1", "Ingress", api::networking::v1::Ingress),
        ("networking.k8s.io/v1", "IngressClass", api::networking::v1::IngressClass),
        ("networking.k8s.io/v1", "NetworkPolicy", api::networking::v1::NetworkPolicy),
        ("policy/v1", "PodDisruptionBudget", api::policy::v1::PodDisruptionBudget),
        ("policy/v1", "Eviction", api::policy::v1::Eviction),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", api::rbac::v1::ClusterRole),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", api::rbac::v1::ClusterRoleBinding),
        ("rbac.authorization.k8s.io/v1", "Role", api::rbac::v1::Role),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", api::rbac::v1::RoleBinding),
        ("scheduling.k8s.io/v1", "PriorityClass", api::scheduling::v1::PriorityClass),
        ("storage.k8s.io/v1", "StorageClass", api::storage::v1::StorageClass),
        ("node.k8s.io/v1", "RuntimeClass", api::node::v1::RuntimeClass),
        (
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            api::certificates::v1::CertificateSigningRequest
        ),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", apiext::CustomResourceDefinition),
    ]
}

fn dbg<T: prost::Message + Default + std::fmt::Debug>(
    kind: &str,
    raw: &[u8],
) -> Result<String, ProtobufError> {
    let v = T::decode(raw)
        .map_err(|e| ProtobufError::Object { kind: kind.to_string(), why: e.to_string() })?;
    Ok(format!("{v:?}"))
}

/// A value as Rust's Debug prints it.
#[derive(Clone, Debug, PartialEq)]
enum Dv {
    Struct(String, Vec<(String, Dv)>),
    List(Vec<Dv>),
    Map(Vec<(Dv, Dv)>),
    Str(String),
    Num(String),
    Bool(bool),
    None,
}

struct DebugParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> DebugParser<'a> {
    fn new(s: &'a str) -> Self {
        DebugParser { s: s.as_bytes(), i: 0 }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &str) -> Result<(), String> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!("expected {t:?} at {}", self.i))
        }
    }

    fn ident(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric()
                || self.s[self.i] == b'_'
                || self.s[self.i] == b'#')
        {
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn value(&mut self) -> Result<Dv, String> {
        self.ws();
        let c = *self.s.get(self.i).ok_or("unexpected end")?;
        match c {
            b'"' => self.string().map(Dv::Str),
            b'[' => {
                self.i += 1;
                let mut items = vec![];
                while !self.eat("]") {
                    items.push(self.value()?);
                    self.eat(",");
                }
                Ok(Dv::List(items))
            }
            b'{' => {
                self.i += 1;
                let mut items = vec![];
                while !self.eat("}") {
                    let k = self.value()?;
                    self.expect(":")?;
                    let v = self.value()?;
                    items.push((k, v));
                    self.eat(",");
                }
                Ok(Dv::Map(items))
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len()
                    && matches!(self.s[self.i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'-' | b'+')
                {
                    self.i += 1;
                }
                Ok(Dv::Num(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()))
            }
            _ => {
                let id = self.ident();
                match id.as_str() {
                    "None" => Ok(Dv::None),
                    "true" => Ok(Dv::Bool(true)),
                    "false" => Ok(Dv::Bool(false)),
                    "Some" => {
                        self.expect("(")?;
                        let v = self.value()?;
                        self.expect(")")?;
                        Ok(v)
                    }
                    "" => Err(format!("unexpected {:?} at {}", c as char, self.i)),
                    _ => {
                        let mut fields = vec![];
                        if self.eat("{") {
                            while !self.eat("}") {
                                let name = self.ident();
                                self.expect(":")?;
                                fields.push((name, self.value()?));
                                self.eat(",");
                            }
                        }
                        Ok(Dv::Struct(id, fields))
                    }
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = std::str::from_utf8(&self.s[self.i..]).map_err(|e| e.to_string())?;
            let mut chars = rest.char_indices();
            let (_, c) = chars.next().ok_or("unterminated string")?;
            self.i += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let (_, e) = chars.next().ok_or("unterminated escape")?;
                    self.i += e.len_utf8();
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'u' => {
                            let rest = std::str::from_utf8(&self.s[self.i..])
                                .map_err(|e| e.to_string())?;
                            let end = rest.find('}').ok_or("bad unicode escape")?;
                            let hex = rest[1..end].to_string();
                            self.i += end + 1;
                            let code = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                            out.push(char::from_u32(code).ok_or("bad code point")?);
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }
}

/// Converts a Debug value to JSON; `field` is the JSON name of the field holding it.
fn to_json(v: &Dv, field: &str) -> Value {
    match v {
        Dv::None => Value::Null,
        Dv::Bool(b) => Value::Bool(*b),
        Dv::Num(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        Dv::Str(s) => Value::String(s.clone()),
        Dv::List(items)
            if is_bytes_field(field) && items.iter().all(|i| matches!(i, Dv::Num(_))) =>
        {
            bytes_json(items, field)
        }
        Dv::List(items) => Value::Array(items.iter().map(|i| to_json(i, "")).collect()),
        Dv::Map(entries) => {
            let mut m = Map::new();
            for (k, val) in entries {
                let key = match k {
                    Dv::Str(s) => s.clone(),
                    other => to_json(other, "").to_string(),
                };
                let jv = match val {
                    Dv::List(items)
                        if items.iter().all(|i| matches!(i, Dv::Num(_))) && !items.is_empty() =>
                    {
                        bytes_json(items, "data")
                    }
                    Dv::List(items)
                        if items.is_empty() && (field == "data" || field == "binaryData") =>
                    {
                        Value::from("")
                    }
                    other => to_json(other, ""),
                };
                m.insert(key, jv);
            }
            Value::Object(m)
        }
        Dv::Struct(name, fields) => special(name, fields).unwrap_or_else(|| {
            let mut m = Map::new();
            for (f, val) in fields {
                let json_name = json_name(f);
                let jv = to_json(val, &json_name);
                if let (Dv::Struct(ty, _), Value::Object(inner)) = (val, &jv) {
                    if INLINED.contains(&ty.as_str()) {
                        // Go embeds these structs inline; protobuf nests them.
                        m.extend(inner.clone());
                        continue;
                    }
                }
                let drop = match &jv {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if !drop {
                    m.insert(json_name, jv);
                }
            }
            Value::Object(m)
        }),
    }
}

/// Types Go embeds inline in their parent (JSON) that protobuf carries as a nested field.
const INLINED: &[&str] = &[
    "IngressRuleValue",
    "ProbeHandler",
    "VolumeSource",
    "PersistentVolumeSource",
    "EphemeralContainerCommon",
    "RuleWithOperations",
    "Rule",
];

/// Time, MicroTime, Quantity, IntOrString, Duration and raw JSON carriers.
fn special(name: &str, fields: &[(String, Dv)]) -> Option<Value> {
    let get =
        |f: &str| fields.iter().find(|(n, _)| n.trim_start_matches("r#") == f).map(|(_, v)| v);
    let num = |f: &str| match get(f) {
        Some(Dv::Num(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    match name {
        "Time" | "MicroTime" => {
            let secs = num("seconds").unwrap_or(0);
            let nanos = num("nanos").unwrap_or(0);
            if secs == 0 && nanos == 0 {
                return Some(Value::Null);
            }
            let t = chrono::DateTime::from_timestamp(secs, nanos as u32)?;
            let format = if name == "Time" {
                chrono::SecondsFormat::Secs
            } else {
                chrono::SecondsFormat::Micros
            };
            Some(Value::from(t.to_rfc3339_opts(format, true)))
        }
        "Quantity" => match get("string") {
            Some(Dv::Str(s)) => Some(Value::from(s.clone())),
            _ => Some(Value::Null),
        },
        "IntOrString" => match num("type") {
            Some(1) => match get("str_val") {
                Some(Dv::Str(s)) => Some(Value::from(s.clone())),
                _ => Some(Value::from("")),
            },
            _ => Some(Value::from(num("int_val").unwrap_or(0))),
        },
        "Duration" => match get("duration") {
            Some(Dv::Num(n)) => {
                let nanos: i64 = n.parse().unwrap_or(0);
                Some(Value::from(go_duration(nanos)))
            }
            _ => Some(Value::Null),
        },
        "RawExtension" | "FieldsV1" | "JSON" => match get("raw") {
            Some(Dv::List(items)) => {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(|i| if let Dv::Num(n) = i { n.parse().ok() } else { None })
                    .collect();
                Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
            }
            _ => Some(Value::Null),
        },
        _ => None,
    }
}

fn go_duration(nanos: i64) -> String {
    let secs = nanos / 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn is_bytes_field(field: &str) -> bool {
    matches!(field, "caBundle" | "request" | "certificate" | "data" | "binaryData")
}

fn bytes_json(items: &[Dv], _field: &str) -> Value {
    let bytes: Vec<u8> = items
        .iter()
        .filter_map(|i| if let Dv::Num(n) = i { n.parse().ok() } else { None })
        .collect();
    Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The JSON name of a k8s-pb field: lowerCamelCase with Kubernetes' capitalized initialisms.
pub fn json_name(rust: &str) -> String {
    let rust = rust.trim_start_matches("r#");
    if let Some(rest) = rust.strip_prefix("x_kubernetes_") {
        return format!("x-kubernetes-{}", rest.replace('_', "-"));
    }
    let mut out = String::new();
    for (i, part) in rust.split('_').enumerate() {
        if i == 0 {
            out.push_str(part);
            continue;
        }
        let upper = match part {
            "ip" | "ips" | "uid" | "uuid" | "cpu" | "ipc" | "pid" | "cidr" | "cidrs" | "tls"
            | "uri" | "url" | "id" | "fqdn" | "io" | "wwns" => {
                let mut u = part.to_ascii_uppercase();
                if u.ends_with('S') && part != "tls" {
                    u.pop();
                    u.push('s');
                }
                Some(u)
            }
            _ => None,
        };
        match upper {
            Some(u) => out.push_str(&u),
            None => {
                let mut c = part.chars();
                if let Some(f) = c.next() {
                    out.extend(f.to_uppercase());
                    out.push_str(c.as_str());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = k8s_pb::apimachinery::pkg::runtime::Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn names_follow_kubernetes_json() {
        for (rust, json) in [
            ("generate_name", "generateName"),
            ("r#type", "type"),
            ("pod_ip", "podIP"),
            ("pod_ips", "podIPs"),
            ("cluster_ips", "clusterIPs"),
            ("host_ipc", "hostIPC"),
            ("target_cpu_utilization_percentage", "targetCPUUtilizationPercentage"),
            ("insecure_skip_tls_verify", "insecureSkipTLSVerify"),
            ("provider_id", "providerID"),
            ("set_hostname_as_fqdn", "setHostnameAsFQDN"),
            ("ip_families", "ipFamilies"),
        ] {
            assert_eq!(json_name(rust), json, "{rust}");
        }
    }

    #[test]
    fn decodes_a_secret_and_a_deployment() {
        use k8s_pb::api::core::v1 as core;
        use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: Some("s".into()),
                namespace: Some(String::new()),
                creation_timestamp: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
                labels: [("app".to_string(), "x \"q\"".to_string())].into(),
                ..Default::default()
            }),
            data: [("k".to_string(), b"hello".to_vec())].into(),
            r#type: Some("Opaque".into()),
            ..Default::default()
        };
        let v = decode(&envelope("v1", "Secret", secret.encode_to_vec())).unwrap();
        assert_eq!(v["kind"], "Secret");
        assert_eq!(v["metadata"]["name"], "s");
        assert!(v["metadata"].get("creationTimestamp").is_none());
        assert_eq!(v["metadata"]["labels"]["app"], "x \"q\"");
        assert_eq!(v["data"]["k"], "aGVsbG8=");
        assert_eq!(v["type"], "Opaque");

        use k8s_pb::api::apps::v1 as apps;
        use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
        let d = apps::Deployment {
            metadata: Some(meta::ObjectMeta { name: Some("d".into()), ..Default::default() }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                selector: Some(meta::LabelSelector {
                    match_labels: [("a".to_string(), "b".to_string())].into(),
                    ..Default::default()
                }),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: Some("RollingUpdate".into()),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_surge: Some(IntOrString {
                            r#type: Some(1),
                            int_val: None,
                            str_val: Some("25%".into()),
                        }),
                        max_unavailable: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(1),
                            str_val: None,
                        }),
                    }),
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: None,
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: Some("c".into()),
                            image: Some("nginx".into()),
                            resources: Some(core::ResourceRequirements {
                                limits: [(
                                    "cpu".to_string(),
                                    k8s_pb::apimachinery::pkg::api::resource::Quantity {
                                        string: Some("1".into()),
                                    },
                                )]
                                .into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        host_network: Some(false),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let v = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
        assert_eq!(v["spec"]["replicas"], 0);
        assert_eq!(v["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(v["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 1);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(v["spec"]["selector"]["matchLabels"]["a"], "b");
        assert!(decode(b"not protobuf").is_err());
    }
}
