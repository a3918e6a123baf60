//! The registry: one generic store that does the verbs, keys, preconditions and watch once, and a
//! Strategy per resource (defaults, validation, status rules, selectable fields, table columns).
//!
//! Objects are handled as `serde_json::Value`s that went through their k8s-openapi type once
//! on the way in (see [`catalog::ResourceInfo::decode`]); stored bytes are that JSON without
//! metadata.resourceVersion.

pub mod admission;
pub mod bootstrap;
pub mod catalog;
pub mod continue_token;
pub mod create;
pub mod delete;
pub mod edit;
pub mod fieldpath;
pub mod generic;
pub mod managed_fields;
pub mod merge;
pub mod meta;
pub mod object;
pub mod options;
pub mod partial;
pub mod resources;
pub mod selector;
pub mod served;
pub mod strategy;
pub mod update;
pub mod validation;
pub mod watch;

pub use catalog::{catalog, ResourceInfo};
pub use generic::{ListParams, ListResult, Registry};
pub use options::{DeleteOptions, UpdatePart, WriteOptions};
pub use strategy::Strategy;
