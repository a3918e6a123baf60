//! Edit: a write that changes the stored object in place, for subresources whose handler decides
//! exactly what changes and that need nothing of the object as it was (pods/binding). The
//! general update ([`super::update`]) copies the object for its transform, then compares the two
//! (metadata rules, generation, no-op detection, admission, managed fields); an edit reads the
//! object once, decodes only the fields it names ([`partial`]), applies the edit to them and
//! writes the object back with the read revision as precondition, retrying from the read when
//! someone else wrote in between. The fields it does not name are written back as stored.
//!
//! What an edit may not do, because nothing here checks it: change metadata other than labels
//! and annotations, change anything a strategy's defaulting, validation, generation, allocation
//! or admission looks at. An edit records no managed fields (upstream's binding records none
//! either).

use bytes::Bytes;
use serde_json::Value;

use super::catalog::ResourceInfo;
use super::generic::{not_found, store_error, target, Registry};
use super::options::WriteOptions;
use super::partial;
use super::update::{CONFLICT_MODIFIED, MAX_ATTEMPTS};
use crate::apiserver::status::ApiError;
use crate::store::{Revision, StoreError};

/// Changes the wanted fields of the current object (the view [`Registry::edit`] gives) in place.
pub type Edit<'a> = dyn Fn(&mut Value) -> Result<(), ApiError> + Send + Sync + 'a;

impl Registry {
    /// Edits one existing object, of which the edit sees only the `wanted` fields (dot-separated
    /// paths) as one object; only for resources stored as served (no conversion). Returns the
    /// revision written (None for a dry run).
    pub async fn edit(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        wanted: &[&str],
        edit: &Edit<'_>,
    ) -> Result<Option<Revision>, ApiError> {
        if res.conversion.is_some() {
            return Err(ApiError::internal(format!("{} cannot be edited in part", res.plural)));
        }
        let key = Self::key(res, namespace, name);
        let wanted = partial::Wanted::paths(wanted);
        let stored_json = |e: serde_json::Error| {
            ApiError::internal(format!("stored {} object is not valid JSON: {e}", res.plural))
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.get_kv(res, namespace, name).await? else {
                return Err(not_found(res, name));
            };
            let (mut view, skeleton) = partial::split(&kv.value, &wanted).map_err(stored_json)?;
            edit(&mut view)?;
            if opts.dry_run {
                return Ok(None);
            }
            let bytes = partial::join(&skeleton, &view).map_err(stored_json)?;
            match self
                .store
                .update(&key, Bytes::from(bytes.into_boxed_slice()), Some(kv.mod_revision))
                .await
            {
                Ok(written) => return Ok(Some(written.mod_revision)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound { .. }) => return Err(not_found(res, name)),
                Err(e) => return Err(store_error(e, res, name)),
            }
        }
        Err(ApiError::conflict(target(res, name), CONFLICT_MODIFIED))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::catalog::catalog;
    use crate::registry::object;
    use crate::testing::skiff_server::TempDir;

    async fn registry(dir: &TempDir) -> Registry {
        Registry::new(crate::testing::sqlite_store(dir.path()).await)
    }

    fn count(obj: &Value) -> usize {
        object::path(obj, "data").and_then(Value::as_object).map_or(0, |d| d.len())
    }

    #[tokio::test]
    async fn edits_that_race_all_land_and_failed_or_dry_edits_write_nothing() {
        let dir = TempDir::new("edit").unwrap();
        let reg = registry(&dir).await;
        let res = catalog().find("", "v1", "configmaps").unwrap();
        let opts = WriteOptions::default();
        let namespaces = catalog().find("", "v1", "namespaces").unwrap();
        reg.create(namespaces, json!({"metadata": {"name": "default"}}), &opts).await.unwrap();
        let cm = json!({"metadata": {"name": "c", "namespace": "default"}});
        reg.create(res, cm, &opts).await.unwrap();

        // Each edit adds its own key: concurrent edits conflict and retry from a fresh read.
        let edits = (0..16).map(|i| {
            let reg = &reg;
            let opts = &opts;
            async move {
                reg.edit(res, Some("default"), "c", opts, &["data"], &|obj| {
                    let data = object::ensure_object(obj, "data").unwrap();
                    data.insert(format!("k{i}"), json!("v"));
                    Ok(())
                })
                .await
            }
        });
        for written in futures::future::join_all(edits).await {
            written.unwrap();
        }
        let stored = reg.get(res, Some("default"), "c").await.unwrap();
        assert_eq!(count(&stored), 16, "{stored}");

        // An edit's error and a dry run leave the object as it was.
        let refused = reg
            .edit(res, Some("default"), "c", &opts, &[], &|_| Err(ApiError::bad_request("no")))
            .await
            .unwrap_err();
        assert_eq!(refused.code, 400);
        let dry = WriteOptions { dry_run: true, ..Default::default() };
        let answered = reg
            .edit(res, Some("default"), "c", &dry, &["data"], &|obj| {
                obj["data"] = json!({});
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(answered, None);
        let after = reg.get(res, Some("default"), "c").await.unwrap();
        assert_eq!(after, stored);

        let missing = reg.edit(res, Some("default"), "gone", &opts, &[], &|_| Ok(())).await;
        assert_eq!(missing.unwrap_err().reason, "NotFound");
    }
}
