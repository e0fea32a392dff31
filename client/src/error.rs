//! The library's error type.

use driftlock_proto::Rejection;

/// Result of a client operation.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a client operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The state machine refused the command; nothing changed.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The configuration lists no endpoint.
    #[error("no endpoints configured")]
    NoEndpoints,
    /// `DRIFTLOCK_ENDPOINTS` is unset, unreadable or empty.
    #[error("cannot read endpoints from the environment: {0}")]
    EndpointsEnv(String),
    /// A configuration value is out of range.
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// An argument was refused before anything was sent, or the node
    /// refused the request as malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The retry budget (`op_deadline_ms`) was spent without an answer;
    /// carries the last error seen. For a session operation the outcome may
    /// be unknown; the library has already sent what cleanup it could.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A non-deduplicated write (sessionless KV, admin) may or may not have
    /// been applied: it was sent and no answer came back. It is not retried,
    /// so that it is never applied twice.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// The session is over: its local validity ran out, the cluster ended
    /// it, or it was closed. Locks taken in it must be treated as lost.
    #[error("session expired")]
    SessionExpired,
    /// A lock wait ended without a grant (its wait time passed or it was
    /// cancelled).
    #[error("timed out waiting for lock '{name}'")]
    WaitTimedOut {
        /// The lock that was not granted in time.
        name: String,
    },
    /// The cluster's access policy does not let this client's certificate
    /// do this (docs/security.md, "Policy model"); nothing changed, and a
    /// retry will not help until an administrator changes the policy. The
    /// message names who, what and where ("permission denied: alice may
    /// not write key 'billing/x'").
    #[error("{0}")]
    PermissionDenied(String),
    /// The node answered something this version of the library does not
    /// expect for the request (a protocol mismatch).
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
}

impl ClientError {
    /// Whether the operation may have taken effect even though it failed
    /// (the caller must find out by reading, never assume either way).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, ClientError::Indeterminate(_) | ClientError::Unavailable(_))
    }
}

impl From<Rejection> for ClientError {
    fn from(r: Rejection) -> Self {
        ClientError::Rejected(r)
    }
}
