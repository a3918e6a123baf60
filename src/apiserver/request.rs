//! What a request under /api or /apis addresses (group, version, namespace, resource, name,
//! subresource, legacy /watch/ prefix), its query parameters, and its media types: the Accept
//! header the response must satisfy and the Content-Type of the body.

use axum::http::{HeaderMap, Uri};

use super::status::ApiError;

/// Where a path under /api or /apis points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/api`: the legacy group's versions.
    ApiRoot,
    /// `/apis`: every named group.
    ApisRoot,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`: the resources of a group-version.
    GroupVersion { group: String, version: String },
    /// A resource, collection or subresource.
    Resource(ResourcePath),
}

/// The parts of a resource path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/watch/` path form.
    pub legacy_watch: bool,
}

/// Subresources of namespaces, which otherwise look like a resource inside the namespace.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses a request path; None if it is not under /api or /apis or has too many segments.
pub fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Some(Target::ApiRoot),
        ["apis"] => return Some(Target::ApisRoot),
        ["apis", g] => return Some(Target::Group(g.to_string())),
        ["api", v] => {
            return Some(Target::GroupVersion { group: String::new(), version: v.to_string() })
        }
        ["apis", g, v] => {
            return Some(Target::GroupVersion { group: g.to_string(), version: v.to_string() })
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let mut rest: Vec<String> = rest.iter().map(|s| percent_decode(s)).collect();
    let mut p = ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    if rest.first().map(String::as_str) == Some("watch") {
        p.legacy_watch = true;
        rest.remove(0);
    }
    if rest.first().map(String::as_str) == Some("namespaces") && rest.len() > 1 {
        p.namespace = Some(rest[1].clone());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2].as_str()) {
            rest.drain(..2);
        }
    }
    match rest.as_slice() {
        [r] => p.resource = r.clone(),
        [r, n] => {
            p.resource = r.clone();
            p.name = Some(n.clone());
        }
        [r, n, s] => {
            p.resource = r.clone();
            p.name = Some(n.clone());
            p.subresource = Some(s.clone());
        }
        [r, n, s, ..] if s == "proxy" => {
            p.resource = r.clone();
            p.name = Some(n.clone());
            p.subresource = Some(s.clone());
        }
        _ => return None,
    }
    if p.resource == "namespaces" {
        // /namespaces/<name>[/<subresource>]: the namespace object itself.
        p.namespace = None;
    }
    Some(Target::Resource(p))
}

/// Query parameters, in order; repeated keys are kept.
#[derive(Clone, Debug, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn from_uri(uri: &Uri) -> Result<Self, ApiError> {
        match uri.query() {
            None => Ok(Query::default()),
            Some(q) => {
                let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                    .map_err(|e| {
                        ApiError::bad_request(format!("invalid query string {q:?}: {e}"))
                    })?;
                Ok(Query(pairs.0))
            }
        }
    }

    /// The first value of a parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of a parameter.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean parameter ("true"/"1" true, "false"/"0"/"" false).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some("true" | "1" | "True") => Ok(Some(true)),
            Some("false" | "0" | "False" | "") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value {other:?} for boolean parameter {key}"
            ))),
        }
    }

    /// An integer parameter.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value {v:?} for integer parameter {key}"))
            }),
        }
    }

    /// dryRun: only "All" is defined.
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        let values = self.all("dryRun");
        for v in &values {
            if *v != "All" && !v.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {v:?}: supported values: \"All\""
                )));
            }
        }
        Ok(values.contains(&"All"))
    }
}

/// How a response body is to be shaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// meta.k8s.io Table (json), with the given `v` (v1 or v1beta1).
    Table {
        version: String,
    },
    /// meta.k8s.io PartialObjectMetadata / PartialObjectMetadataList (json).
    Metadata {
        version: String,
    },
}

/// Picks what to answer with from the Accept header; 406 if nothing there can be produced.
pub fn negotiate(headers: &HeaderMap) -> Result<Output, ApiError> {
    let accept =
        headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for item in accept.split(',') {
        let m = MediaType::parse(item);
        let param = |k: &str| m.params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        match (m.essence.as_str(), param("as")) {
            ("application/json", Some("Table")) if param("g") == Some("meta.k8s.io") => {
                let v = param("v").unwrap_or("v1");
                if v == "v1" || v == "v1beta1" {
                    return Ok(Output::Table { version: v.to_string() });
                }
            }
            ("application/json", Some("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if param("g") == Some("meta.k8s.io") =>
            {
                let v = param("v").unwrap_or("v1");
                if v == "v1" || v == "v1beta1" {
                    return Ok(Output::Metadata { version: v.to_string() });
                }
            }
            ("application/json" | "application/*" | "*/*" | "application/json-seq", None) => {
                return Ok(Output::Json)
            }
            ("application/yaml" | "application/x-yaml" | "text/yaml", None) => {
                return Ok(Output::Yaml)
            }
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, \
         application/json;as=Table;v=v1;g=meta.k8s.io",
    ))
}

/// A parsed media type: lower-cased essence plus parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    pub fn parse(s: &str) -> MediaType {
        let mut parts = s.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
            })
            .collect();
        MediaType { essence, params }
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The body formats a request may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    JsonPatch,
    MergePatch,
    StrategicMergePatch,
    ApplyPatch,
    /// Kubernetes protobuf (kubectl 1.32+ for objects it builds itself).
    Protobuf,
}

