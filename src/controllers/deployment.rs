//! The Deployment controller (in progress).

/// What can go wrong syncing a Deployment.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("an informer of the deployment controller stopped")]
    InformerStopped,
}

pub async fn run(_client: kube::Client, _workers: usize) -> Result<(), DeploymentError> {
    futures::future::pending().await
}
