//! /version: the server's version.Info, shaped as kube-apiserver's. skiff serves the v1.33 API,
//! so it reports Kubernetes 1.33 with its own version as a semver pre-release suffix.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// The Kubernetes API level skiff serves.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "33";

/// version.Info as upstream serializes it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub major: String,
    pub minor: String,
    pub emulation_major: String,
    pub emulation_minor: String,
    pub min_compatibility_major: String,
    pub min_compatibility_minor: String,
    pub git_version: String,
    pub git_commit: String,
    pub git_tree_state: String,
    pub build_date: String,
    pub go_version: String,
    pub compiler: String,
    pub platform: String,
}

/// "v1.33.0-skiff.<crate version>" (a valid semver).
pub fn git_version() -> String {
    format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0-skiff.{}", env!("CARGO_PKG_VERSION"))
}

/// This build's version.Info.
pub fn info() -> VersionInfo {
    VersionInfo {
        major: KUBERNETES_MAJOR.into(),
        minor: KUBERNETES_MINOR.into(),
        emulation_major: KUBERNETES_MAJOR.into(),
        emulation_minor: KUBERNETES_MINOR.into(),
        min_compatibility_major: KUBERNETES_MAJOR.into(),
        min_compatibility_minor: "32".into(),
        git_version: git_version(),
        git_commit: option_env!("SKIFF_GIT_COMMIT").unwrap_or("").into(),
        git_tree_state: if option_env!("SKIFF_GIT_COMMIT").is_some() { "clean" } else { "" }.into(),
        build_date: build_date(),
        go_version: "n/a (rust)".into(),
        compiler: "rustc".into(),
        platform: platform(),
    }
}

/// The /version route.
pub fn router() -> Router {
    Router::new()
        .route("/version", get(|| async { Json(info()) }))
        .route("/version/", get(|| async { Json(info()) }))
}

/// "linux/amd64" and the like, in Go's naming.
pub fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// SKIFF_BUILD_DATE at compile time if set, else the executable's modification time (RFC 3339).
fn build_date() -> String {
    if let Some(d) = option_env!("SKIFF_BUILD_DATE") {
        return d.to_string();
    }
    static DATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DATE.get_or_init(|| {
        std::env::current_exe()
            .and_then(std::fs::metadata)
            .and_then(|m| m.modified())
            .map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_version_is_semver_with_the_api_level() {
        let v = git_version();
        let rest = v.strip_prefix("v1.33.0-skiff.").expect("prefix");
        assert!(rest
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')));
        let json = serde_json::to_value(info()).expect("json");
        assert_eq!(json["major"], "1");
        assert_eq!(json["minor"], "33");
        assert!(json["gitVersion"].as_str().is_some());
        assert!(json["platform"].as_str().is_some_and(|p| p.contains('/')));
    }
}
