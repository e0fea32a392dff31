//! The tarpc service every node serves on its client port (bincode frames
//! over TCP, with mutual TLS unless a node runs `--insecure`), how to open
//! a connection to it ([`Security`], [`dial`]), and one-shot calls.
//!
//! Mutations go through Raft on the leader; a follower answers
//! [`ApiError::NotLeader`] with a hint. Reads are linearizable by default
//! (served by the leader after `ensure_linearizable`), or serializable from
//! any node's applied state when asked. Reads that depend on expiry are
//! answered as of the leader's current cluster time.

use crate::api::{AdminReply, AdminRequest, ApiError, Consistency, KvWrite, NodeStatus, Query, QueryReply};
use crate::auth::SessionSecret;
use crate::codec::FrameCodec;
use crate::event::{EventBatch, EventFilter};
use crate::ops::SessionOp;
use crate::reply::Reply;
use crate::tls;
use crate::types::SessionId;

/// The client API of a driftlock node.
#[tarpc::service]
pub trait DriftlockApi {
    /// Opens a session named `client_name` (at most
    /// `limits.max_client_name_bytes`) that asks for `requested_ttl_us` of
    /// validity (within `lease.min_ttl_us ..= lease.max_ttl_us`). `nonce` is
    /// random per open, kept across its retries: a retry with the same nonce
    /// (and secret, from the same principal) returns the same session.
    /// `secret` is drawn at random by the client and sent with every
    /// operation of the session; the node keeps only its SHA-256, with the
    /// connection's principal as the session's owner.
    async fn open_session(
        nonce: u128,
        client_name: String,
        requested_ttl_us: u64,
        secret: SessionSecret,
    ) -> Result<Reply, ApiError>;

    /// Runs one deduplicated operation in a session: keepalive, close,
    /// acquire, release, fenced KV writes, campaign, resign, proclaim,
    /// handover state and acknowledgement, probe answers. `seq` starts at 1
    /// and increases with each new operation of the session; a retry reuses
    /// it and gets the first reply (while it is within the session's dedupe
    /// window, and only if it is the same operation). Refused with
    /// `PermissionDenied` unless the connection's principal opened the
    /// session and `secret` is the one it was opened with.
    async fn session_op(session: SessionId, secret: SessionSecret, seq: u64, op: SessionOp) -> Result<Reply, ApiError>;

    /// A KV write outside any session (not deduplicated, not fenced: for
    /// operators and the CLI).
    async fn kv_write(write: KvWrite) -> Result<Reply, ApiError>;

    /// A read: linearizable by default (on the leader, after confirming
    /// leadership and applying its log), or serializable from this node's
    /// applied state. Expiry-dependent answers are as of the node's current
    /// cluster time.
    async fn read(query: Query, consistency: Consistency) -> Result<QueryReply, ApiError>;

    /// Long-poll for events of commands after revision `after_index`
    /// (docs/design.md "Batched proposals") that match `filter`: returns at once if there are some, else waits up to
    /// `timeout_ms` (at most
    /// [`MAX_OBSERVE_WAIT_MS`](crate::limits::MAX_OBSERVE_WAIT_MS)) for
    /// them. Any node serves it from its own buffer of applied events.
    async fn observe(after_index: u64, filter: EventFilter, timeout_ms: u64) -> Result<EventBatch, ApiError>;

    /// This node's own view of itself and the cluster (no Raft round trip).
    async fn status() -> NodeStatus;

    /// Cluster administration (leader only, except `Init`, which goes to
    /// an uninitialized member).
    async fn admin(request: AdminRequest) -> Result<AdminReply, ApiError>;
}

/// Why a client connection could not be made or a one-shot call
/// ([`status`], [`admin`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The TCP connection could not be opened in time.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The address dialled, `host:port`.
        addr: String,
        /// What the socket layer said (or "timed out").
        message: String,
    },
    /// The call was sent but failed in transport or ran past its deadline:
    /// its outcome is unknown.
    #[error("call to {addr} failed: {message}")]
    Call {
        /// The node's address, `host:port`.
        addr: String,
        /// What tarpc reported.
        message: String,
    },
    /// The node answered with an error.
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// A byte stream a connection runs over: plain TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection's stream, whichever it is.
pub type BoxedIo = Box<dyn Io>;

/// How a party reaches a node: with mutual TLS (the default everywhere),
/// or over plain TCP to a node started with `--insecure` (tests only).
#[derive(Clone)]
pub enum Security {
    /// Plain TCP: no encryption, no identity.
    Insecure,
    /// Mutual TLS with this configuration; the node's certificate is
    /// verified against the cluster CA and [`tls::NODE_SERVER_NAME`].
    Tls(std::sync::Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Insecure => write!(f, "Insecure"),
            Security::Tls(_) => write!(f, "Tls"),
        }
    }
}

impl Security {
    /// TLS with these files, or plain TCP without any.
    pub fn from_files(files: Option<&tls::TlsFiles>) -> Result<Security, tls::TlsError> {
        match files {
            Some(files) => Ok(Security::Tls(tls::client_config(files)?)),
            None => Ok(Security::Insecure),
        }
    }

