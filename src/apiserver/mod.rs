//! The HTTP layer: TLS, authentication, authorization, request decoding, the REST verbs over the
//! registry, discovery, OpenAPI and table printing. Only this layer serializes API types.

pub mod status;

/// Who is making a request, as authentication found out. Inserted into the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}
