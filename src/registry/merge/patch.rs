//! The strategic merge patch algorithm on `serde_json::Value`: objects merge key by key (null
//! deletes), lists marked `patch=merge` merge by their merge key (scalar lists: union), other
//! lists are replaced, and the directives `$patch`, `$retainKeys`, `$setElementOrder/<field>`
//! and `$deleteFromPrimitiveList/<field>` are honoured.
//!
//! Unlike upstream, values the original does not have yet are cleaned before they are stored
//! (nulls dropped, directives applied) rather than copied raw, and `$patch: merge` is accepted
//! as an explicit request for the default behaviour.

use serde_json::{Map, Value};

use super::order::{self, Identify};
use super::schemas::{FieldType, TypeSchemas};
use super::semantics::{FieldSemantics, Semantics};
use super::MergeError;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// Walks original and patch together, looking up types and semantics as it descends.
pub struct Patcher<'a> {
    pub schemas: &'a TypeSchemas,
    pub semantics: &'a Semantics,
}

/// What is known about a field: its type (if any) and its semantics (if any).
type Field<'a> = (Option<&'a FieldType>, Option<&'a FieldSemantics>);

impl<'a> Patcher<'a> {
    /// Merges `patch` into `original`; `node` is the type of both.
    pub fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        node: Option<&'a FieldType>,
    ) -> Result<Map<String, Value>, MergeError> {
        if let Some(directive) = patch.shift_remove(PATCH) {
            match directive.as_str() {
                Some("replace") => return self.merge_map(Map::new(), patch, node),
                Some("delete") => return Ok(Map::new()),
                Some("merge") => {}
                _ => return Err(bad_patch_type(&directive)),
            }
        }
        apply_retain_keys(&mut original, &mut patch)?;
        self.apply_element_orders(&mut original, &mut patch, node)?;
        apply_primitive_deletions(&mut original, &mut patch)?;

        for (key, value) in patch {
            if value.is_null() {
                original.shift_remove(&key);
                continue;
            }
            let (field_type, semantics) = self.lookup(node, &key);
            let merged = match original.shift_remove_entry(&key) {
                None => {
                    original.insert(key, self.fresh(value, field_type, semantics)?);
                    continue;
                }
                Some((_, current)) => self.merge_value(current, value, field_type, semantics)?,
            };
            original.insert(key, merged);
        }
        Ok(original)
    }

    /// Merges one field's value; both sides are present and the patch value is not null.
    fn merge_value(
        &self,
        current: Value,
        patch: Value,
        field_type: Option<&'a FieldType>,
        semantics: Option<&'a FieldSemantics>,
    ) -> Result<Value, MergeError> {
        let replaces = semantics.is_some_and(FieldSemantics::replaces);
        match (current, patch) {
            (Value::Object(o), Value::Object(p)) if !replaces => {
                Ok(Value::Object(self.merge_map(o, p, field_type)?))
            }
            (Value::Array(o), Value::Array(p)) => {
                Ok(Value::Array(self.merge_list_field(o, p, field_type, semantics)?))
            }
            (_, p) => self.fresh(p, field_type, semantics),
        }
    }

    /// A patch value stored where the original has nothing to merge with: cleaned of nulls and
    /// directives.
    fn fresh(
        &self,
        value: Value,
        field_type: Option<&'a FieldType>,
        semantics: Option<&'a FieldSemantics>,
    ) -> Result<Value, MergeError> {
        match value {
            Value::Object(p) => Ok(Value::Object(self.merge_map(Map::new(), p, field_type)?)),
            Value::Array(p) => {
                Ok(Value::Array(self.merge_list_field(Vec::new(), p, field_type, semantics)?))
            }
            other => Ok(other),
        }
    }

    /// Merges a list field according to its strategy: merged lists merge, others are replaced.
    fn merge_list_field(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        field_type: Option<&'a FieldType>,
        semantics: Option<&'a FieldSemantics>,
    ) -> Result<Vec<Value>, MergeError> {
        let element = match field_type {
            Some(FieldType::List(inner)) => Some(inner.as_ref()),
            _ => None,
        };
        match semantics {
            Some(s) if s.merges() => {
                self.merge_list(original, patch, element, s.patch_merge_key.as_deref())
            }
            _ => Ok(patch.into_iter().map(drop_nulls).collect()),
        }
    }

    /// Merges two lists with merge strategy: objects by merge key, scalars as a union.
    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        element: Option<&'a FieldType>,
        merge_key: Option<&str>,
    ) -> Result<Vec<Value>, MergeError> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        if !elements_are_objects(&original, &patch)? {
            let server_order = original.clone();
            let mut both = original;
            both.extend(patch.iter().cloned());
            let merged = order::dedup_scalars(both);
            let (in_patch, server_only) = order::partition(merged, &patch, Identify::ByValue)?;
            return order::normalize(
                in_patch,
                server_only,
                &patch,
                &server_order,
                Identify::ByValue,
            );
        }
        let key = merge_key.ok_or_else(|| {
            MergeError::Invalid("cannot merge lists of objects without a merge key".into())
        })?;
        let how = Identify::ByKey(key);

        // Elements carrying `$patch`: deletions, a whole-list replacement, explicit merges.
        let mut original = original;
        let mut plain = Vec::with_capacity(patch.len());
        let mut replace = false;
        for mut item in patch {
            let directive = item.as_object_mut().and_then(|m| m.shift_remove(PATCH));
            match directive {
                None => plain.push(item),
                Some(d) => match d.as_str() {
                    Some("delete") => {
                        let id = how.require(&item)?;
                        original.retain(|e| how.of(e).as_ref() != Some(&id));
                    }
                    Some("replace") => replace = true,
                    Some("merge") => plain.push(item),
                    _ => return Err(bad_patch_type(&d)),
                },
            }
        }
        let (original, patch) = if replace {
            let mut replacement = Vec::with_capacity(plain.len());
            for item in plain {
                how.require(&item)?;
                let map = item.as_object().cloned().unwrap_or_default();
                replacement.push(Value::Object(self.merge_map(Map::new(), map, element)?));
            }
            (replacement, Vec::new())
        } else {
            (original, plain)
        };

        let server_order = original.clone();
        let mut merged = original;
        for item in &patch {
            let id = how.require(item)?;
            let mut found = None;
            for (i, existing) in merged.iter().enumerate() {
                if !existing.is_object() {
                    return Err(MergeError::Invalid(format!("list element {i} is not an object")));
                }
                if how.of(existing).as_ref() == Some(&id) {
                    found = Some(i);
                    break;
                }
            }
            let patch_map = item.as_object().cloned().unwrap_or_default();
            match found {
                Some(i) => {
                    let current = match std::mem::take(&mut merged[i]) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    merged[i] = Value::Object(self.merge_map(current, patch_map, element)?);
                }
                None => {
                    merged.push(Value::Object(self.merge_map(Map::new(), patch_map, element)?))
                }
            }
        }
        let (in_patch, server_only) = order::partition(merged, &patch, how)?;
        order::normalize(in_patch, server_only, &patch, &server_order, how)
    }
}

