//! A minimal etcd v3 gRPC client for the comparison: leases, the v3lock
//! service and the maintenance calls the workloads need.
//!
//! The messages are declared by hand with `prost` derives (field numbers
//! from etcd's `rpc.proto` and `v3lock.proto`), so the build needs no
//! `protoc` — the `etcd-client` crate generates its code with `protoc` at
//! build time, which `cargo bench` on a fresh machine does not have.
//!
//! Fairness rule of the comparison: a client talks to one endpoint and
//! moves to the next only on a connection error (`Unavailable`), like a
//! driftlock client follows its leader; each attempt has its own timeout.

use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// Header of every etcd response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// etcd's `cluster_id`: the cluster that answered (unused here).
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// etcd's `member_id`: the member that answered; the leader lookups compare
    /// it with `StatusResponse::leader`.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// etcd's `revision`: the KV store's revision when the request was applied
    /// (unused here).
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// etcd's `raft_term`: the answering member's Raft term (unused here).
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// etcd's `LeaseGrantRequest`, sent to `etcdserverpb.Lease/LeaseGrant`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    /// etcd's `TTL`: the time to live asked for, seconds.
    #[prost(int64, tag = "1")]
    pub ttl_s: i64,
    /// etcd's `ID`: the lease id asked for; 0 lets the server choose.
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// etcd's `LeaseGrantResponse`, the answer of `Lease/LeaseGrant`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    /// etcd's `header` (unused here).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// etcd's `ID`: the granted lease, which keepalives and locks name.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// etcd's `TTL`: the granted time to live, seconds.
    #[prost(int64, tag = "3")]
    pub ttl_s: i64,
    /// etcd's `error`: why the grant failed; empty on success.
    #[prost(string, tag = "4")]
    pub error: String,
}

/// etcd's `LeaseKeepAliveRequest`, one message on the
/// `etcdserverpb.Lease/LeaseKeepAlive` stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveRequest {
    /// etcd's `ID`: the lease to renew.
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// etcd's `LeaseKeepAliveResponse`, one answer on the `Lease/LeaseKeepAlive`
/// stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    /// etcd's `header` (unused here).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// etcd's `ID`: the lease renewed.
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// etcd's `TTL`: the lease's remaining time to live, seconds (≤ 0: the
    /// lease is gone).
    #[prost(int64, tag = "3")]
    pub ttl_s: i64,
}

/// v3lock's `LockRequest`, sent to `v3lockpb.Lock/Lock`; the call returns once
/// the lock is held.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockRequest {
    /// v3lock's `name`: the lock every contender names; etcd creates a key
    /// under it for each waiter.
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    /// v3lock's `lease`: the lease the lock's key is attached to; the lock is
    /// freed when the lease expires.
    #[prost(int64, tag = "2")]
    pub lease: i64,
}

/// v3lock's `LockResponse`, the answer of `Lock/Lock`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockResponse {
    /// etcd's `header` (unused here).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// v3lock's `key`: the key that holds the lock, to pass to `Unlock`.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
}

/// v3lock's `UnlockRequest`, sent to `v3lockpb.Lock/Unlock`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockRequest {
    /// v3lock's `key`: the key `Lock` returned.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

/// v3lock's `UnlockResponse`, the answer of `Lock/Unlock`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockResponse {
    /// etcd's `header` (unused here).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// etcd's `StatusRequest` (no fields), sent to
/// `etcdserverpb.Maintenance/Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// etcd's `StatusResponse`, the answer of `Maintenance/Status`: its first four
/// fields only (prost skips the others).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    /// etcd's `header`; its `member_id` is the member that answered.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// etcd's `version`: the answering server's version (unused here; the
    /// report takes `etcd --version`).
    #[prost(string, tag = "2")]
    pub version: String,
    /// etcd's `dbSize`: the backend database's size, bytes (unused here).
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    /// etcd's `leader`: the member id of the leader, 0 when none is known.
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

/// etcd's `MoveLeaderRequest`, sent to `etcdserverpb.Maintenance/MoveLeader` on
/// the current leader.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveLeaderRequest {
    /// etcd's `targetID`: the member id of the new leader.
    #[prost(uint64, tag = "1")]
    pub target_id: u64,
}

/// etcd's `MoveLeaderResponse`, the answer of `Maintenance/MoveLeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MoveLeaderResponse {
    /// etcd's `header` (unused here).
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
const LEASE_KEEPALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
const LOCK: &str = "/v3lockpb.Lock/Lock";
const UNLOCK: &str = "/v3lockpb.Lock/Unlock";
const STATUS: &str = "/etcdserverpb.Maintenance/Status";
const MOVE_LEADER: &str = "/etcdserverpb.Maintenance/MoveLeader";

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The endpoint URL is malformed.
    #[error("bad endpoint {0}: {1}")]
    BadEndpoint(String, String),
    /// The attempt's timeout passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server (or the connection) answered an error status.
    #[error("{0}")]
    Status(Box<Status>),
}

/// A connection to an etcd cluster that sticks to one endpoint and moves to
/// the next on connection errors.
#[derive(Clone)]
pub struct EtcdConn {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    current: usize,
    /// Time budget of one operation (all its attempts).
    pub op_timeout: Duration,
}

