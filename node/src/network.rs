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
    /// One chunk of a snapshot (the store's framed bytes): `data` belongs at
    /// `offset` of a snapshot of `total_bytes`. Chunks come in order, at
    /// most [`SNAPSHOT_CHUNK_BYTES`](driftlock_proto::limits::SNAPSHOT_CHUNK_BYTES)
    /// each; the answer is `None` until the last one, which installs the
    /// snapshot and answers with openraft's response.
    async fn snapshot_chunk(
        vote: Vote,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, String>;
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
    /// The snapshot being received, shared by every Raft connection of
    /// this node (a leader may reconnect between chunks).
    pub snapshots: std::sync::Arc<SnapshotAssembler>,
    /// The node that sent AppendEntries on this connection, if any (one
    /// connection, one dialer): when the connection ends, `failover.rs`
    /// checks whether that leader's process is gone.
    pub appends_from: std::sync::Arc<std::sync::OnceLock<u64>>,
}

/// Reassembles a snapshot sent in chunks. It holds one snapshot at a time:
/// a chunk at offset 0 starts a new one (dropping any unfinished one), any
/// other chunk must continue the current one exactly where it stopped. It
/// never holds more than the chunks that arrived — the declared total is
/// checked, not allocated.
#[derive(Default)]
pub struct SnapshotAssembler {
    current: std::sync::Mutex<Option<Assembly>>,
}

struct Assembly {
    vote: Vote,
    snapshot_id: String,
    total_bytes: u64,
    data: Vec<u8>,
    chunks: u32,
}

/// Names a snapshot by the last entry it covers: two snapshots through the
/// same entry hold the same state (the state machine is deterministic).
fn snapshot_id(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(log_id) => log_id.to_string(),
        None => "(empty)".into(),
    }
}

/// What [`SnapshotAssembler::add`] made of a chunk.
#[derive(Debug, PartialEq)]
pub enum ChunkOutcome {
    /// More chunks are expected.
    Partial,
    /// The last chunk: the whole snapshot's bytes, to install, and how
    /// many chunks brought them.
    Complete(Vec<u8>, u32),
}

