//! (in progress) Objects every cluster has from its first start.
use crate::store::Store;

/// Creates the namespaces default, kube-system, kube-public and kube-node-lease and the
/// `kubernetes` service in default, where they are missing.
pub async fn ensure_defaults(_store: &Store) -> anyhow::Result<()> {
    Ok(())
}
