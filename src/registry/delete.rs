//! Delete and deletecollection: preconditions, propagation policy (recorded as the orphan or
//! foregroundDeletion finalizer for the garbage collector), graceful deletion, finalizers, and
//! the final removal.

use serde_json::{json, Value};

use super::catalog::ResourceInfo;
use super::generic::{not_found, store_error, target, ListParams, Registry};
use super::options::DeleteOptions;
use super::{object, validation};
use crate::apiserver::status::ApiError;
use crate::store::StoreError;

/// The finalizer that makes the garbage collector orphan dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that makes the garbage collector delete dependents first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// What a delete did.
#[derive(Clone, Debug)]
pub struct DeleteOutcome {
    /// The object as last stored (deleted) or as now marked (pending).
    pub object: Value,
    /// Whether the object is gone (false: marked, waiting for finalizers or its grace period).
    pub deleted: bool,
}

const MAX_ATTEMPTS: usize = 16;
/// The longest grace period honoured (ten years).
const MAX_GRACE_SECONDS: i64 = 10 * 365 * 24 * 3600;

impl Registry {
    /// Deletes one object.
    pub async fn delete(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let policy = propagation(opts)?;
        let strategy = &res.strategy;
        let key = Self::key(res, namespace, name);
        for _ in 0..MAX_ATTEMPTS {
            let Some((current, rev)) = self.get_raw(res, namespace, name).await? else {
                return Err(not_found(res, name));
            };
            check_preconditions(res, name, &current, opts)?;
            strategy.check_delete(&current)?;
            let mut obj = current.clone();
            let mut finalizers = object::finalizers(&obj);
            match policy.as_deref() {
                Some("Orphan") => {
                    finalizers.retain(|f| f != FOREGROUND_FINALIZER);
                    if !finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
                        finalizers.push(ORPHAN_FINALIZER.into());
                    }
                }
                Some("Foreground") => {
                    finalizers.retain(|f| f != ORPHAN_FINALIZER);
                    if !finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
                        finalizers.push(FOREGROUND_FINALIZER.into());
                    }
                }
                Some("Background") => {
                    finalizers.retain(|f| f != ORPHAN_FINALIZER && f != FOREGROUND_FINALIZER)
                }
                _ => {}
            }
            object::set_finalizers(&mut obj, &finalizers);