impl SnapshotAssembler {
    /// Adds the chunk `data` at `offset` of the snapshot `snapshot_id` of
    /// `total_bytes` sent under `vote`; refuses (and forgets the
    /// unfinished snapshot) a chunk that is too large, out of order, or
    /// inconsistent with the chunks before it.
    pub fn add(
        &self,
        vote: &Vote,
        snapshot_id: &str,
        total_bytes: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<ChunkOutcome, String> {
        use driftlock_proto::limits::SNAPSHOT_CHUNK_BYTES;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if data.len() > SNAPSHOT_CHUNK_BYTES {
            *current = None;
            return Err(format!(
                "snapshot chunk of {} bytes is above the {SNAPSHOT_CHUNK_BYTES}-byte limit",
                data.len()
            ));
        }
        let end = offset.checked_add(data.len() as u64).filter(|end| *end <= total_bytes);
        let Some(end) = end else {
            *current = None;
            return Err(format!(
                "snapshot chunk at {offset} of {} bytes runs past the snapshot's {total_bytes} bytes",
                data.len()
            ));
        };
        if offset == 0 {
            // A new snapshot; what it holds grows with what arrives.
            let first = usize::try_from(total_bytes)
                .unwrap_or(usize::MAX)
                .min(SNAPSHOT_CHUNK_BYTES);
            *current = Some(Assembly {
                vote: *vote,
                snapshot_id: snapshot_id.to_owned(),
                total_bytes,
                data: Vec::with_capacity(first),
                chunks: 0,
            });
        }
        let Some(a) = current.as_mut() else {
            return Err(format!(
                "snapshot chunk at {offset} of snapshot {snapshot_id}, but no snapshot is being received"
            ));
        };
        if a.vote != *vote
            || a.snapshot_id != snapshot_id
            || a.total_bytes != total_bytes
            || a.data.len() as u64 != offset
        {
            let expected = format!(
                "offset {} of snapshot {} ({} bytes)",
                a.data.len(),
                a.snapshot_id,
                a.total_bytes
            );
            *current = None;
            return Err(format!(
                "snapshot chunk out of order: got offset {offset} of snapshot {snapshot_id} ({total_bytes} bytes), expected {expected}"
            ));
        }
        a.data.extend_from_slice(data);
        a.chunks += 1;
        debug_assert_eq!(a.data.len() as u64, end);
        if end < total_bytes {
            return Ok(ChunkOutcome::Partial);
        }
        Ok(match current.take() {
            Some(a) => ChunkOutcome::Complete(a.data, a.chunks),
            None => ChunkOutcome::Complete(Vec::new(), 0),
        })
    }
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
        let leader = voter(&req.vote);
        self.admit(leader, "append-entries")?;
        if let (None, Some(leader)) = (self.appends_from.get(), leader) {
            // Set once per connection; a second setter loses the same value.
            let _ = self.appends_from.set(leader);
        }
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

    async fn snapshot_chunk(
        self,
        _: tarpc::context::Context,
        vote: Vote,
        meta: SnapshotMeta,
        total_bytes: u64,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Option<SnapshotResponse<TypeConfig>>, String> {
        self.admit(voter(&vote), "snapshot")?;
        let data = match self
            .snapshots
            .add(&vote, &snapshot_id(&meta), total_bytes, offset, &data)?
        {
            ChunkOutcome::Partial => return Ok(None),
            ChunkOutcome::Complete(data, chunks) => {
                tracing::info!(
                    snapshot = %snapshot_id(&meta),
                    bytes = data.len(),
                    chunks,
                    "snapshot received in {chunks} chunks; installing"
                );
                data
            }
        };
        // The store decodes the frames and checks their checksums before
        // it replaces anything (`decode_snapshot`).
        let snapshot = openraft::storage::Snapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        };
        self.raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map(Some)
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
    let snapshots = std::sync::Arc::new(SnapshotAssembler::default());
    let watch = std::sync::Arc::new(crate::failover::LeaderWatch::new(raft.clone(), metrics.clone()));
    Ok(acceptor.run(listener, move |io, principal| {
        let peer = match principal {
            Principal::Node(id) => Some(Some(id)),
            Principal::Anonymous => Some(None),
            Principal::Client { .. } => None,
        };
        let appends_from = std::sync::Arc::new(std::sync::OnceLock::new());
        let server = peer.map(|peer| RaftRpcServer {
            raft: raft.clone(),
            clock: clock.clone(),
            peer,
            metrics: metrics.clone(),
            snapshots: snapshots.clone(),
            appends_from: appends_from.clone(),
        });
        let metrics = metrics.clone();
        let watch = watch.clone();
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
            if let Some(&leader) = appends_from.get() {
                watch.connection_closed(leader).await;
            }
        }
    }))
}

/// openraft's network factory: one [`PeerClient`] per replication stream.
#[derive(Clone)]
pub struct Network {
    /// How peers are dialed: with this node's certificate.
    pub security: NodeSecurity,
    /// Deadline of an AppendEntries that carries entries (`[raft]
    /// rpc_timeout_ms`), when longer than openraft's heartbeat-based one.
    pub append_timeout: Duration,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            security: self.security.clone(),
            client: None,
            append_timeout: self.append_timeout,
        }
    }
}

