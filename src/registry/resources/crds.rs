//! apiextensions.k8s.io CustomResourceDefinitions. The objects are stored and served; serving
//! the custom resources they define comes later. Their table is upstream's default one.

use crate::registry::object;
use crate::registry::strategy::{Column, Strategy};

/// CustomResourceDefinitions.
pub struct CustomResourceDefinitionStrategy;

impl Strategy for CustomResourceDefinitionStrategy {
    fn columns(&self) -> Vec<Column> {
        vec![
            Column::NAME,
            Column {
                description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
                ..Column::new("Created At", "timestamp", 0, |o| {
                    object::path(o, "metadata.creationTimestamp").cloned().unwrap_or_default()
                })
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn created_at_is_the_timestamp_itself() {
        let crd = json!({"metadata": {"name": "widgets.example.com",
            "creationTimestamp": "2026-11-27T10:00:00Z"}});
        let cols = CustomResourceDefinitionStrategy.columns();
        let cells: Vec<_> = cols.iter().map(|c| (c.cell)(&crd)).collect();
        assert_eq!(cells, vec![json!("widgets.example.com"), json!("2026-11-27T10:00:00Z")]);
        assert_eq!(cols[1].type_, "timestamp");
    }
}