impl EtcdConn {
    /// Lazily connects to `endpoints` (`host:port`), starting with
    /// `endpoints[first % len]`.
    pub fn new(endpoints: &[String], first: usize, op_timeout: Duration) -> Result<EtcdConn, EtcdError> {
        let mut channels = Vec::new();
        for ep in endpoints {
            let endpoint = Endpoint::from_shared(format!("http://{ep}"))
                .map_err(|e| EtcdError::BadEndpoint(ep.clone(), e.to_string()))?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true);
            channels.push(endpoint.connect_lazy());
        }
        if channels.is_empty() {
            return Err(EtcdError::BadEndpoint(String::new(), "no endpoints".into()));
        }
        Ok(EtcdConn {
            current: first % channels.len(),
            endpoints: endpoints.to_vec(),
            channels,
            op_timeout,
        })
    }

    /// The endpoint (`host:port`) calls go to now; a connection error moves the
    /// connection on to the next one.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    async fn unary<Req, Resp>(&mut self, path: &'static str, req: Req) -> Result<Resp, EtcdError>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let deadline = Instant::now() + self.op_timeout;
        let mut refused_in_a_row = 0usize;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(EtcdError::Timeout(self.op_timeout));
            }
            let mut grpc = tonic::client::Grpc::new(self.channels[self.current].clone());
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
                grpc.unary(
                    tonic::Request::new(req.clone()),
                    PathAndQuery::from_static(path),
                    ProstCodec::<Req, Resp>::default(),
                )
                .await
            };
            match tokio::time::timeout(remaining, call).await {
                Err(_) => return Err(EtcdError::Timeout(self.op_timeout)),
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(status)) if status.code() == Code::Unavailable => {
                    // Connection refused or reset, or the member has no
                    // leader: move to the next endpoint.
                    self.current = (self.current + 1) % self.channels.len();
                    refused_in_a_row += 1;
                    if refused_in_a_row % self.channels.len() == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Ok(Err(status)) => return Err(EtcdError::Status(Box::new(status))),
            }
        }
    }

    /// Grants a lease of `ttl_s` seconds; returns its id.
    pub async fn lease_grant(&mut self, ttl_s: i64) -> Result<i64, EtcdError> {
        let r: LeaseGrantResponse = self.unary(LEASE_GRANT, LeaseGrantRequest { ttl_s, id: 0 }).await?;
        if !r.error.is_empty() {
            return Err(EtcdError::Status(Box::new(Status::new(Code::Unknown, r.error))));
        }
        Ok(r.id)
    }

    /// Takes the lock `name` on `lease` (blocks while someone else holds
    /// it); returns the key to unlock with.
    pub async fn lock(&mut self, name: &str, lease: i64) -> Result<Vec<u8>, EtcdError> {
        let r: LockResponse = self
            .unary(
                LOCK,
                LockRequest {
                    name: name.as_bytes().to_vec(),
                    lease,
                },
            )
            .await?;
        Ok(r.key)
    }

    /// Releases a lock by its key.
    pub async fn unlock(&mut self, key: Vec<u8>) -> Result<(), EtcdError> {
        let _: UnlockResponse = self.unary(UNLOCK, UnlockRequest { key }).await?;
        Ok(())
    }

    /// Status of the member this connection currently talks to.
    pub async fn status(&mut self) -> Result<StatusResponse, EtcdError> {
        self.unary(STATUS, StatusRequest {}).await
    }

    /// Asks the current endpoint (which must be the leader) to hand
    /// leadership to `target_id`.
    pub async fn move_leader(&mut self, target_id: u64) -> Result<(), EtcdError> {
        let _: MoveLeaderResponse = self.unary(MOVE_LEADER, MoveLeaderRequest { target_id }).await?;
        Ok(())
    }

    /// Renews leases over one keepalive stream: sends each id of `ids` and
    /// reads the answers; returns how many were renewed. Used with a fresh
    /// stream per batch, on the current endpoint.
    pub async fn keepalive_batch(&mut self, ids: &[i64]) -> Result<usize, EtcdError> {
        let deadline = Instant::now() + self.op_timeout;
        let mut grpc = tonic::client::Grpc::new(self.channels[self.current].clone());
        let requests: Vec<LeaseKeepAliveRequest> = ids.iter().map(|&id| LeaseKeepAliveRequest { id }).collect();
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
            let resp = grpc
                .streaming(
                    tonic::Request::new(futures::stream::iter(requests)),
                    PathAndQuery::from_static(LEASE_KEEPALIVE),
                    ProstCodec::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>::default(),
                )
                .await?;
            let mut stream = resp.into_inner();
            let mut renewed = 0usize;
            let mut answered = 0usize;
            while answered < ids.len() {
                match stream.message().await? {
                    Some(r) => {
                        answered += 1;
                        if r.ttl_s > 0 {
                            renewed += 1;
                        }
                    }
                    None => break,
                }
            }
            Ok::<usize, Status>(renewed)
        };
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), call).await {
            Err(_) => Err(EtcdError::Timeout(self.op_timeout)),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(status)) => {
                if status.code() == Code::Unavailable {
                    self.current = (self.current + 1) % self.channels.len();
                }
                Err(EtcdError::Status(Box::new(status)))
            }
        }
    }
}
