//! The in-process API client: a kube-rs `Client` whose transport is the API router itself (a
//! tower Service; no TCP, no TLS), with a fixed identity put into every request's extensions.

use crate::apiserver::handlers::api_router;
use crate::apiserver::UserInfo;
use crate::store::Store;

/// The user in-process controllers act as (upstream's controller-manager name).
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

/// The identity of in-process components: the controller manager, in system:masters.
pub fn controller_manager_identity() -> UserInfo {
    UserInfo {
        name: CONTROLLER_MANAGER_USER.into(),
        uid: String::new(),
        groups: vec![
            crate::apiserver::authz::MASTERS_GROUP.into(),
            crate::apiserver::authn::AUTHENTICATED_GROUP.into(),
        ],
    }
}

/// A client over the API router of `store`, acting as the controller manager.
pub fn in_process_client(store: Store) -> kube::Client {
    in_process_client_as(store, controller_manager_identity())
}

/// A client over the API router of `store`, acting as `user`.
pub fn in_process_client_as(store: Store, user: UserInfo) -> kube::Client {
    let router = api_router(store);
    let svc = tower::ServiceBuilder::new()
        .map_request(move |mut req: axum::http::Request<kube::client::Body>| {
            req.extensions_mut().insert(user.clone());
            req
        })
        .service(router);
    kube::Client::new(svc, "default")
}
