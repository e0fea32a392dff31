//! Raft traffic between nodes: a tarpc service carrying openraft's own
//! messages (bincode over TCP), the server side that hands them to the local
//! `Raft`, and openraft's network factory for the client side, with one
//! reused connection per peer that is re-established after a failure.

use std::time::Duration;

use driftlock_proto::limits::MAX_RAFT_FRAME_BYTES;
use driftlock_raft_store::{NodeAddr, SnapshotMeta, TypeConfig, Vote};
use futures::StreamExt;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use tarpc::server::Channel;
use tarpc::tokio_serde::formats::Bincode;

/// The openraft instance of a driftlock node.
pub type Raft = openraft::Raft<TypeConfig, driftlock_raft_store::SledStateMachine>;

/// Node-to-node Raft RPCs. Remote failures come back as strings: openraft
/// treats every one of them as "peer unreachable, back off and retry".
#[tarpc::service]
pub trait RaftRpc {
    /// AppendEntries (also heartbeats).
    async fn append_entries(req: AppendEntriesRequest<TypeConfig>)
        -> Result<AppendEntriesResponse<TypeConfig>, String>;
    /// openraft's RequestVote: a candidate asks for this node's vote in its
    /// term.
    async fn vote(req: VoteRequest<TypeConfig>) -> Result<VoteResponse<TypeConfig>, String>;
    /// openraft's PreVote: a would-be candidate asks whether it would win
    /// before it raises its term, so a node cut off for a while does not unseat
    /// a healthy leader when it returns.
    async fn pre_vote(req: VoteRequest<TypeConfig>) -> Result<VoteResponse<TypeConfig>, String>;
    /// Install a whole snapshot (metadata and the store's framed bytes).
    async fn install_snapshot(
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<TypeConfig>, String>;
    /// Leadership handed to this node.
    async fn transfer_leader(
        req: TransferLeaderRequest<TypeConfig>,
    ) -> Result<TransferLeaderResponse<TypeConfig>, String>;
    /// This node's monotonic clock, µs since its clock module started
    /// (Cristian's method: the caller brackets it with its own readings).
    async fn clock_probe() -> u64;
    /// Push-pull gossip of clock estimates: takes the caller's view and
    /// answers with this node's.
    async fn clock_gossip(view: Vec<crate::clocksync::GossipEntry>) -> Vec<crate::clocksync::GossipEntry>;
}

/// Server side: forwards each RPC to the local Raft.
#[derive(Clone)]
pub struct RaftRpcServer {
    /// The Raft instance every Raft RPC is handed to.
    pub raft: Raft,
    /// The local clock module.
    pub clock: std::sync::Arc<crate::clocksync::ClockSync>,
}

impl RaftRpc for RaftRpcServer {
    async fn append_entries(
        self,
        _: tarpc::context::Context,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, String> {
        self.raft.append_entries(req).await.map_err(|e| e.to_string())
    }

    async fn vote(
        self,
        _: tarpc::context::Context,
        req: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, String> {
        self.raft.vote(req).await.map_err(|e| e.to_string())
    }

    async fn pre_vote(
        self,
        _: tarpc::context::Context,
        req: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, String> {
        self.raft.pre_vote(req).await.map_err(|e| e.to_string())
    }

    async fn install_snapshot(
        self,
        _: tarpc::context::Context,
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<TypeConfig>, String> {
        let snapshot = openraft::storage::Snapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        };
        self.raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| e.to_string())
    }

    async fn transfer_leader(
        self,
        _: tarpc::context::Context,
        req: TransferLeaderRequest<TypeConfig>,
    ) -> Result<TransferLeaderResponse<TypeConfig>, String> {
        self.raft.handle_transfer_leader(req).await.map_err(|e| e.to_string())
    }

    async fn clock_probe(self, _: tarpc::context::Context) -> u64 {
        self.clock.now_us()
    }

    async fn clock_gossip(
        self,
        _: tarpc::context::Context,
        view: Vec<crate::clocksync::GossipEntry>,
    ) -> Vec<crate::clocksync::GossipEntry> {
        self.clock.merge_view(view);
        self.clock.view()
    }
}

/// Opens a Raft-port connection to `addr` (used by the clock module; the
/// replication streams keep their own).
pub async fn connect(addr: &str, timeout: Duration) -> Result<RaftRpcClient, String> {
    let mut connect = tarpc::serde_transport::tcp::connect(addr, Bincode::default);
    connect.config_mut().max_frame_length(MAX_RAFT_FRAME_BYTES);
    let transport = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    Ok(RaftRpcClient::new(tarpc::client::Config::default(), transport).spawn())
}

/// Binds the Raft port on `addr` and returns its accept loop, which the
/// caller runs as a task (it ends only if the listener fails). A
/// connection that sends garbage is closed by the transport; the node goes
/// on serving.
pub async fn serve(
    addr: std::net::SocketAddr,
    raft: Raft,
    clock: std::sync::Arc<crate::clocksync::ClockSync>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut incoming = tarpc::serde_transport::tcp::listen(addr, Bincode::default).await?;
    incoming.config_mut().max_frame_length(MAX_RAFT_FRAME_BYTES);
    let server = RaftRpcServer { raft, clock };
    Ok(async move {
        while let Some(conn) = incoming.next().await {
            let Ok(transport) = conn else { continue };
            let server = server.clone();
            tokio::spawn(async move {
                tarpc::server::BaseChannel::with_defaults(transport)
                    .execute(server.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    })
                    .await;
            });
        }
    })
}

/// openraft's network factory: one [`PeerClient`] per replication stream.
#[derive(Clone, Default)]
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            client: None,
        }
    }
}

