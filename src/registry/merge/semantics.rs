//! skiff's description of Kubernetes list and map semantics (`openapi/list-semantics.yaml`):
//! which lists strategic merge patch merges and by which key, which objects honour
//! `$retainKeys`, and the server-side apply list and map types. Parsed once, on first use.
//!
//! The same description drives strategic merge patch and the `x-kubernetes-*` extensions of the
//! OpenAPI documents, so the two cannot disagree.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The embedded description.
pub const LIST_SEMANTICS_YAML: &str = include_str!("../../../openapi/list-semantics.yaml");

/// What is wrong with the description (a build-time mistake; tests catch it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SemanticsError {
    #[error("list semantics description is not valid YAML: {0}")]
    Yaml(String),
    #[error("list semantics of {type_name}.{field}: bad token {token:?}")]
    Token { type_name: String, field: String, token: String },
}

/// How one field (or, for type-level entries, one type) behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSemantics {
    /// Patch strategies, in upstream spelling: "merge", "retainKeys", "replace".
    pub patch_strategies: Vec<String>,
    /// The field that identifies an element of a merged list.
    pub patch_merge_key: Option<String>,
    /// Server-side apply list type: "atomic", "set" or "map".
    pub list_type: Option<String>,
    /// Server-side apply keys of a "map" list.
    pub list_map_keys: Vec<String>,
    /// Server-side apply map type: "atomic" or "granular".
    pub map_type: Option<String>,
    /// Discriminated unions declared on a type.
    pub unions: Vec<Union>,
}

/// A discriminated union: the discriminator field and, per member field, its discriminator value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Union {
    pub discriminator: String,
    pub fields: Vec<(String, String)>,
}

/// The semantics of one type: of the type itself and of its fields.
#[derive(Debug, Clone, Default)]
pub struct TypeSemantics {
    pub own: FieldSemantics,
    pub fields: BTreeMap<String, FieldSemantics>,
}

/// The whole description, keyed by full type name (e.g. `io.k8s.api.core.v1.PodSpec`).
#[derive(Debug, Clone, Default)]
pub struct Semantics {
    types: BTreeMap<String, TypeSemantics>,
}