            let grace = strategy.grace_period(&obj, opts.grace_period_seconds).filter(|g| *g > 0);
            let deferred_by_strategy = strategy.defer_delete(&mut obj);
            let pending = grace.is_some() || deferred_by_strategy || !finalizers.is_empty();
            if pending {
                mark_deleting(&mut obj, grace);
                if obj == current {
                    return Ok(DeleteOutcome { object: current, deleted: false });
                }
                if opts.dry_run {
                    return Ok(DeleteOutcome { object: obj, deleted: false });
                }
                let bytes = Self::encode(res, &obj)?;
                match self.store.update(&key, bytes, Some(rev)).await {
                    Ok(kv) => {
                        object::meta_mut(&mut obj)
                            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                        return Ok(DeleteOutcome { object: obj, deleted: false });
                    }
                    Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(store_error(e, res, name)),
                }
            }
            if opts.dry_run {
                return Ok(DeleteOutcome { object: current, deleted: true });
            }
            match self.store.delete(&key, Some(rev)).await {
                Ok(kv) => {
                    strategy.release(&self.store, &current, None).await;
                    let mut gone = current;
                    object::meta_mut(&mut gone)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok(DeleteOutcome { object: gone, deleted: true });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(not_found(res, name)),
                Err(e) => return Err(store_error(e, res, name)),
            }
        }
        Err(ApiError::conflict(target(res, name), super::update::CONFLICT_MODIFIED))
    }

    /// Deletes every object a list selects; returns what each delete returned.
    pub async fn delete_collection(
        &self,
        res: &'static ResourceInfo,
        namespace: Option<&str>,
        params: &ListParams,
        opts: &DeleteOptions,
    ) -> Result<Vec<Value>, ApiError> {
        let list = self.list(res, namespace, params).await?;
        let mut out = vec![];
        for item in list.items {
            let item = item.value();
            let ns = object::namespace(item).to_string();
            let ns = (!ns.is_empty()).then_some(ns);
            match self.delete(res, ns.as_deref(), object::name(item), opts).await {
                Ok(o) => out.push(o.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// The effective propagation policy (validated); None: the resource's default (background).
fn propagation(opts: &DeleteOptions) -> Result<Option<String>, ApiError> {
    let mut causes = vec![];
    if opts.orphan_dependents.is_some() && opts.propagation_policy.is_some() {
        causes.push(validation::invalid(
            "propagationPolicy",
            &json!(opts.propagation_policy),
            "orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    if let Some(p) = &opts.propagation_policy {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            causes.push(validation::not_supported(
                "propagationPolicy",
                &json!(p),
                &["Foreground", "Background", "Orphan", "nil"],
            ));
        }
    }
    if let Some(g) = opts.grace_period_seconds {
        if g < 0 {
            causes.push(validation::invalid(
                "gracePeriodSeconds",
                &json!(g),
                "must be greater than or equal to 0",
            ));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("meta.k8s.io", "DeleteOptions", "", causes));
    }
    Ok(match (opts.propagation_policy.clone(), opts.orphan_dependents) {
        (Some(p), _) => Some(p),
        (None, Some(true)) => Some("Orphan".into()),
        (None, Some(false)) => Some("Background".into()),
        (None, None) => None,
    })
}

fn check_preconditions(
    res: &ResourceInfo,
    name: &str,
    obj: &Value,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    if let Some(uid) = opts.precondition_uid.as_deref().filter(|u| !u.is_empty()) {
        if uid != object::uid(obj) {
            return Err(ApiError::conflict(
                target(res, name),
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    object::uid(obj)
                ),
            ));
        }
    }
    if let Some(rv) = opts.precondition_resource_version.as_deref().filter(|r| !r.is_empty()) {
        if rv != object::resource_version(obj) {
            return Err(ApiError::conflict(
                target(res, name),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    object::resource_version(obj)
                ),
            ));
        }
    }
    Ok(())
}

/// Sets deletionTimestamp (now plus the grace period) unless an earlier one is already set.
fn mark_deleting(obj: &mut Value, grace: Option<i64>) {
    // Clamped so that absurd requests cannot overflow the clock arithmetic.
    let grace = grace.unwrap_or(0).clamp(0, MAX_GRACE_SECONDS);
    let when = chrono::Utc::now() + chrono::TimeDelta::seconds(grace);
    let meta = object::meta_mut(obj);
    let existing_grace = meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
    let has_timestamp = meta.get("deletionTimestamp").is_some_and(|v| !v.is_null());
    if has_timestamp && existing_grace.is_some_and(|g| g <= grace) {
        return;
    }
    if has_timestamp && existing_grace.is_none() {
        return;
    }
    meta.insert(
        "deletionTimestamp".into(),
        json!(when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    );
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_is_validated() {
        let bad =
            DeleteOptions { propagation_policy: Some("Sideways".into()), ..Default::default() };
        let e = propagation(&bad).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("Unsupported value: \"Sideways\""), "{}", e.message);
        let orphan = DeleteOptions { orphan_dependents: Some(true), ..Default::default() };
        assert_eq!(propagation(&orphan).unwrap().as_deref(), Some("Orphan"));
    }

    #[test]
    fn marking_keeps_an_earlier_deadline() {
        let mut o = json!({"metadata": {"name": "p"}});
        mark_deleting(&mut o, Some(30));
        assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], 30);
        let ts = o["metadata"]["deletionTimestamp"].clone();
        mark_deleting(&mut o, Some(60));
        assert_eq!(o["metadata"]["deletionTimestamp"], ts);
        mark_deleting(&mut o, Some(0));
        assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], 0);
        let mut huge = json!({"metadata": {"name": "p"}});
        mark_deleting(&mut huge, Some(i64::MAX));
        assert_eq!(huge["metadata"]["deletionGracePeriodSeconds"], MAX_GRACE_SECONDS);
    }
}
