//! metav1.Status errors, shaped exactly as kube-apiserver returns them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::store::StoreError;

/// One cause of an Invalid (or other) error: which field, and what is wrong with it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StatusCause {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// metav1.StatusDetails.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StatusDetails {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// An API error: rendered as a metav1.Status body with the matching HTTP code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    /// metav1.StatusReason ("NotFound", "Invalid", ...); empty for reason Unknown.
    pub reason: &'static str,
    pub message: String,
    pub details: Option<StatusDetails>,
    /// metadata.continue of the Status: the token that goes on with an expired list.
    pub list_continue: Option<String>,
}

/// What a resource error names: the group, the resource (plural) or kind, and the object name.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub group: &'a str,
    /// The plural resource name, as upstream puts in messages and details.kind ("pods").
    pub resource: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    /// "pods" or "deployments.apps", as upstream prints a qualified resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> StatusDetails {
        StatusDetails {
            name: self.name.to_string(),
            group: self.group.to_string(),
            kind: self.resource.to_string(),
            ..Default::default()
        }
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None, list_continue: None }
    }

    /// Sets metadata.continue (a 410 for an expired continue token carries one that lists on
    /// at the latest revision, as upstream).
    pub fn with_continue(mut self, token: String) -> Self {
        self.list_continue = Some(token);
        self
    }

    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(t: Target) -> Self {
        Self::new(404, "NotFound", format!("{} \"{}\" not found", t.qualified(), t.name))
            .with_details(t.details())
    }

    pub fn already_exists(t: Target) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{}\" already exists", t.qualified(), t.name))
            .with_details(t.details())
    }

    /// An optimistic-concurrency conflict, as upstream words it.
    pub fn conflict(t: Target, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{}\": {}", t.qualified(), t.name, why),
        )
        .with_details(t.details())
    }

    /// A validation failure. `kind` is the object's Kind ("Deployment").
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<StatusCause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let message = match summary.len() {
            0 => format!("{qualified} \"{name}\" is invalid"),
            1 => format!("{qualified} \"{name}\" is invalid: {}", summary[0]),
            _ => format!("{qualified} \"{name}\" is invalid: [{}]", summary.join(", ")),
        };
        Self::new(422, "Invalid", message).with_details(StatusDetails {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            causes,
            retry_after_seconds: None,
        })
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_supported(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn request_entity_too_large(message: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", message)
    }

    pub fn too_many_requests(retry_after_seconds: u32) -> Self {
        Self::new(429, "TooManyRequests", "Too many requests, please try again later.")
            .with_details(StatusDetails {
                retry_after_seconds: Some(retry_after_seconds),
                ..Default::default()
            })
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// Maps a storage error about `t` to the Status upstream returns for it.
    pub fn from_store(err: StoreError, t: Target) -> Self {
        match err {
            StoreError::AlreadyExists { .. } => Self::already_exists(t),
            StoreError::NotFound { .. } => Self::not_found(t),
            StoreError::Conflict { .. } => Self::conflict(
                t,
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            StoreError::TooOld { requested, oldest } => Self::gone(format!(
                "too old resource version: {requested} ({oldest})"
            )),
            StoreError::FutureRevision { .. } => Self::new(504, "Timeout", format!("Too large resource version: {err}"))
                .with_details(StatusDetails { retry_after_seconds: Some(1), ..Default::default() }),
            StoreError::Invalid(msg) => Self::bad_request(msg),
            StoreError::Unavailable(_) | StoreError::CacheReset => {
                Self::service_unavailable(err.to_string())
            }
            StoreError::WriteFailed(_) | StoreError::Corrupt(_) => Self::internal(err.to_string()),
        }
    }

    /// The metav1.Status object for this error.
    pub fn to_status(&self) -> serde_json::Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            status["details"] = serde_json::to_value(details).unwrap_or_default();
        }
        if let Some(token) = &self.list_continue {
            status["metadata"]["continue"] = json!(token);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.to_status().to_string(),
        )
            .into_response();
        if let Some(secs) = self.details.as_ref().and_then(|d| d.retry_after_seconds) {
            if let Ok(v) = secs.to_string().parse() {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_upstream_shape() {
        let t = Target { group: "apps", resource: "deployments", name: "web" };
        let s = ApiError::not_found(t).to_status();
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_lists_causes() {
        let causes = vec![StatusCause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"A\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters".into(),
            field: "metadata.name".into(),
        }];
        let e = ApiError::invalid("", "ConfigMap", "A", causes);
        assert_eq!(e.code, 422);
        assert!(e.message.starts_with("ConfigMap \"A\" is invalid: metadata.name: Invalid value"));
    }
}