/// A lazily connected, reused connection to one peer.
pub struct PeerClient {
    target: u64,
    addr: String,
    security: NodeSecurity,
    client: Option<RaftRpcClient>,
    append_timeout: Duration,
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
        let mut context = ctx(&option);
        if !rpc.entries.is_empty() {
            // openraft gives every append the heartbeat interval; one that
            // carries entries (up to `MAX_APPEND_BYTES`, written and flushed
            // by the follower before it answers) gets `[raft]
            // rpc_timeout_ms` if that is longer, or a follower far behind
            // on a slow disk would time out on every append and never
            // catch up.
            context.deadline = std::time::Instant::now() + option.soft_ttl().max(self.append_timeout);
        }
        match client.append_entries(context, rpc).await {
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
        use driftlock_proto::limits::SNAPSHOT_CHUNK_BYTES;
        let client = self.client(option.soft_ttl()).await?;
        let data = snapshot.snapshot.into_inner();
        let total_bytes = data.len() as u64;
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0usize;
        loop {
            let end = offset.saturating_add(SNAPSHOT_CHUNK_BYTES).min(data.len());
            let last = end == data.len();
            // A chunk may be slow to write, and the last one installs the
            // whole state: allow each the hard TTL, not the soft one.
            let mut context = tarpc::context::current();
            context.deadline = std::time::Instant::now() + option.hard_ttl().max(Duration::from_secs(60));
            let call = client.snapshot_chunk(
                context,
                vote,
                snapshot.meta.clone(),
                total_bytes,
                offset as u64,
                data[offset..end].to_vec(),
            );
            let answer = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                result = call => result,
            };
            match answer {
                Ok(Ok(Some(r))) if last => return Ok(r),
                Ok(Ok(None)) if !last => offset = end,
                Ok(Ok(r)) => {
                    return Err(StreamingError::Network(NetworkError::from_string(format!(
                        "node {} answered {} to the snapshot chunk ending at {end} of {total_bytes}",
                        self.target,
                        if r.is_some() { "installed" } else { "expecting more" }
                    ))))
                }
                Ok(Err(e)) => {
                    return Err(StreamingError::Network(NetworkError::from_string(format!(
                        "node {} answered: {e}",
                        self.target
                    ))))
                }
                Err(e) => {
                    self.client = None;
                    return Err(StreamingError::Unreachable(Unreachable::from_string(format!(
                        "node {} at {}: {e}",
                        self.target, self.addr
                    ))));
                }
            }
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

#[cfg(test)]
mod tests {
    use driftlock_proto::limits::SNAPSHOT_CHUNK_BYTES;

    use super::*;

    fn vote(term: u64) -> Vote {
        Vote::new(term, 1)
    }

    #[test]
    fn chunks_in_order_make_the_snapshot() {
        let a = SnapshotAssembler::default();
        let data: Vec<u8> = (0..10u8).collect();
        assert_eq!(a.add(&vote(2), "s", 10, 0, &data[..4]), Ok(ChunkOutcome::Partial));
        assert_eq!(a.add(&vote(2), "s", 10, 4, &data[4..8]), Ok(ChunkOutcome::Partial));
        assert_eq!(
            a.add(&vote(2), "s", 10, 8, &data[8..]),
            Ok(ChunkOutcome::Complete(data, 3))
        );
        // An empty snapshot is one empty chunk.
        assert_eq!(
            a.add(&vote(2), "e", 0, 0, &[]),
            Ok(ChunkOutcome::Complete(Vec::new(), 1))
        );
    }

    #[test]
    fn a_chunk_out_of_place_is_refused_and_the_snapshot_dropped() {
        let a = SnapshotAssembler::default();
        assert_eq!(a.add(&vote(2), "s", 10, 0, &[0; 4]), Ok(ChunkOutcome::Partial));
        // A gap, a repeat, another snapshot, another leader, another size.
        for (v, id, total, offset) in [
            (2, "s", 10, 5),
            (2, "s", 10, 0),
            (2, "t", 10, 4),
            (3, "s", 10, 4),
            (2, "s", 11, 4),
        ] {
            if offset == 0 {
                continue;
            }
            let err = a.add(&vote(v), id, total, offset, &[0; 2]).unwrap_err();
            assert!(err.contains("out of order") || err.contains("no snapshot"), "{err}");
            // The unfinished snapshot is gone: the right next chunk is
            // refused too, and the sender starts over.
            assert!(a.add(&vote(2), "s", 10, 4, &[0; 2]).is_err());
            assert_eq!(a.add(&vote(2), "s", 10, 0, &[0; 4]), Ok(ChunkOutcome::Partial));
        }
        // Restarting at 0 replaces the unfinished one.
        assert_eq!(
            a.add(&vote(2), "s", 3, 0, &[7; 3]),
            Ok(ChunkOutcome::Complete(vec![7; 3], 1))
        );
    }

    #[test]
    fn a_chunk_too_large_or_past_the_end_is_refused() {
        let a = SnapshotAssembler::default();
        let big = vec![0; SNAPSHOT_CHUNK_BYTES + 1];
        let err = a.add(&vote(2), "s", u64::MAX, 0, &big).unwrap_err();
        assert!(err.contains("limit"), "{err}");
        let err = a.add(&vote(2), "s", 3, 0, &[0; 4]).unwrap_err();
        assert!(err.contains("runs past"), "{err}");
        let err = a.add(&vote(2), "s", u64::MAX, u64::MAX, &[0; 4]).unwrap_err();
        assert!(err.contains("runs past"), "{err}");
        // A huge declared size is not allocated.
        assert_eq!(a.add(&vote(2), "s", u64::MAX, 0, &[0; 4]), Ok(ChunkOutcome::Partial));
    }
}
