//! Encoding responses in the negotiated shape: JSON or YAML objects and lists, Tables,
//! PartialObjectMetadata, and the Warning headers collected while handling the request.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::table::{self, IncludeObject};
use crate::apiserver::request::Output;
use crate::apiserver::status::ApiError;
use crate::registry::catalog::ResourceInfo;
use crate::registry::served::ServedObject;

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

    /// One object read from the store (200): JSON is its served bytes as they are.
    pub fn served(&self, res: &ResourceInfo, obj: ServedObject) -> Response {
        if !matches!(self.output, Output::Json) {
            return self.object(StatusCode::OK, res, obj.into_value());
        }
        let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], obj.json())
            .into_response();
        add_warnings(&mut resp, &self.warnings);
        resp
    }

    /// A list of `res`.
    pub fn list(
        &self,
        res: &ResourceInfo,
        items: Vec<ServedObject>,
        resource_version: String,
        cont: Option<String>,
    ) -> Response {
        let mut meta = json!({"resourceVersion": resource_version});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        let body = match &self.output {
            Output::Table { version } => {
                let items: Vec<Value> = items.into_iter().map(ServedObject::into_value).collect();
                table::table(res, &items, meta, version, self.include)
            }
            Output::Metadata { version } => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": format!("meta.k8s.io/{version}"),
                "metadata": meta,
                "items": items.iter().map(|o| table::partial_metadata(o.value(), version)).collect::<Vec<_>>(),
            }),
            Output::Yaml => {
                let items = items.into_iter().map(ServedObject::into_value).collect();
                let mut list = serde_json::Map::new();
                list.insert("kind".into(), json!(res.list_kind));
                list.insert("apiVersion".into(), json!(res.api_version()));
                list.insert("metadata".into(), meta);
                list.insert("items".into(), Value::Array(items));
                Value::Object(list)
            }
            // JSON: the items' own encodings, which are made from the stored bytes.
            Output::Json => return self.json_list(res, &items, &meta),
        };
        self.encode(StatusCode::OK, &body)
    }

    /// A JSON list of the items' encodings: `{"kind", "apiVersion", "metadata", "items"}`, the
    /// same bytes as encoding the list object.
    fn json_list(&self, res: &ResourceInfo, items: &[ServedObject], meta: &Value) -> Response {
        let encoded: Vec<bytes::Bytes> = items.iter().map(ServedObject::json).collect();
        let size = encoded.iter().map(|b| b.len() + 1).sum::<usize>() + 256;
        let mut out = Vec::with_capacity(size);
        let head =
            json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": meta});
        let _ = serde_json::to_writer(&mut out, &head);
        // Reopen the head object to append the items.
        out.pop();
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in encoded.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}");
        let mut resp =
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], out).into_response();
        add_warnings(&mut resp, &self.warnings);
        resp
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog::catalog;
    use crate::registry::generic::decode_bytes;

    #[tokio::test]
    async fn a_json_list_is_the_encoding_of_the_list_object() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let stored = [
            json!({"metadata": {"name": "a", "namespace": "d"}, "data": {"k": "v"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}),
        ];
        let items: Vec<ServedObject> = stored
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let bytes = bytes::Bytes::from(serde_json::to_vec(o).unwrap());
                ServedObject::stored(res, &bytes, 10 + i as i64).unwrap()
            })
            .collect();
        let decoded: Vec<Value> = stored
            .iter()
            .enumerate()
            .map(|(i, o)| {
                decode_bytes(res, &serde_json::to_vec(o).unwrap(), 10 + i as i64).unwrap()
            })
            .collect();
        let shape =
            Shape { output: Output::Json, include: IncludeObject::Metadata, warnings: vec![] };
        for cont in [None, Some("token".to_string())] {
            let resp = shape.list(res, items.clone(), "12".into(), cont.clone());
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let mut meta = json!({"resourceVersion": "12"});
            if let Some(c) = cont {
                meta["continue"] = json!(c);
            }
            let want = json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": meta,
                              "items": decoded});
            assert_eq!(
                String::from_utf8(body.to_vec()).unwrap(),
                serde_json::to_string(&want).unwrap()
            );
        }
    }

    #[tokio::test]
    async fn a_served_object_answers_as_the_decoded_object_would() {
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let stored = json!({"metadata": {"name": "a", "namespace": "d", "resourceVersion": "1"},
                            "data": {"k": "v\"w"}});
        let bytes = bytes::Bytes::from(serde_json::to_vec(&stored).unwrap());
        let body = |resp: Response| async move {
            let ctype = resp.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (ctype, String::from_utf8(body.to_vec()).unwrap())
        };
        let outputs = [
            Output::Json,
            Output::Yaml,
            Output::Table { version: "v1".into() },
            Output::Metadata { version: "v1".into() },
        ];
        for output in outputs {
            let shape = Shape { output, include: IncludeObject::Metadata, warnings: vec![] };
            let served = ServedObject::stored(res, &bytes, 7).unwrap();
            let got = body(shape.served(res, served)).await;
            let decoded = decode_bytes(res, &bytes, 7).unwrap();
            let want = body(shape.object(StatusCode::OK, res, decoded)).await;
            assert_eq!(got, want, "{:?}", shape.output);
        }
    }
}
