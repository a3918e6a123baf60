//! Create: defaults, server-owned metadata, generated names, validation, the namespace check,
//! allocations, managedFields, then one atomic write.

use serde_json::{json, Value};

use super::catalog::{catalog, ResourceInfo};
use super::generic::{store_error, target, Registry};
use super::options::WriteOptions;
use super::strategy::Ctx;
use super::{managed_fields, meta, object};
use crate::apiserver::status::ApiError;
use crate::store::StoreError;

/// How many generated names are tried before giving up.
const GENERATE_ATTEMPTS: usize = 8;

impl Registry {
    /// Creates `obj` (already checked against the URL by `options::check_body`).
    pub async fn create(
        &self,
        res: &ResourceInfo,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let ctx = Ctx { user: opts.user.clone(), dry_run: opts.dry_run };
        let mut obj = obj;
        if object::path(&obj, "metadata.resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let strategy = &res.strategy;
        let tracks_generation = strategy.tracks_generation().unwrap_or_else(|| res.has_status());
        strategy.default(&mut obj);
        meta::init_for_create(&mut obj, tracks_generation);
        if res.has_status() && !strategy.keeps_status_on_create() {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        let generate = object::str_at(&obj, "metadata.generateName").unwrap_or("").to_string();
        let generated = object::name(&obj).is_empty() && !generate.is_empty();
        if generated {
            object::meta_mut(&mut obj).insert("name".into(), json!(meta::generate_name(&generate)));
        }
        strategy.prepare_for_create(&ctx, &mut obj);
        self.admit_create_mutating(res, &mut obj).await?;
        let mut causes = meta::validate_create(res, strategy.name_rule(), &obj);
        causes.extend(strategy.validate(&obj));
        if !causes.is_empty() {
            return Err(ApiError::invalid(res.group, res.kind, object::name(&obj), causes));
        }
        if res.namespaced {
            self.check_namespace(res, &obj).await?;
        }
        let requested_name = if generated { "" } else { object::name(&obj) };
        self.admit_create(res, &obj, requested_name, opts.dry_run).await?;
        if !opts.fields_recorded {
            managed_fields::record_update(
                &mut obj,
                None,
                &opts.field_manager,
                &res.api_version(),
                "",
            );
        }
        strategy.allocate(&self.store, &mut obj, None, opts.dry_run).await?;
        if opts.dry_run {
            return Ok(obj);
        }
        let mut attempt = 0;
        loop {
            let key = Self::key(res, Some(object::namespace(&obj)), object::name(&obj));
            let bytes = Self::encode(res, &obj)?;
            match self.store.create(&key, bytes).await {
                Ok(kv) => {
                    object::meta_mut(&mut obj)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok(obj);
                }
                Err(StoreError::AlreadyExists { .. })
                    if generated && attempt + 1 < GENERATE_ATTEMPTS =>
                {
                    attempt += 1;
                    object::meta_mut(&mut obj)
                        .insert("name".into(), json!(meta::generate_name(&generate)));
                }
                Err(e) => {
                    strategy.release(&self.store, &obj, None).await;
                    return Err(store_error(e, res, object::name(&obj)));
                }
            }
        }
    }

    /// A namespaced create needs its namespace to exist and not be terminating.
    async fn check_namespace(&self, res: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
        let ns_name = object::namespace(obj);
        let Some(namespaces) = catalog().find("", "v1", "namespaces") else {
            return Ok(());
        };
        let ns = self.get_raw(namespaces, None, ns_name).await?;
        match ns {
            None => Err(ApiError::not_found(target(namespaces, ns_name))),
            Some((ns, _)) if object::is_deleting(&ns) => Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                target(res, "").qualified(),
                object::name(obj),
                ns_name
            ))
            .with_details(crate::apiserver::status::StatusDetails {
                name: object::name(obj).to_string(),
                group: res.group.to_string(),
                kind: res.plural.to_string(),
                causes: vec![crate::apiserver::status::StatusCause {
                    reason: "NamespaceTerminating".into(),
                    message: format!("namespace {ns_name} is being terminated"),
                    field: "metadata.namespace".into(),
                }],
                retry_after_seconds: None,
            })),
            Some(_) => Ok(()),
        }
    }
}
