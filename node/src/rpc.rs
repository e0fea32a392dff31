//! One-shot calls to a node's client API, for the dev launcher and the
//! operator commands that address a specific node.

use std::time::Duration;

use driftlock_client::proto::{AdminReply, AdminRequest, ApiError, DriftlockApiClient, NodeStatus};
use tarpc::tokio_serde::formats::Bincode;

/// A failed one-shot call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Could not connect.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// Address.
        addr: String,
        /// Cause.
        message: String,
    },
    /// The call failed in transport or timed out.
    #[error("call to {addr} failed: {message}")]
    Call {
        /// Address.
        addr: String,
        /// Cause.
        message: String,
    },
    /// The node answered with an error.
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// Connects to a node's client API.
pub async fn connect(addr: &str, timeout: Duration) -> Result<DriftlockApiClient, RpcError> {
    let connect = tarpc::serde_transport::tcp::connect(addr, Bincode::default);
    let transport = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| RpcError::Connect {
            addr: addr.into(),
            message: "timed out".into(),
        })?
        .map_err(|e| RpcError::Connect {
            addr: addr.into(),
            message: e.to_string(),
        })?;
    Ok(DriftlockApiClient::new(tarpc::client::Config::default(), transport).spawn())
}

/// A context whose deadline is `timeout` from now.
pub fn context(timeout: Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

/// A node's status.
pub async fn status(addr: &str, timeout: Duration) -> Result<NodeStatus, RpcError> {
    let client = connect(addr, timeout).await?;
    client.status(context(timeout)).await.map_err(|e| RpcError::Call {
        addr: addr.into(),
        message: e.to_string(),
    })
}

/// An admin request to one node.
pub async fn admin(addr: &str, request: AdminRequest, timeout: Duration) -> Result<AdminReply, RpcError> {
    let client = connect(addr, timeout).await?;
    let reply = client
        .admin(context(timeout), request)
        .await
        .map_err(|e| RpcError::Call {
            addr: addr.into(),
            message: e.to_string(),
        })?;
    Ok(reply?)
}