/// The format of the request body from its Content-Type (JSON when absent); 415 otherwise.
pub fn body_format(headers: &HeaderMap, patch: bool) -> Result<BodyFormat, ApiError> {
    let ct =
        headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = MediaType::parse(ct).essence;
    let format = match essence.as_str() {
        "" if !patch => BodyFormat::Json,
        "application/json" if !patch => BodyFormat::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" if !patch => BodyFormat::Yaml,
        "application/vnd.kubernetes.protobuf" if !patch => BodyFormat::Protobuf,
        "application/json-patch+json" if patch => BodyFormat::JsonPatch,
        "application/merge-patch+json" if patch => BodyFormat::MergePatch,
        "application/strategic-merge-patch+json" if patch => BodyFormat::StrategicMergePatch,
        "application/apply-patch+yaml" | "application/apply-patch+json" if patch => BodyFormat::ApplyPatch,
        _ if patch => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
                 application/strategic-merge-patch+json (got {ct:?})"
            )))
        }
        _ => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json, application/yaml, application/vnd.kubernetes.protobuf (got {ct:?})"
            )))
        }
    };
    Ok(format)
}

/// Parses a body of the given format into a value; 400 with the parser's message if malformed.
pub fn parse_body(bytes: &[u8], format: BodyFormat) -> Result<serde_json::Value, ApiError> {
    match format {
        BodyFormat::Yaml | BodyFormat::ApplyPatch => {
            serde_norway::from_slice::<serde_json::Value>(bytes)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
        }
        BodyFormat::Protobuf => Ok(super::handlers::protobuf::decode(bytes)?),
        _ => serde_json::from_slice::<serde_json::Value>(bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse_path(path) {
            Some(Target::Resource(p)) => p,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths_parse_as_upstream() {
        assert_eq!(parse_path("/api"), Some(Target::ApiRoot));
        assert_eq!(parse_path("/apis/apps"), Some(Target::Group("apps".into())));
        let p = res("/api/v1/namespaces/default/pods/web/log");
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.resource.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            (Some("default"), "pods", Some("web"), Some("log"))
        );
        let ns = res("/api/v1/namespaces/kube-system");
        assert_eq!(
            (ns.namespace, ns.resource.as_str(), ns.name.as_deref()),
            (None, "namespaces", Some("kube-system"))
        );
        let fin = res("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (fin.resource.as_str(), fin.name.as_deref(), fin.subresource.as_deref()),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let w = res("/apis/apps/v1/watch/namespaces/d/deployments");
        assert!(w.legacy_watch);
        assert_eq!(w.resource, "deployments");
        let all = res("/apis/apps/v1/deployments");
        assert_eq!(all.namespace, None);
        assert!(parse_path("/apis/apps/v1/namespaces/d/deployments/a/b/c").is_none());
    }

    #[test]
    fn accept_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::ACCEPT, v.parse().unwrap());
            m
        };
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Output::Json);
        assert_eq!(
            negotiate(&h("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")).unwrap(),
            Output::Table { version: "v1".into() }
        );
        assert_eq!(
            negotiate(&h("application/vnd.kubernetes.protobuf, application/json")).unwrap(),
            Output::Json
        );
        assert_eq!(negotiate(&h("application/yaml")).unwrap(), Output::Yaml);
        assert_eq!(negotiate(&h("application/vnd.kubernetes.protobuf")).unwrap_err().code, 406);
        assert_eq!(negotiate(&h("text/html")).unwrap_err().code, 406);
    }

    #[test]
    fn body_formats() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::CONTENT_TYPE, v.parse().unwrap());
            m
        };
        assert_eq!(
            body_format(&h("application/json; charset=utf-8"), false).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(body_format(&h("application/yaml"), false).unwrap(), BodyFormat::Yaml);
        assert_eq!(
            body_format(&h("application/apply-patch+yaml"), true).unwrap(),
            BodyFormat::ApplyPatch
        );
        assert_eq!(
            body_format(&h("application/vnd.kubernetes.protobuf"), false).unwrap(),
            BodyFormat::Protobuf
        );
        assert_eq!(body_format(&h("application/cbor"), false).unwrap_err().code, 415);
        assert_eq!(body_format(&h("application/json"), true).unwrap_err().code, 415);
        assert!(parse_body(b"{", BodyFormat::Json).is_err());
        assert_eq!(parse_body(b"a: 1\n", BodyFormat::Yaml).unwrap()["a"], 1);
    }
}
