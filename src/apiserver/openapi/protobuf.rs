//! Encodes a Swagger 2.0 JSON document as gnostic's `openapi.v2.Document` protobuf, the only
//! form in which kubectl (up to 1.28 for create, apply and explain) reads /openapi/v2.
//!
//! A small hand-written encoder for the messages such a document uses: Document, Info, Paths,
//! PathItem, Operation, parameters, Responses, Schema and vendor extensions (their values are
//! carried as YAML text; JSON is YAML).

use serde_json::{Map, Value};

/// Encodes a whole Swagger 2.0 document.
pub fn document(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    m.string(1, str_of(doc, "swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = Msg::default();
        i.string(1, str_of(info, "title"));
        i.string(2, str_of(info, "version"));
        m.message(2, i);
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, item) in paths {
            p.message(2, named(name, path_item(item)));
        }
        m.message(8, p);
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        let mut d = Msg::default();
        for (name, s) in defs {
            d.message(1, named(name, schema(s)));
        }
        m.message(9, d);
    }
    m.extensions(16, doc);
    m.0
}

fn path_item(item: &Value) -> Msg {
    let mut m = Msg::default();
    for (field, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = item.get(method) {
            m.message(field, operation(op));
        }
    }
    for p in array_of(item, "parameters") {
        m.message(9, parameter(p));
    }
    m.extensions(10, item);
    m
}

fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    for tag in array_of(op, "tags") {
        m.string(1, tag.as_str().unwrap_or_default());
    }
    m.string(3, str_of(op, "description"));
    m.string(5, str_of(op, "operationId"));
    for media in array_of(op, "produces") {
        m.string(6, media.as_str().unwrap_or_default());
    }
    for media in array_of(op, "consumes") {
        m.string(7, media.as_str().unwrap_or_default());
    }
    for p in array_of(op, "parameters") {
        m.message(8, parameter(p));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut r = Msg::default();
        for (code, response) in responses {
            let mut body = Msg::default();
            body.string(1, str_of(response, "description"));
            if let Some(s) = response.get("schema") {
                let mut item = Msg::default();
                item.message(1, schema(s));
                body.message(2, item);
            }
            body.extensions(5, response);
            let mut value = Msg::default();
            value.message(1, body);
            r.message(1, named(code, value));
        }
        m.message(9, r);
    }
    for scheme in array_of(op, "schemes") {
        m.string(10, scheme.as_str().unwrap_or_default());
    }
    m.extensions(13, op);
    m
}

/// A `ParametersItem` holding a body, query or path parameter.
fn parameter(p: &Value) -> Msg {
    let location = str_of(p, "in");
    let mut parameter = Msg::default();
    if location == "body" {
        let mut b = Msg::default();
        b.string(1, str_of(p, "description"));
        b.string(2, str_of(p, "name"));
        b.string(3, location);
        b.boolean(4, bool_of(p, "required"));
        if let Some(s) = p.get("schema") {
            b.message(5, schema(s));
        }
        parameter.message(1, b);
    } else {
        // Query and path parameters share a layout up to `type`, shifted by one field for
        // query's allowEmptyValue.
        let (which, shift) = if location == "path" { (4, 0) } else { (3, 1) };
        let mut s = Msg::default();
        s.boolean(1, bool_of(p, "required"));
        s.string(2, location);
        s.string(3, str_of(p, "description"));
        s.string(4, str_of(p, "name"));
        s.string(5 + shift, str_of(p, "type"));
        s.string(6 + shift, str_of(p, "format"));
        s.boolean(19 + shift, bool_of(p, "uniqueItems"));
        let mut non_body = Msg::default();
        non_body.message(which, s);
        parameter.message(2, non_body);
    }
    let mut item = Msg::default();
    item.message(1, parameter);
    item
}