impl<'a> Patcher<'a> {
    /// The type and semantics of field `key` of an object of type `node`.
    fn lookup(&self, node: Option<&'a FieldType>, key: &str) -> Field<'a> {
        match node {
            Some(FieldType::Named(name)) => {
                (self.schemas.field_type(name, key), self.semantics.field(name, key))
            }
            Some(FieldType::Map(values)) => (Some(values.as_ref()), None),
            _ => (None, None),
        }
    }

    /// Handles every `$setElementOrder/<field>` of `patch`: merges the field's list (if the
    /// patch has it) and puts the result in the requested order.
    fn apply_element_orders(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        node: Option<&'a FieldType>,
    ) -> Result<(), MergeError> {
        let keys: Vec<String> =
            patch.keys().filter(|k| k.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
        for key in keys {
            let field = directive_field(&key, SET_ELEMENT_ORDER)?;
            let order = match patch.shift_remove(&key) {
                Some(Value::Array(order)) => order,
                _ => return Err(bad_format(SET_ELEMENT_ORDER)),
            };
            let (field_type, semantics) = self.lookup(node, &field);
            let patch_list = match patch.shift_remove(&field) {
                None => None,
                Some(Value::Array(list)) => Some(list),
                Some(_) => return Err(bad_format(SET_ELEMENT_ORDER)),
            };
            let original_list = match original.get(&field) {
                None => None,
                Some(Value::Array(list)) => Some(list.clone()),
                Some(_) => {
                    return Err(MergeError::Invalid(format!(
                        "{SET_ELEMENT_ORDER}/{field}: the field is not a list"
                    )))
                }
            };
            let merges = semantics.is_some_and(FieldSemantics::merges);
            let merge_key = semantics.and_then(|s| s.patch_merge_key.as_deref());
            let how = match merge_key {
                Some(k) => Identify::ByKey(k),
                None => Identify::ByValue,
            };
            if let Some(list) = &patch_list {
                validate_order(list, &order, how)?;
            }
            let merged = match (original_list.clone(), patch_list) {
                (None, None) => continue,
                (Some(o), None) => o,
                (o, Some(p)) => {
                    self.merge_list_field(o.unwrap_or_default(), p, field_type, semantics)?
                }
            };
            let ordered = if merges && !merged.is_empty() {
                let how = if merged.iter().all(Value::is_object) {
                    match merge_key {
                        Some(k) => Identify::ByKey(k),
                        None => {
                            return Err(MergeError::Invalid(
                                "cannot merge lists of objects without a merge key".into(),
                            ))
                        }
                    }
                } else {
                    Identify::ByValue
                };
                let (in_order, server_only) = order::partition(merged, &order, how)?;
                let live = original_list.unwrap_or_default();
                order::normalize(in_order, server_only, &order, &live, how)?
            } else {
                merged
            };
            original.insert(field, Value::Array(ordered));
        }
        Ok(())
    }
}

/// Applies `$retainKeys`: drops original fields the list does not name. Every field the patch
/// sets must be named.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), MergeError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(bad_format(RETAIN_KEYS));
    };
    let mut keep = std::collections::HashSet::new();
    for item in &list {
        match item.as_str() {
            Some(k) => keep.insert(k.to_string()),
            None => return Err(bad_format(RETAIN_KEYS)),
        };
    }
    for (k, v) in patch.iter() {
        let directive =
            k.starts_with(SET_ELEMENT_ORDER) || k.starts_with(DELETE_FROM_PRIMITIVE_LIST);
        if !v.is_null() && !directive && !keep.contains(k) {
            return Err(MergeError::BadRequest(format!(
                "invalid patch format of {RETAIN_KEYS}: the patch sets {k:?}, which the list omits"
            )));
        }
    }
    original.retain(|k, _| keep.contains(k));
    Ok(())
}