/// A lazily connected, reused connection to one peer.
pub struct PeerClient {
    target: u64,
    addr: String,
    client: Option<RaftRpcClient>,
}

fn ctx(option: &RPCOption) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + option.soft_ttl();
    ctx
}

impl PeerClient {
    async fn client(&mut self, timeout: Duration) -> Result<RaftRpcClient, Unreachable<TypeConfig>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let mut connect = tarpc::serde_transport::tcp::connect(&self.addr, Bincode::default);
        connect.config_mut().max_frame_length(MAX_RAFT_FRAME_BYTES);
        let transport = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| {
                Unreachable::from_string(format!("connect to node {} at {} timed out", self.target, self.addr))
            })?
            .map_err(|e| Unreachable::from_string(format!("connect to node {} at {}: {e}", self.target, self.addr)))?;
        let client = RaftRpcClient::new(tarpc::client::Config::default(), transport).spawn();
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Maps a transport failure, dropping the connection so the next call
    /// reconnects.
    fn transport_failed(&mut self, e: tarpc::client::RpcError) -> RPCError<TypeConfig> {
        self.client = None;
        RPCError::Unreachable(Unreachable::from_string(format!(
            "node {} at {}: {e}",
            self.target, self.addr
        )))
    }

    fn remote_failed(&self, e: String) -> RPCError<TypeConfig> {
        RPCError::Network(NetworkError::from_string(format!("node {} answered: {e}", self.target)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = driftlock_raft_store::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.client(option.soft_ttl()).await?;
        match client.append_entries(ctx(&option), rpc).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.remote_failed(e)),
            Err(e) => Err(self.transport_failed(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.client(option.soft_ttl()).await?;
        match client.vote(ctx(&option), rpc).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.remote_failed(e)),
            Err(e) => Err(self.transport_failed(e)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.client(option.soft_ttl()).await?;
        match client.pre_vote(ctx(&option), rpc).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.remote_failed(e)),
            Err(e) => Err(self.transport_failed(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: driftlock_raft_store::Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let client = self.client(option.soft_ttl()).await?;
        let data = snapshot.snapshot.into_inner();
        // A snapshot may be large: allow it the hard TTL, not the soft one.
        let mut context = tarpc::context::current();
        context.deadline = std::time::Instant::now() + option.hard_ttl().max(Duration::from_secs(60));
        let call = client.install_snapshot(context, vote, snapshot.meta, data);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = call => match result {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(StreamingError::Network(NetworkError::from_string(format!("node {} answered: {e}", self.target)))),
                Err(e) => {
                    self.client = None;
                    Err(StreamingError::Unreachable(Unreachable::from_string(format!("node {} at {}: {e}", self.target, self.addr))))
                }
            },
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let client = self.client(option.soft_ttl()).await?;
        match client.transfer_leader(ctx(&option), req).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(self.remote_failed(e)),
            Err(e) => Err(self.transport_failed(e)),
        }
    }
}