/// An `openapi.v2.Schema`.
fn schema(s: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(obj) = s.as_object() else {
        return m;
    };
    m.string(1, str_of(s, "$ref"));
    m.string(2, str_of(s, "format"));
    m.string(3, str_of(s, "title"));
    m.string(4, str_of(s, "description"));
    if let Some(v) = obj.get("default") {
        m.message(5, any(v));
    }
    for (field, key) in [(6, "multipleOf"), (7, "maximum"), (9, "minimum")] {
        if let Some(f) = obj.get(key).and_then(Value::as_f64) {
            m.double(field, f);
        }
    }
    m.boolean(8, bool_of(s, "exclusiveMaximum"));
    m.boolean(10, bool_of(s, "exclusiveMinimum"));
    for (field, key) in [
        (11, "maxLength"),
        (12, "minLength"),
        (14, "maxItems"),
        (15, "minItems"),
        (17, "maxProperties"),
        (18, "minProperties"),
    ] {
        if let Some(n) = obj.get(key).and_then(Value::as_i64) {
            m.int64(field, n);
        }
    }
    m.string(13, str_of(s, "pattern"));
    m.boolean(16, bool_of(s, "uniqueItems"));
    for r in array_of(s, "required") {
        m.string(19, r.as_str().unwrap_or_default());
    }
    for e in array_of(s, "enum") {
        m.message(20, any(e));
    }
    match obj.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            a.boolean_always(2, *b);
            m.message(21, a);
        }
        Some(v @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.message(1, schema(v));
            m.message(21, a);
        }
        _ => {}
    }
    match obj.get("type") {
        Some(Value::String(t)) => {
            let mut t_item = Msg::default();
            t_item.string(1, t);
            m.message(22, t_item);
        }
        Some(Value::Array(types)) => {
            let mut t_item = Msg::default();
            for t in types {
                t_item.string(1, t.as_str().unwrap_or_default());
            }
            m.message(22, t_item);
        }
        _ => {}
    }
    match obj.get("items") {
        Some(v @ Value::Object(_)) => {
            let mut items = Msg::default();
            items.message(1, schema(v));
            m.message(23, items);
        }
        Some(Value::Array(list)) => {
            let mut items = Msg::default();
            for v in list {
                items.message(1, schema(v));
            }
            m.message(23, items);
        }
        _ => {}
    }
    for sub in array_of(s, "allOf") {
        m.message(24, schema(sub));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (name, prop) in props {
            p.message(1, named(name, schema(prop)));
        }
        m.message(25, p);
    }
    m.string(26, str_of(s, "discriminator"));
    m.boolean(27, bool_of(s, "readOnly"));
    if let Some(v) = obj.get("example") {
        m.message(30, any(v));
    }
    m.extensions(31, s);
    m
}

/// A `Named*` pair: name, then the value message.
fn named(name: &str, value: Msg) -> Msg {
    let mut m = Msg::default();
    m.string(1, name);
    m.message(2, value);
    m
}

/// An `openapi.v2.Any` carrying its value as YAML (JSON text).
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string_always(2, &v.to_string());
    m
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn bool_of(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or_default()
}

fn array_of<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// A message being encoded (proto3: default scalars are left out).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn bytes(&mut self, field: u32, data: &[u8]) {
        self.key(field, 2);
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn string_always(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.boolean_always(field, b);
        }
    }

    fn boolean_always(&mut self, field: u32, b: bool) {
        self.key(field, 0);
        self.varint(u64::from(b));
    }

    fn int64(&mut self, field: u32, n: i64) {
        if n != 0 {
            self.key(field, 0);
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u32, f: f64) {
        if f != 0.0 {
            self.key(field, 1);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    /// The `x-*` members of an object, as repeated `NamedAny`.
    fn extensions(&mut self, field: u32, v: &Value) {
        let Some(obj): Option<&Map<String, Value>> = v.as_object() else {
            return;
        };
        for (k, value) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
            self.message(field, named(k, any(value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_fields_as_protobuf() {
        let mut m = Msg::default();
        m.string(1, "2.0");
        assert_eq!(m.0, [0x0a, 3, b'2', b'.', b'0']);
        let mut m = Msg::default();
        m.varint(300);
        assert_eq!(m.0, [0xac, 0x02]);
        let mut m = Msg::default();
        m.boolean(4, false);
        assert!(m.0.is_empty());
    }

    #[test]
    fn schema_carries_refs_types_and_extensions() {
        let s = json!({
            "type": "object",
            "properties": {"a": {"$ref": "#/definitions/X", "description": "d"}},
            "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}],
        });
        let bytes = schema(&s).0;
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("#/definitions/X"));
        assert!(text.contains("x-kubernetes-group-version-kind"));
        assert!(text.contains("object"));
    }
}