/// Applies every `$deleteFromPrimitiveList/<field>`: removes the listed scalars from the field.
fn apply_primitive_deletions(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), MergeError> {
    let keys: Vec<String> =
        patch.keys().filter(|k| k.starts_with(DELETE_FROM_PRIMITIVE_LIST)).cloned().collect();
    for key in keys {
        let field = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST)?;
        let remove = match patch.shift_remove(&key) {
            Some(Value::Array(remove)) => remove,
            _ => return Err(bad_format(DELETE_FROM_PRIMITIVE_LIST)),
        };
        if remove.iter().any(|v| v.is_object() || v.is_array()) {
            return Err(bad_format(DELETE_FROM_PRIMITIVE_LIST));
        }
        if let Some(Value::Array(list)) = original.get_mut(&field) {
            if list.iter().any(|v| v.is_object() || v.is_array()) {
                return Err(MergeError::Invalid(format!(
                    "{DELETE_FROM_PRIMITIVE_LIST}/{field}: the field is not a list of scalars"
                )));
            }
            let gone: std::collections::HashSet<String> =
                remove.iter().map(order::identity).collect();
            list.retain(|v| !gone.contains(&order::identity(v)));
        }
    }
    Ok(())
}

/// Checks that the patch list's elements appear in the same relative order as in the
/// `$setElementOrder` list (deletions aside).
fn validate_order(patch: &[Value], order: &[Value], how: Identify) -> Result<(), MergeError> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut pending = patch.iter().filter(|v| v.get(PATCH).is_none()).peekable();
    for wanted in order {
        let wanted = how.require(wanted)?;
        if let Some(next) = pending.peek() {
            if how.require(next)? == wanted {
                pending.next();
            }
        }
    }
    match pending.next() {
        None => Ok(()),
        Some(_) => Err(MergeError::Invalid(format!(
            "the order of the patch list does not match its {SET_ELEMENT_ORDER} list"
        ))),
    }
}

/// Whether a merged list holds objects (true) or scalars (false); mixed lists and lists of
/// lists cannot merge.
fn elements_are_objects(original: &[Value], patch: &[Value]) -> Result<bool, MergeError> {
    let mut kind = None;
    for v in original.iter().chain(patch) {
        let k = match v {
            Value::Array(_) => {
                return Err(MergeError::Invalid("lists of lists are not supported".into()))
            }
            Value::Object(_) => 0,
            Value::String(_) => 1,
            Value::Number(_) => 2,
            Value::Bool(_) => 3,
            Value::Null => 4,
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(MergeError::Invalid(
                    "list elements are not all of the same type".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(kind == Some(0))
}

/// Removes null members of objects, at any depth (a replaced value has nothing to delete).
fn drop_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, drop_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(drop_nulls).collect()),
        other => other,
    }
}

/// The field a `<prefix>/<field>` directive names.
fn directive_field(key: &str, prefix: &str) -> Result<String, MergeError> {
    match key.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('/')) {
        Some(field) if !field.is_empty() => Ok(field.to_string()),
        _ => Err(bad_format(prefix)),
    }
}

fn bad_format(directive: &str) -> MergeError {
    MergeError::BadRequest(format!("invalid patch format of {directive}"))
}

fn bad_patch_type(value: &Value) -> MergeError {
    MergeError::BadRequest(format!("unknown patch type: {value} in map"))
}
