//! Partly decoded objects: a stored object's JSON split into the few fields a write wants to
//! read or change (decoded into a [`Value`]) and everything else (kept as the stored JSON text,
//! never decoded). Joining them writes the untouched parts back byte for byte, in their order,
//! with the decoded parts as the write left them. A binding changes three fields of a pod whose
//! JSON is mostly containers and managed fields; decoding and dropping all of it was the largest
//! single cost of the scheduler's bindings.

use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Which fields to decode: a tree of field names, built from dot-separated paths.
#[derive(Debug, Default)]
pub struct Wanted<'p> {
    /// Decode this field whole.
    whole: bool,
    children: Vec<(&'p str, Wanted<'p>)>,
}

impl<'p> Wanted<'p> {
    /// The fields at `paths` ("spec.nodeName", "status", ...); a field wanted whole takes all
    /// that is under it.
    pub fn paths(paths: &[&'p str]) -> Wanted<'p> {
        let mut root = Wanted::default();
        for path in paths {
            let mut at = &mut root;
            for name in path.split('.') {
                let i = match at.children.iter().position(|(n, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        at.children.push((name, Wanted::default()));
                        at.children.len() - 1
                    }
                };
                at = &mut at.children[i].1;
            }
            at.whole = true;
        }
        root
    }

    fn child(&self, name: &str) -> Option<&Wanted<'p>> {
        self.children.iter().find(|(n, _)| *n == name).map(|(_, w)| w)
    }
}

/// Where each field of an object went, in the stored order.
#[derive(Debug)]
pub struct Skeleton<'a> {
    fields: Vec<(String, Slot<'a>)>,
}

#[derive(Debug)]
enum Slot<'a> {
    /// Not wanted: the stored JSON text.
    Raw(&'a RawValue),
    /// Decoded whole; the value is in the view under the same name.
    Decoded,
    /// An object with wanted fields inside: its own skeleton (the view holds an object with
    /// just the wanted fields).
    Object(Skeleton<'a>),
}

/// Splits a stored object: the wanted fields as an object (the view) and the skeleton that
/// holds the rest.
pub fn split<'a>(
    bytes: &'a [u8],
    wanted: &Wanted<'_>,
) -> serde_json::Result<(Value, Skeleton<'a>)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ObjectSeed(wanted).deserialize(&mut de)?;
    de.end()?;
    match parsed {
        Parsed::Object(view, skeleton) => Ok((Value::Object(view), skeleton)),
        Parsed::Other(_) => Err(serde::de::Error::custom("a stored object is not a JSON object")),
    }
}

/// The object again: the skeleton's stored parts and the view's (possibly changed) fields, in
/// the stored order, then fields the view gained. A decoded field the view lost is left out.
pub fn join(skeleton: &Skeleton<'_>, view: &Value) -> serde_json::Result<Vec<u8>> {
    match view {
        Value::Object(view) => serde_json::to_vec(&Joined { skeleton, view }),
        other => serde_json::to_vec(other),
    }
}

enum Parsed<'a> {
    Object(Map<String, Value>, Skeleton<'a>),
    /// Not an object where one was expected (null, a list, ...): decoded whole.
    Other(Value),
}

struct ObjectSeed<'w, 'p>(&'w Wanted<'p>);

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_> {
    type Value = Parsed<'de>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Parsed<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_> {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut view = Map::new();
        let mut fields = vec![];
        while let Some(name) = map.next_key::<String>()? {
            match self.0.child(&name) {
                None => {
                    let raw: &'de RawValue = map.next_value()?;
                    fields.push((name, Slot::Raw(raw)));
                }
                Some(w) if w.whole => {
                    view.insert(name.clone(), map.next_value::<Value>()?);
                    fields.push((name, Slot::Decoded));
                }
                Some(w) => match map.next_value_seed(ObjectSeed(w))? {
                    Parsed::Object(inner, skeleton) => {
                        view.insert(name.clone(), Value::Object(inner));
                        fields.push((name, Slot::Object(skeleton)));
                    }
                    Parsed::Other(v) => {
                        view.insert(name.clone(), v);
                        fields.push((name, Slot::Decoded));
                    }
                },
            }
        }
        Ok(Parsed::Object(view, Skeleton { fields }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Parsed<'de>, A::Error> {
        let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Parsed::Other(v))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(Value::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Other(Value::Null))
    }
}

struct Joined<'s, 'a> {
    skeleton: &'s Skeleton<'a>,
    view: &'s Map<String, Value>,
}

impl Serialize for Joined<'_, '_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(None)?;
        for (name, slot) in &self.skeleton.fields {
            match (slot, self.view.get(name)) {
                (Slot::Raw(raw), _) => map.serialize_entry(name, raw)?,
                (Slot::Object(skeleton), Some(Value::Object(view))) => {
                    map.serialize_entry(name, &Joined { skeleton, view })?
                }
                (_, Some(v)) => map.serialize_entry(name, v)?,
                (_, None) => {}
            }
        }
        let known = |n: &String| self.skeleton.fields.iter().any(|(f, _)| f == n);
        for (name, v) in self.view.iter().filter(|(n, _)| !known(n)) {
            map.serialize_entry(name, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"},
                         "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "", "x": null},
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }))
        .unwrap()
    }

    #[test]
    fn unchanged_views_join_to_the_same_bytes_and_only_wanted_fields_are_decoded() {
        let bytes = pod();
        let wanted = Wanted::paths(&["metadata.annotations", "spec.nodeName", "status", "spec.x"]);
        let (view, skeleton) = split(&bytes, &wanted).unwrap();
        assert_eq!(
            view,
            json!({"metadata": {}, "spec": {"nodeName": "", "x": null},
                   "status": {"phase": "Pending", "qosClass": "BestEffort"}})
        );
        assert_eq!(join(&skeleton, &view).unwrap(), bytes);
        // Nothing wanted: all raw, still the same bytes.
        let (view, skeleton) = split(&bytes, &Wanted::default()).unwrap();
        assert_eq!(view, json!({}));
        assert_eq!(join(&skeleton, &view).unwrap(), bytes);
    }

    #[test]
    fn edits_of_the_view_land_where_a_full_decode_would_put_them() {
        let bytes = pod();
        let wanted = Wanted::paths(&["metadata.annotations", "spec.nodeName", "status", "kind"]);
        let (mut view, skeleton) = split(&bytes, &wanted).unwrap();
        let edit = |obj: &mut Value| {
            obj["spec"]["nodeName"] = json!("n1");
            obj["metadata"]["annotations"] = json!({"k": "v"});
            obj["status"]["conditions"] = json!([{"type": "PodScheduled"}]);
            obj.as_object_mut().unwrap().shift_remove("kind");
            obj["apiVersion"] = json!("v1");
        };
        edit(&mut view);
        let mut full: Value = serde_json::from_slice(&bytes).unwrap();
        edit(&mut full);
        let joined = join(&skeleton, &view).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&joined).unwrap(), full);
        assert_eq!(joined, serde_json::to_vec(&full).unwrap(), "same order");
    }

    #[test]
    fn wanted_objects_that_are_not_objects_are_decoded_whole_and_bad_json_is_an_error() {
        let bytes = br#"{"spec":null,"status":[1,{"a":2}],"metadata":"m"}"#;
        let wanted = Wanted::paths(&["spec.nodeName", "status.phase", "metadata.name"]);
        let (mut view, skeleton) = split(bytes, &wanted).unwrap();
        assert_eq!(view, json!({"spec": null, "status": [1, {"a": 2}], "metadata": "m"}));
        view["spec"] = json!({"nodeName": "n"});
        let joined = join(&skeleton, &view).unwrap();
        assert_eq!(joined, br#"{"spec":{"nodeName":"n"},"status":[1,{"a":2}],"metadata":"m"}"#);
        assert!(split(b"[1]", &wanted).is_err());
        assert!(split(br#"{"spec":{"nodeName":}"#, &wanted).is_err());
        assert!(split(br#"{"a":1} x"#, &wanted).is_err());
    }
}
