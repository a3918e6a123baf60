//! The per-resource Strategy: what differs between kinds (defaults, create/update preparation,
//! validation, name rules, selectable fields, table columns, deletion rules, allocations). The
//! generic registry does everything else once.
//!
//! Objects are `serde_json::Value`s that have already been decoded through their k8s-openapi type
//! (unknown fields dropped), so a strategy can rely on field types.

use async_trait::async_trait;
use serde_json::Value;

use super::object;
use super::validation::NameRule;
use crate::apiserver::status::{ApiError, StatusCause};
use crate::apiserver::UserInfo;
use crate::store::Store;

/// What a strategy may want to know about the request.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    pub user: Option<UserInfo>,
    pub dry_run: bool,
}

/// One table column: its definition, and how a cell is computed from the object.
#[derive(Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    /// OpenAPI type: "string", "integer", "number", "boolean"; "date" for an age computed from
    /// a timestamp (AGE), "timestamp" for a time shown as it is (type "date" on the wire).
    pub type_: &'static str,
    /// "name" for the NAME column, "" otherwise.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for `kubectl get`, 1 for columns only `-o wide` shows.
    pub priority: u8,
    pub cell: fn(&Value) -> Value,
}

impl Column {
    /// The NAME column every table starts with.
    pub const NAME: Column = Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: "Name must be unique within a namespace. Cannot be updated.",
        priority: 0,
        cell: |o| Value::from(object::name(o)),
    };

    /// The AGE column (the creation timestamp; rendered as an age by the table printer).
    pub const AGE: Column = Column {
        name: "Age",
        type_: "date",
        format: "",
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
        priority: 0,
        cell: |o| object::path(o, "metadata.creationTimestamp").cloned().unwrap_or(Value::Null),
    };

    /// A string column read from a dotted path.
    pub const fn new(
        name: &'static str,
        type_: &'static str,
        priority: u8,
        cell: fn(&Value) -> Value,
    ) -> Column {
        Column { name, type_, format: "", description: "", priority, cell }
    }
}

/// Behaviour specific to one resource. Every method has the default a plain resource needs.
#[async_trait]
pub trait Strategy: Send + Sync + 'static {
    /// How object names are validated.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Whether metadata.generation is kept (1 on create, +1 on each spec change). None: kept
    /// exactly when the resource has a status subresource.
    fn tracks_generation(&self) -> Option<bool> {
        None
    }

    /// Whether a create may set status (nodes); otherwise status starts cleared when the
    /// resource has a status subresource.
    fn keeps_status_on_create(&self) -> bool {
        false
    }

    /// Upstream's defaulting (SetDefaults_*), applied to every object a request produces.
    fn default(&self, _obj: &mut Value) {}

    /// Fixes up a new object before validation (status reset, generated fields).
    fn prepare_for_create(&self, _ctx: &Ctx, _obj: &mut Value) {}

    /// Fixes up an update (main resource) before validation; status is already carried over.
    fn prepare_for_update(&self, _ctx: &Ctx, _new: &mut Value, _old: &Value) {}

    /// Fixes up a status update; spec and most metadata are already carried over.
    fn prepare_for_status_update(&self, _new: &mut Value, _old: &Value) {}

    /// Validation of a new object (metadata is validated generically).
    fn validate(&self, _obj: &Value) -> Vec<StatusCause> {
        vec![]
    }

    /// Validation of an update; by default the new object is validated as on create.
    fn validate_update(&self, new: &Value, _old: &Value) -> Vec<StatusCause> {
        self.validate(new)
    }

    /// Validation of a status update.
    fn validate_status_update(&self, _new: &Value, _old: &Value) -> Vec<StatusCause> {
        vec![]
    }

    /// Field-selector fields beyond metadata.name and metadata.namespace.
    fn field_labels(&self) -> &'static [&'static str] {
        &[]
    }

    /// The value of a selectable field (by default the scalar at that dotted path).
    fn field_value(&self, obj: &Value, field: &str) -> String {
        object::scalar_string(object::path(obj, field))
    }

    /// Table columns, NAME first. By default NAME and AGE.
    fn columns(&self) -> Vec<Column> {
        vec![Column::NAME, Column::AGE]
    }

    /// Whether PUT on a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// Whether PUT without metadata.resourceVersion overwrites whatever is stored.
    fn allow_unconditional_update(&self) -> bool {
        true
    }

    /// Whether DELETE answers with the object rather than a Success Status.
    fn return_deleted_object(&self) -> bool {
        false
    }

    /// The grace period a delete of `obj` gets (requested: DeleteOptions.gracePeriodSeconds).
    /// None: the object goes at once (subject to finalizers).
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }

    /// A 4xx if the object may not be deleted at all (system namespaces).
    fn check_delete(&self, _obj: &Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// Called when a delete finds the object; may mark it for deferred deletion (namespaces)
    /// and return true to keep it stored.
    fn defer_delete(&self, _obj: &mut Value) -> bool {
        false
    }

    /// Whether an object with a deletionTimestamp has nothing left that holds it (beyond
    /// metadata.finalizers, which the generic registry checks).
    fn finalized(&self, _obj: &Value) -> bool {
        true
    }

    /// Reserves what a new or updated object needs outside itself (service cluster IPs).
    async fn allocate(
        &self,
        _store: &Store,
        _obj: &mut Value,
        _old: Option<&Value>,
        _dry_run: bool,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Releases what `obj` held and `replaced_by` (its successor after an update) does not:
    /// everything after a delete or a failed create (`replaced_by` None).
    async fn release(&self, _store: &Store, _obj: &Value, _replaced_by: Option<&Value>) {}
}

/// The strategy of resources with no behaviour of their own.
pub struct DefaultStrategy;

impl Strategy for DefaultStrategy {}

/// A resource whose names are URL path segments (RBAC, events) and otherwise default.
pub struct PathSegmentNames;

impl Strategy for PathSegmentNames {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
}

/// A resource that PUT may create (leases, endpoints, events, ...) and otherwise default.
pub struct CreateOnUpdate;

impl Strategy for CreateOnUpdate {
    fn allow_create_on_update(&self) -> bool {
        true
    }
}