impl Semantics {
    /// The embedded description, parsed on first use.
    pub fn get() -> Result<&'static Semantics, SemanticsError> {
        static PARSED: OnceLock<Result<Semantics, SemanticsError>> = OnceLock::new();
        PARSED.get_or_init(|| Semantics::parse(LIST_SEMANTICS_YAML)).as_ref().map_err(Clone::clone)
    }

    /// Parses a description in skiff's format.
    pub fn parse(text: &str) -> Result<Semantics, SemanticsError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Own(String),
            Fields(BTreeMap<String, String>),
        }
        let packages: BTreeMap<String, BTreeMap<String, Entry>> =
            serde_norway::from_str(text).map_err(|e| SemanticsError::Yaml(e.to_string()))?;
        let mut types = BTreeMap::new();
        for (package, entries) in packages {
            for (short, entry) in entries {
                let type_name = format!("{package}.{short}");
                let mut semantics = TypeSemantics::default();
                match entry {
                    Entry::Own(tokens) => semantics.own = parse_tokens(&type_name, ".", &tokens)?,
                    Entry::Fields(fields) => {
                        for (field, tokens) in fields {
                            let parsed = parse_tokens(&type_name, &field, &tokens)?;
                            if field == "." {
                                semantics.own = parsed;
                            } else {
                                semantics.fields.insert(field, parsed);
                            }
                        }
                    }
                }
                types.insert(type_name, semantics);
            }
        }
        Ok(Semantics { types })
    }

    /// The semantics of a type, if it has any beyond the defaults.
    pub fn of_type(&self, type_name: &str) -> Option<&TypeSemantics> {
        self.types.get(type_name)
    }

    /// The semantics of one field of a type, if it has any beyond the defaults.
    pub fn field(&self, type_name: &str, field: &str) -> Option<&FieldSemantics> {
        self.types.get(type_name)?.fields.get(field)
    }

    /// Every described type, in name order.
    pub fn types(&self) -> impl Iterator<Item = (&str, &TypeSemantics)> {
        self.types.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl FieldSemantics {
    /// Whether strategic merge patch merges this list (or, for maps, the default merge).
    pub fn merges(&self) -> bool {
        self.patch_strategies.iter().any(|s| s == "merge")
    }

    /// Whether strategic merge patch replaces this object instead of merging it.
    pub fn replaces(&self) -> bool {
        self.patch_strategies.iter().any(|s| s == "replace")
    }

    /// Whether the field honours `$retainKeys`.
    pub fn retains_keys(&self) -> bool {
        self.patch_strategies.iter().any(|s| s == "retainKeys")
    }

    /// The `x-kubernetes-*` extensions of this field (or type), as upstream spells them.
    pub fn extensions(&self) -> Map<String, Value> {
        let mut out = Map::new();
        if !self.list_map_keys.is_empty() {
            out.insert("x-kubernetes-list-map-keys".into(), json!(self.list_map_keys));
        }
        if let Some(t) = &self.list_type {
            out.insert("x-kubernetes-list-type".into(), json!(t));
        }
        if let Some(t) = &self.map_type {
            out.insert("x-kubernetes-map-type".into(), json!(t));
        }
        if let Some(k) = &self.patch_merge_key {
            out.insert("x-kubernetes-patch-merge-key".into(), json!(k));
        }
        if !self.patch_strategies.is_empty() {
            out.insert(
                "x-kubernetes-patch-strategy".into(),
                json!(self.patch_strategies.join(",")),
            );
        }
        if !self.unions.is_empty() {
            let unions: Vec<Value> = self
                .unions
                .iter()
                .map(|u| {
                    let fields: Map<String, Value> =
                        u.fields.iter().map(|(f, v)| (f.clone(), json!(v))).collect();
                    json!({"discriminator": u.discriminator, "fields-to-discriminateBy": fields})
                })
                .collect();
            out.insert("x-kubernetes-unions".into(), Value::Array(unions));
        }
        out
    }
}

fn parse_tokens(
    type_name: &str,
    field: &str,
    tokens: &str,
) -> Result<FieldSemantics, SemanticsError> {
    let bad = |token: &str| SemanticsError::Token {
        type_name: type_name.to_string(),
        field: field.to_string(),
        token: token.to_string(),
    };
    let mut out = FieldSemantics::default();
    for token in tokens.split_whitespace() {
        let (name, value) = token.split_once('=').ok_or_else(|| bad(token))?;
        let (head, args) = split_call(value).ok_or_else(|| bad(token))?;
        match name {
            "patch" => {
                out.patch_strategies = head.split('+').map(str::to_string).collect();
                let known = ["merge", "retainKeys", "replace"];
                if out.patch_strategies.iter().any(|s| !known.contains(&s.as_str())) {
                    return Err(bad(token));
                }
                match args {
                    Some(key) if !key.is_empty() && !key.contains(',') => {
                        out.patch_merge_key = Some(key.to_string())
                    }
                    Some(_) => return Err(bad(token)),
                    None => {}
                }
            }
            "list" => match (head, args) {
                ("atomic" | "set", None) => out.list_type = Some(head.to_string()),
                ("map", Some(keys)) if !keys.is_empty() => {
                    out.list_type = Some("map".into());
                    out.list_map_keys = keys.split(',').map(str::to_string).collect();
                }
                _ => return Err(bad(token)),
            },
            "map" => match (head, args) {
                ("atomic" | "granular", None) => out.map_type = Some(head.to_string()),
                _ => return Err(bad(token)),
            },
            "union" => {
                let members = args.ok_or_else(|| bad(token))?;
                let mut fields = Vec::new();
                for member in members.split(',') {
                    let (f, v) = member.split_once(':').ok_or_else(|| bad(token))?;
                    fields.push((f.to_string(), v.to_string()));
                }
                out.unions.push(Union { discriminator: head.to_string(), fields });
            }
            _ => return Err(bad(token)),
        }
    }
    Ok(out)
}

/// Splits `head(args)` into its parts; `head` alone has no arguments.
fn split_call(value: &str) -> Option<(&str, Option<&str>)> {
    match value.split_once('(') {
        None => Some((value, None)),
        Some((head, rest)) => Some((head, Some(rest.strip_suffix(')')?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_description_parses() {
        let s = Semantics::get().expect("parses");
        let env = s.field("io.k8s.api.core.v1.Container", "env").expect("env");
        assert!(env.merges());
        assert_eq!(env.patch_merge_key.as_deref(), Some("name"));
        assert_eq!(env.list_map_keys, vec!["name".to_string()]);
        let volumes = s.field("io.k8s.api.core.v1.PodSpec", "volumes").expect("volumes");
        assert_eq!(volumes.patch_strategies, vec!["merge", "retainKeys"]);
        let own = &s.of_type("io.k8s.api.core.v1.NodeSelector").expect("type").own;
        assert_eq!(own.map_type.as_deref(), Some("atomic"));
        let union = &s.of_type("io.k8s.api.flowcontrol.v1.Subject").expect("type").own;
        assert_eq!(union.unions[0].discriminator, "kind");
        assert_eq!(union.unions[0].fields.len(), 3);
    }

    #[test]
    fn rejects_unknown_tokens() {
        for bad in ["a:\n  T:\n    f: patch=mrge(name)\n", "a:\n  T: list=map\n", "a:\n  T: x\n"] {
            assert!(Semantics::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extensions_use_upstream_names() {
        let s = Semantics::get().expect("parses");
        let ports = s.field("io.k8s.api.core.v1.Container", "ports").expect("ports");
        let ext = Value::Object(ports.extensions());
        assert_eq!(
            ext,
            json!({
                "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                "x-kubernetes-list-type": "map",
                "x-kubernetes-patch-merge-key": "containerPort",
                "x-kubernetes-patch-strategy": "merge",
            })
        );
    }
}
