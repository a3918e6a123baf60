//! Update (PUT, patch, apply and the status and other subresources): read the current object,
//! let the caller build the new one, apply the status/spec rules, validate, record managed
//! fields and write with the read revision as precondition, retrying from the read when someone
//! else wrote in between (a resourceVersion the caller set is checked against each read).

use serde_json::{json, Value};

use super::catalog::ResourceInfo;
use super::generic::{not_found, parse_rv, store_error, target, Registry};
use super::options::{check_body, UpdatePart, WriteOptions};
use super::strategy::Ctx;
use super::{managed_fields, meta, object, validation};
use crate::apiserver::status::ApiError;
use crate::store::StoreError;

/// Builds the new object from the current one (None when it does not exist).
pub type Transform<'a> = dyn Fn(Option<&Value>) -> Result<Value, ApiError> + Send + Sync + 'a;

/// What upstream says when a write raced another one.
pub const CONFLICT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Attempts before an update that keeps losing races gives up with a conflict. Only writes
/// without a resourceVersion retry (one with a resourceVersion fails at the first re-read that
/// sees another), and upstream's guaranteed update retries those without limit: a patch must not
/// fail because many clients patch one object at once. The bound only guards against a loop.
pub(super) const MAX_ATTEMPTS: usize = 10_000;

impl Registry {
    /// Updates one object; returns it and whether it was created.
    pub async fn update(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        part: UpdatePart,
        opts: &WriteOptions,
        transform: &Transform<'_>,
    ) -> Result<(Value, bool), ApiError> {
        let ctx = Ctx { user: opts.user.clone(), dry_run: opts.dry_run };
        let strategy = &res.strategy;
        let key = Self::key(res, namespace, name);
        for _ in 0..MAX_ATTEMPTS {
            let current = self.get_raw(res, namespace, name).await?;
            let mut new = transform(current.as_ref().map(|(v, _)| v))?;
            check_body(res, namespace, Some(name), &mut new)?;
            let Some((old, rev)) = current else {
                if part == UpdatePart::Main
                    && (strategy.allow_create_on_update() || opts.create_if_missing)
                {
                    object::meta_mut(&mut new).remove("resourceVersion");
                    match self.create(res, new, opts).await {
                        Ok(created) => return Ok((created, true)),
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        Err(e) => return Err(e),
                    }
                }
                return Err(not_found(res, name));
            };
            let new_rv = object::resource_version(&new).to_string();
            let conditional = !new_rv.is_empty();
            if conditional {
                if parse_rv(&new_rv).ok() != Some(rev) {
                    return Err(ApiError::conflict(target(res, name), CONFLICT_MODIFIED));
                }
            } else if !strategy.allow_unconditional_update() && part == UpdatePart::Main {
                let cause = validation::invalid(
                    "metadata.resourceVersion",
                    &json!(0),
                    "must be specified for an update",
                );
                return Err(ApiError::invalid(res.group, res.kind, name, vec![cause]));
            }
            meta::carry_over_for_update(&mut new, &old);
            match part {
                UpdatePart::Main => {
                    if res.has_status() {
                        match old.get("status") {
                            Some(s) => new["status"] = s.clone(),
                            None => {
                                if let Some(m) = new.as_object_mut() {
                                    m.remove("status");
                                }
                            }
                        }
                    }
                    strategy.default(&mut new);
                    strategy.prepare_for_update(&ctx, &mut new, &old);
                }
                UpdatePart::Status => {
                    let mut merged = old.clone();
                    merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
                    if merged["status"].is_null() {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                    merged["metadata"] = new["metadata"].clone();
                    meta::reset_for_status(&mut merged, &old);
                    new = merged;
                    strategy.default(&mut new);
                    strategy.prepare_for_status_update(&mut new, &old);
                }
                UpdatePart::Whole(_) => strategy.default(&mut new),
            }
            let tracks_generation =
                strategy.tracks_generation().unwrap_or_else(|| res.has_status());
            if tracks_generation && meta::spec_changed(&new, &old) {
                let generation =
                    object::path(&old, "metadata.generation").and_then(Value::as_i64).unwrap_or(0);
                object::meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
            }
            let mut causes = meta::validate_update(&new, &old);
            causes.extend(match part {
                UpdatePart::Main => strategy.validate_update(&new, &old),
                UpdatePart::Status => strategy.validate_status_update(&new, &old),
                // The subresource's handler decided what may change.
                UpdatePart::Whole(_) => vec![],
            });
            if !causes.is_empty() {
                return Err(ApiError::invalid(res.group, res.kind, name, causes));
            }
            self.admit_update(res, part, &new, &old, opts.dry_run).await?;
            if !opts.fields_recorded {
                let sub = part.subresource();
                managed_fields::record_update(
                    &mut new,
                    Some(&old),
                    &opts.field_manager,
                    &res.api_version(),
                    sub,
                );
            }
            object::meta_mut(&mut new).insert("resourceVersion".into(), json!(rev.to_string()));
            if new == old {
                return Ok((old, false));
            }
            if object::is_deleting(&new)
                && object::finalizers(&new).is_empty()
                && strategy.finalized(&new)
            {
                let grace = object::path(&new, "metadata.deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if grace == 0 {
                    if opts.dry_run {
                        return Ok((new, false));
                    }
                    return match self.store.delete(&key, Some(rev)).await {
                        Ok(_) => {
                            strategy.release(&self.store, &new, None).await;
                            Ok((new, false))
                        }
                        // The next attempt re-reads and rebuilds; a stale client
                        // resourceVersion fails the precondition check there.
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => Err(store_error(e, res, name)),
                    };
                }
            }
            strategy.allocate(&self.store, &mut new, Some(&old), opts.dry_run).await?;
            if opts.dry_run {
                return Ok((new, false));
            }
            let bytes = Self::encode(res, &new)?;
            match self.store.update(&key, bytes, Some(rev)).await {
                Ok(kv) => {
                    strategy.release(&self.store, &old, Some(&new)).await;
                    object::meta_mut(&mut new)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok((new, false));
                }
                // Someone wrote in between: read again and rebuild (as upstream's guaranteed
                // update does); a client's own stale resourceVersion fails the check above.
                // What this attempt allocated and the stored object does not hold goes back.
                Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
                    strategy.release(&self.store, &new, Some(&old)).await;
                    continue;
                }
                Err(e) => {
                    strategy.release(&self.store, &new, Some(&old)).await;
                    return Err(store_error(e, res, name));
                }
            }
        }
        Err(ApiError::conflict(target(res, name), CONFLICT_MODIFIED))
    }
}
