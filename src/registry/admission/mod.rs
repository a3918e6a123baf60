//! Admission: what upstream's built-in admission plugins do to a write between decoding and
//! storage. On create, mutating admission (LimitRanger's defaults, Priority) runs before validation and
//! validating admission (LimitRanger's bounds, then ResourceQuota) after it; updates of pods'
//! resources (the resize subresource) and of services and claims go through quota as well.
//!
//! `quantity` is exact resource arithmetic, `usage` what an object charges against a quota.

pub mod limitrange;
pub mod quantity;
pub mod quota;
pub mod usage;

use serde_json::Value;

use super::catalog::{catalog, ResourceInfo};
use super::generic::{decode_kv, target, Registry};
use super::object;
use super::options::UpdatePart;
use crate::apiserver::status::{ApiError, StatusDetails};
use crate::store::{ListOptions, ListPage};

impl Registry {
    /// Mutating admission of a new object (before validation): for pods, LimitRange defaults
    /// and then Priority (the class's value, resolved before quota sees the pod, as upstream's
    /// plugin order has it).
    pub(crate) async fn admit_create_mutating(
        &self,
        res: &ResourceInfo,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if !is_core(res, "pods") {
            return Ok(());
        }
        super::resources::pods::priority::admit(&self.store, obj).await?;
        limitrange::default_requests_from_limits(obj);
        let ns = object::namespace(obj).to_string();
        for lr in self.limit_ranges(&ns).await? {
            limitrange::apply_defaults(&lr, obj);
        }
        Ok(())
    }

    /// Validating admission of a new object (after validation): LimitRange bounds, then quota.
    /// `name` is the name the request gave (empty for a generated one, whose prefix messages
    /// then show).
    pub(crate) async fn admit_create(
        &self,
        res: &ResourceInfo,
        obj: &Value,
        name: &str,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        if !res.namespaced {
            return Ok(());
        }
        // As upstream's admission errors: a name still to be generated shows as its prefix.
        let name = match name {
            "" => object::str_at(obj, "metadata.generateName").unwrap_or(""),
            given => given,
        };
        self.check_limit_ranges(res, obj, name).await?;
        quota::charge(self, res, obj, None, name, dry_run).await
    }

    /// Admission of an update (after validation): a pod resize against LimitRanges, and quota
    /// for the kinds whose usage an update can raise.
    pub(crate) async fn admit_update(
        &self,
        res: &ResourceInfo,
        part: UpdatePart,
        new: &Value,
        old: &Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        if !res.namespaced || res.group != "" {
            return Ok(());
        }
        let handled = match (res.plural, part) {
            ("pods", UpdatePart::Whole("resize")) => {
                self.check_limit_ranges(res, new, object::name(new)).await?;
                true
            }
            ("pods", UpdatePart::Main) => usage::is_terminating(new) != usage::is_terminating(old),
            ("services" | "persistentvolumeclaims", UpdatePart::Main) => true,
            _ => false,
        };
        if !handled {
            return Ok(());
        }
        quota::charge(self, res, new, Some(old), object::name(new), dry_run).await
    }

    async fn check_limit_ranges(
        &self,
        res: &ResourceInfo,
        obj: &Value,
        name: &str,
    ) -> Result<(), ApiError> {
        let check: fn(&Value, &Value) -> Vec<String> = if is_core(res, "pods") {
            limitrange::validate_pod
        } else if is_core(res, "persistentvolumeclaims") {
            limitrange::validate_claim
        } else {
            return Ok(());
        };
        for lr in self.limit_ranges(object::namespace(obj)).await? {
            let errs = check(&lr, obj);
            if !errs.is_empty() {
                return Err(forbidden(res, name, &limitrange::aggregate(&errs)));
            }
        }
        Ok(())
    }

    /// The LimitRanges of a namespace, as the watch cache holds them (upstream's plugin reads
    /// an informer's cache too).
    async fn limit_ranges(&self, ns: &str) -> Result<Vec<Value>, ApiError> {
        let Some(lrs) = catalog().find("", "v1", "limitranges") else { return Ok(vec![]) };
        let page = cached_list(self, &Registry::prefix(lrs, Some(ns))).await?;
        page.items.iter().map(|kv| decode_kv(lrs, kv)).collect()
    }
}

/// The keys under `prefix` in the watch cache, without waiting for it to catch up with the
/// backend (admission runs on every create; a consistent read would cost a round trip).
async fn cached_list(reg: &Registry, prefix: &str) -> Result<ListPage, ApiError> {
    let opts = ListOptions { revision: Some(reg.store().revision()), ..Default::default() };
    reg.store().list(prefix, &opts).await.map_err(|e| ApiError::internal(e.to_string()))
}

fn is_core(res: &ResourceInfo, plural: &str) -> bool {
    res.group.is_empty() && res.plural == plural
}

/// The 403 an admission plugin answers: `pods "name" is forbidden: why`.
pub fn forbidden(res: &ResourceInfo, name: &str, why: &str) -> ApiError {
    let qualified = target(res, name).qualified();
    let message = if name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{name}\" is forbidden: {why}")
    };
    ApiError::forbidden(message).with_details(StatusDetails {
        name: name.to_string(),
        group: res.group.to_string(),
        kind: res.plural.to_string(),
        causes: vec![],
        retry_after_seconds: None,
    })
}
