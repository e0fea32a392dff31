//! Raft traffic between nodes: a tarpc service carrying openraft's own
//! messages (bincode over mutual TLS, or TCP under `--insecure`), the
//! server side that hands them to the local `Raft` once it has checked who
//! sent them, and openraft's network factory for the client side, with one
//! reused connection per peer that is re-established after a failure.
//!
//! Node identity (docs/security.md): a peer dials node `id` verifying the
//! name only `id`'s certificate carries, and the server takes a message
//! only from a peer whose certificate names a current member — and a
//! leader's or candidate's message only from the node it claims to be
//! from.

use std::time::Duration;

use driftlock_proto::codec::FrameCodec;
use driftlock_proto::tls::Principal;
use driftlock_raft_store::{NodeAddr, SnapshotMeta, TypeConfig, Vote};
use futures::StreamExt;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::vote::RaftLeaderId;
use tarpc::server::Channel;

use crate::listener::Acceptor;
use crate::tls::NodeSecurity;

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
    async fn clock_probe() -> Result<u64, String>;
    /// Push-pull gossip of clock estimates: takes the caller's view (of
    /// which only its own estimate counts under TLS) and answers with this
    /// node's.
    async fn clock_gossip(
        view: Vec<crate::clocksync::GossipEntry>,
    ) -> Result<Vec<crate::clocksync::GossipEntry>, String>;
}

/// Server side of one connection: checks the sender, then forwards each
/// RPC to the local Raft.
#[derive(Clone)]
pub struct RaftRpcServer {
    /// The Raft instance every Raft RPC is handed to.
    pub raft: Raft,
    /// The local clock module.
    pub clock: std::sync::Arc<crate::clocksync::ClockSync>,
    /// The node on the other end, from its certificate; `None` under
    /// `--insecure`, where nothing can be checked.
    pub peer: Option<u64>,
    /// Where refusals are counted.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl RaftRpcServer {
    /// Admits a message from this connection's peer that claims to come
    /// from node `claimed` (a leader's or candidate's vote names it), or
    /// from no one in particular. The peer must be a member of the
    /// membership this node knows — any node, while it knows none yet (it
    /// is about to be initialized or added) — and be the node it claims.
    fn admit(&self, claimed: Option<u64>, what: &str) -> Result<(), String> {
        let Some(peer) = self.peer else {
            return Ok(());
        };
        if let Some(claimed) = claimed.filter(|c| *c != peer) {
            return Err(self.refuse(format!("node {peer} sent a {what} as node {claimed}")));
        }
        let known = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let membership = m.membership_config.membership();
            let mut nodes = membership.nodes().map(|(id, _)| *id).peekable();
            nodes.peek().is_none() || nodes.any(|id| id == peer)
        };
        if !known {
            return Err(self.refuse(format!("node {peer} is not a member; its {what} is refused")));
        }
        Ok(())
    }

    fn refuse(&self, message: String) -> String {
        self.metrics.security.raft_refused.inc();
        tracing::debug!("raft port: {message}");
        message
    }
}

/// The node a vote is for: the leader of an AppendEntries, the candidate of
/// a vote request.
fn voter(vote: &Vote) -> Option<u64> {
    Some(*vote.leader_id().node_id())
}

impl RaftRpc for RaftRpcServer {
    async fn append_entries(
        self,
        _: tarpc::context::Context,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, String> {
        self.admit(voter(&req.vote), "append-entries")?;
        self.raft.append_entries(req).await.map_err(|e| e.to_string())
    }

    async fn vote(
        self,
        _: tarpc::context::Context,
        req: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, String> {
        self.admit(voter(&req.vote), "vote request")?;
        self.raft.vote(req).await.map_err(|e| e.to_string())
    }

    async fn pre_vote(
        self,
        _: tarpc::context::Context,
        req: VoteRequest<TypeConfig>,
    ) -> Result<VoteResponse<TypeConfig>, String> {
        self.admit(voter(&req.vote), "pre-vote request")?;
        self.raft.pre_vote(req).await.map_err(|e| e.to_string())
    }

    async fn install_snapshot(
        self,
        _: tarpc::context::Context,
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<SnapshotResponse<TypeConfig>, String> {
        self.admit(voter(&vote), "snapshot")?;
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
        self.admit(voter(req.from_leader()), "leader transfer")?;
        self.raft.handle_transfer_leader(req).await.map_err(|e| e.to_string())
    }

    async fn clock_probe(self, _: tarpc::context::Context) -> Result<u64, String> {
        self.admit(None, "clock probe")?;
        Ok(self.clock.now_us())
    }

    async fn clock_gossip(
        self,
        _: tarpc::context::Context,
        view: Vec<crate::clocksync::GossipEntry>,
    ) -> Result<Vec<crate::clocksync::GossipEntry>, String> {
        self.admit(None, "clock gossip")?;
        self.clock.merge_view(view, self.peer);
        Ok(self.clock.view())
    }
}

/// Opens a Raft-port connection to node `id` at `addr` (used by the clock
/// module; the replication streams keep their own), verifying under TLS
/// that the other end is node `id`.
pub async fn connect(id: u64, addr: &str, timeout: Duration, security: &NodeSecurity) -> Result<RaftRpcClient, String> {
    let stream = security
        .dialer()
        .open(addr, &NodeSecurity::peer_name(id), timeout)
        .await
        .map_err(|e| format!("node {id}: {e}"))?;
    let transport = driftlock_proto::service::bincode_transport(stream, FrameCodec::raft());
    Ok(RaftRpcClient::new(tarpc::client::Config::default(), transport).spawn())
}

/// Binds the Raft port on `addr` and returns its accept loop, which the
/// caller runs as a task (it ends only if the listener fails). A
/// connection that fails the handshake or sends garbage is closed; the node
/// goes on serving. Only a node certificate gets past the handshake's
/// identity check.
pub async fn serve(
    addr: std::net::SocketAddr,
    raft: Raft,
    clock: std::sync::Arc<crate::clocksync::ClockSync>,
    acceptor: Acceptor,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let in_flight = acceptor.caps.in_flight;
    let metrics = acceptor.metrics.clone();
    Ok(acceptor.run(listener, move |io, principal| {
        let peer = match principal {
            Principal::Node(id) => Some(Some(id)),
            Principal::Anonymous => Some(None),
            Principal::Client { .. } => None,
        };
        let server = peer.map(|peer| RaftRpcServer {
            raft: raft.clone(),
            clock: clock.clone(),
            peer,
            metrics: metrics.clone(),
        });
        let metrics = metrics.clone();
        async move {
            let Some(server) = server else {
                metrics.security.raft_refused.inc();
                tracing::debug!(%principal, "raft port: a client certificate is refused");
                return;
            };
            let transport = driftlock_proto::service::bincode_transport(io, FrameCodec::raft());
            tarpc::server::BaseChannel::with_defaults(transport)
                .max_concurrent_requests(in_flight)
                .execute(server.serve())
                .for_each(|response| async move {
                    tokio::spawn(response);
                })
                .await;
        }
    }))
}

/// openraft's network factory: one [`PeerClient`] per replication stream.
#[derive(Clone)]
pub struct Network {
    /// How peers are dialed: with this node's certificate.
    pub security: NodeSecurity,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            security: self.security.clone(),
            client: None,
        }
    }
}

/// A lazily connected, reused connection to one peer.
pub struct PeerClient {
    target: u64,
    addr: String,
    security: NodeSecurity,
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
        let client = connect(self.target, &self.addr, timeout, &self.security)
            .await
            .map_err(Unreachable::from_string)?;
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
