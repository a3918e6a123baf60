//! Edit: a write that changes the stored object in place, for subresources whose handler decides
//! exactly what changes and that need nothing of the object as it was (pods/binding). The
//! general update ([`super::update`]) copies the object for its transform, then compares the two
//! (metadata rules, generation, no-op detection, admission, managed fields); an edit reads and
//! decodes the object once, applies the edit, defaults it and writes it back with the read
//! revision as precondition, retrying from the read when someone else wrote in between.
//!
//! What an edit may not do, because nothing here checks it: change metadata other than labels
//! and annotations, change anything a strategy's validation, generation, allocation or admission
//! looks at. An edit records no managed fields (upstream's binding records none either).

use serde_json::{json, Value};

use super::catalog::ResourceInfo;
use super::generic::{decode_kv, not_found, store_error, target, Registry};
use super::object;
use super::options::WriteOptions;
use super::update::{CONFLICT_MODIFIED, MAX_ATTEMPTS};
use crate::apiserver::status::ApiError;
use crate::store::StoreError;

/// Changes the current object (which carries its resourceVersion) in place.
pub type Edit<'a> = dyn Fn(&mut Value) -> Result<(), ApiError> + Send + Sync + 'a;

impl Registry {
    /// Edits one existing object and returns it as written.
    pub async fn edit(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        edit: &Edit<'_>,
    ) -> Result<Value, ApiError> {
        let key = Self::key(res, namespace, name);
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.get_kv(res, namespace, name).await? else {
                return Err(not_found(res, name));
            };
            let mut obj = decode_kv(res, &kv)?;
            edit(&mut obj)?;
            res.strategy.default(&mut obj);
            if opts.dry_run {
                return Ok(obj);
            }
            let bytes = Self::encode(res, &obj)?;
            match self.store.update(&key, bytes, Some(kv.mod_revision)).await {
                Ok(written) => {
                    object::meta_mut(&mut obj)
                        .insert("resourceVersion".into(), json!(written.mod_revision.to_string()));
                    return Ok(obj);
                }
                // Someone wrote in between: read again and edit that.
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
                reg.edit(res, Some("default"), "c", opts, &|obj| {
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
            .edit(res, Some("default"), "c", &opts, &|_| Err(ApiError::bad_request("no")))
            .await
            .unwrap_err();
        assert_eq!(refused.code, 400);
        let dry = WriteOptions { dry_run: true, ..Default::default() };
        let answered = reg
            .edit(res, Some("default"), "c", &dry, &|obj| {
                obj["data"] = json!({});
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(count(&answered), 0);
        let after = reg.get(res, Some("default"), "c").await.unwrap();
        assert_eq!(after, stored);

        let missing = reg.edit(res, Some("default"), "gone", &opts, &|_| Ok(())).await;
        assert_eq!(missing.unwrap_err().reason, "NotFound");
    }
}