    /// Opens a stream to `addr`: TCP with `TCP_NODELAY` (requests are small
    /// and latency-bound), then the TLS handshake, verifying the server as
    /// `server_name` (a node for clients, a specific node for Raft peers).
    pub async fn open(&self, addr: &str, server_name: &str, timeout: std::time::Duration) -> Result<BoxedIo, RpcError> {
        let connect_error = |message: String| RpcError::Connect {
            addr: addr.into(),
            message,
        };
        let opened = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            // Nagle only delays small requests; failing to turn it off costs
            // latency, not correctness.
            let _ = stream.set_nodelay(true);
            match self {
                Security::Insecure => Ok(Box::new(stream) as BoxedIo),
                Security::Tls(config) => {
                    let name = tls::server_name(server_name).map_err(|e| connect_error(e.to_string()))?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, stream)
                        .await
                        .map_err(|e| connect_error(format!("TLS handshake: {e}")))?;
                    Ok(Box::new(tls) as BoxedIo)
                }
            }
        };
        tokio::time::timeout(timeout, opened)
            .await
            .map_err(|_| connect_error("timed out".into()))?
    }
}

/// A stream cut into length-delimited frames by [`FrameCodec`]: what both
/// ends of either port put bincode messages in.
pub type Framed = tarpc::tokio_util::codec::Framed<crate::codec::DeadlineIo, FrameCodec>;

/// Frames `io` with `codec`, which refuses frames above its caps (the
/// connection is then closed), holds only the bytes that arrived, and
/// drops a peer that stalls mid-frame or stops reading.
pub fn framed(io: BoxedIo, codec: FrameCodec) -> Framed {
    tarpc::tokio_util::codec::Framed::new(codec.guard(io), codec)
}

/// A tarpc transport of bincode messages over [`framed`] bytes.
pub type BincodeTransport<In, Out> =
    tarpc::tokio_serde::Framed<Framed, In, Out, tarpc::tokio_serde::formats::Bincode<In, Out>>;

/// [`framed`] `io` carrying bincode messages, for a tarpc client or server.
pub fn bincode_transport<In, Out>(io: BoxedIo, codec: FrameCodec) -> BincodeTransport<In, Out>
where
    In: for<'de> serde::Deserialize<'de>,
    Out: serde::Serialize,
{
    tarpc::tokio_serde::Framed::new(framed(io, codec), tarpc::tokio_serde::formats::Bincode::default())
}

impl FrameCodec {
    /// A client's end of the client port: replies of at most
    /// [`MAX_FRAME_BYTES`](crate::limits::MAX_FRAME_BYTES) in, requests of
    /// at most [`MAX_REQUEST_FRAME_BYTES`](crate::limits::MAX_REQUEST_FRAME_BYTES)
    /// out (a larger one fails here rather than at the node).
    pub fn client() -> FrameCodec {
        FrameCodec::new(crate::limits::MAX_FRAME_BYTES, crate::limits::MAX_REQUEST_FRAME_BYTES)
    }

    /// A node's end of the client port: requests of at most
    /// [`MAX_REQUEST_FRAME_BYTES`](crate::limits::MAX_REQUEST_FRAME_BYTES)
    /// in, replies of at most [`MAX_FRAME_BYTES`](crate::limits::MAX_FRAME_BYTES)
    /// out.
    pub fn node() -> FrameCodec {
        FrameCodec::new(crate::limits::MAX_REQUEST_FRAME_BYTES, crate::limits::MAX_FRAME_BYTES)
    }

    /// Either end of the Raft port: frames of at most
    /// [`MAX_RAFT_FRAME_BYTES`](crate::limits::MAX_RAFT_FRAME_BYTES) both
    /// ways.
    pub fn raft() -> FrameCodec {
        FrameCodec::new(crate::limits::MAX_RAFT_FRAME_BYTES, crate::limits::MAX_RAFT_FRAME_BYTES)
    }
}

/// A connected tarpc client and the task that drives its connection; the
/// task ends when the connection breaks.
pub type NewApiClient = tarpc::client::NewClient<
    DriftlockApiClient,
    tarpc::client::RequestDispatch<
        DriftlockApiRequest,
        DriftlockApiResponse,
        BincodeTransport<tarpc::Response<DriftlockApiResponse>, tarpc::ClientMessage<DriftlockApiRequest>>,
    >,
>;

/// Opens a client connection to a node (see [`Security::open`]), with
/// length-delimited bincode frames ([`FrameCodec::client`]). The caller spawns
/// the returned dispatch future (or uses [`connect`], which does).
pub async fn dial(addr: &str, timeout: std::time::Duration, security: &Security) -> Result<NewApiClient, RpcError> {
    let stream = security.open(addr, tls::NODE_SERVER_NAME, timeout).await?;
    let transport = bincode_transport(stream, FrameCodec::client());
    Ok(DriftlockApiClient::new(tarpc::client::Config::default(), transport))
}

/// Connects to a node's client API for one-shot calls (the connection's
/// dispatch task runs in the background until the client is dropped).
pub async fn connect(
    addr: &str,
    timeout: std::time::Duration,
    security: &Security,
) -> Result<DriftlockApiClient, RpcError> {
    Ok(dial(addr, timeout, security).await?.spawn())
}

/// A tarpc context whose deadline is `timeout` from now.
pub fn context(timeout: std::time::Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

/// One node's status, on a fresh connection.
pub async fn status(addr: &str, timeout: std::time::Duration, security: &Security) -> Result<NodeStatus, RpcError> {
    let client = connect(addr, timeout, security).await?;
    client.status(context(timeout)).await.map_err(|e| RpcError::Call {
        addr: addr.into(),
        message: e.to_string(),
    })
}

/// One admin request to one node, on a fresh connection.
pub async fn admin(
    addr: &str,
    request: AdminRequest,
    timeout: std::time::Duration,
    security: &Security,
) -> Result<AdminReply, RpcError> {
    let client = connect(addr, timeout, security).await?;
    let reply = client
        .admin(context(timeout), request)
        .await
        .map_err(|e| RpcError::Call {
            addr: addr.into(),
            message: e.to_string(),
        })?;
    Ok(reply?)
}
