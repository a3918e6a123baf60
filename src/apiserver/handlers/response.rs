//! Encoding responses in the negotiated shape: JSON or YAML objects and lists, Tables,
//! PartialObjectMetadata, and the Warning headers collected while handling the request.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::table::{self, IncludeObject};
use crate::apiserver::request::Output;
use crate::apiserver::status::ApiError;
use crate::registry::catalog::ResourceInfo;

/// How to shape the response of one request.
#[derive(Clone, Debug)]
pub struct Shape {
    pub output: Output,
    pub include: IncludeObject,
    pub warnings: Vec<String>,
}

impl Shape {
    /// A single object of `res` (a get, or the result of a write).
    pub fn object(&self, code: StatusCode, res: &ResourceInfo, obj: Value) -> Response {
        let body = match &self.output {
            Output::Table { version } if is_resource_object(res, &obj) => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"].clone()});
                table::table(res, std::slice::from_ref(&obj), meta, version, self.include)
            }
            Output::Metadata { version } if is_resource_object(res, &obj) => {
                table::partial_metadata(&obj, version)
            }
            _ => obj,
        };
        self.encode(code, &body)
    }

    /// A list of `res`.
    pub fn list(
        &self,
        res: &ResourceInfo,
        items: Vec<Value>,
        resource_version: String,
        cont: Option<String>,
    ) -> Response {
        let mut meta = json!({"resourceVersion": resource_version});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        let body = match &self.output {
            Output::Table { version } => table::table(res, &items, meta, version, self.include),
            Output::Metadata { version } => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": format!("meta.k8s.io/{version}"),
                "metadata": meta,
                "items": items.iter().map(|o| table::partial_metadata(o, version)).collect::<Vec<_>>(),
            }),
            _ => json!({
                "kind": res.list_kind,
                "apiVersion": res.api_version(),
                "metadata": meta,
                "items": items,
            }),
        };
        self.encode(StatusCode::OK, &body)
    }

    /// Any value, JSON or YAML as negotiated.
    pub fn encode(&self, code: StatusCode, body: &Value) -> Response {
        let (ctype, bytes) = match self.output {
            Output::Yaml => match serde_norway::to_string(body) {
                Ok(s) => ("application/yaml", s.into_bytes()),
                Err(e) => return ApiError::internal(e.to_string()).into_response(),
            },
            _ => ("application/json", serde_json::to_vec(body).unwrap_or_default()),
        };
        let mut resp = (code, [(header::CONTENT_TYPE, ctype)], bytes).into_response();
        add_warnings(&mut resp, &self.warnings);
        resp
    }
}

/// Adds `Warning: 299 - "<text>"` headers.
pub fn add_warnings(resp: &mut Response, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

/// The metav1.Status a delete answers with when the object is gone.
pub fn success_status(res: &ResourceInfo, obj: &Value) -> Value {
    let mut details = json!({
        "name": obj["metadata"]["name"].clone(),
        "kind": res.plural,
        "uid": obj["metadata"]["uid"].clone(),
    });
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn is_resource_object(res: &ResourceInfo, obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some(res.kind)
}
