//! The HTTP layer: TLS, authentication, authorization, request decoding, the REST verbs over the
//! registry, discovery, OpenAPI and table printing. Only this layer serializes API types.

// The server shell: listener, certificates, who is asking, health and metrics.
pub mod authn;
pub mod authz;
pub mod config;
pub mod health;
pub mod join;
pub mod kubeconfig;
pub mod lazy;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod tls;
pub mod version;

// The API proper: REST verbs over the registry, discovery, OpenAPI.
pub mod discovery;
pub mod handlers;
pub mod openapi;
pub mod request;
pub mod status;

/// Who is making a request, as authentication found out. Inserted into the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}
