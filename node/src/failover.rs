//! Telling a dead leader from a slow one (docs/design.md "Raft",
//! fast failover).
//!
//! A follower keeps its leader's lease for an election timeout after the
//! last heartbeat and refuses to vote meanwhile, so that a live leader is
//! not unseated by a blip. After a crash that lease is pure waiting: the
//! first election can only succeed once it has run out on a majority, and
//! a SIGKILLed leader's first successful operation came 1.1 s later.
//!
//! A process that dies closes its sockets, so its peers see the end of the
//! connections it held (EOF or RST) at once, and its port then refuses new
//! connections. A paused, overloaded or cut-off leader does neither: its
//! connections stay open and its port does not refuse. So when a
//! connection on which this node's current leader sent AppendEntries ends,
//! the follower probes the leader's Raft port ([`probe`]):
//!
//! - gone: the leader is dead. The follower ends its lease on it, and
//!   campaigns with pre-vote: the successor — the lowest-id voter other
//!   than the dead leader, the same choice on every follower — at once, the
//!   voter of rank `r` among the others after `r` heartbeat intervals, each
//!   again after a round of the others' turns, [`CAMPAIGNS`] times at most,
//!   until a candidate has asked for its vote. A voter grants the pre-vote
//!   only once it has ended its own lease too: only when a majority saw the
//!   leader die does the term move. A follower cut off by a firewall that
//!   answers with resets (which looks the same from its side) gets no
//!   pre-vote through and leaves the term alone, so it does not unseat the
//!   leader when the network heals;
//! - alive or undecided: the leader lives (it reconnected, or stepped down
//!   and closed its streams) or cannot be told from a slow one. Nothing
//!   happens, and the ordinary election timeout applies.
//!
//! Correctness does not depend on it: Raft's election safety holds for any
//! election, and no read relies on the followers' lease (linearizable
//! reads confirm leadership with a quorum, `server.rs`). What it can cost
//! is a needless election, if a majority of followers find a live
//! leader's port refusing at the same time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftlock_raft_store::Vote;
use openraft::raft::TransferLeaderRequest;
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::io::AsyncReadExt;

use crate::metrics::Metrics;
use crate::network::Raft;

/// How long the probe may wait for the connection to open. On a live host
/// a refusal comes within a round trip; a host that does not answer at all
/// (down, or cut off) is left to the election timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// How long an accepted probe connection is watched for a reset. A dying
/// process closes its sockets one by one: its listener can still complete
/// a handshake in the kernel just after the connections it replicated on
/// were closed, and resets that connection an instant later. A live node
/// sends nothing and waits for the prober to speak (its TLS handshake).
pub const SETTLE: Duration = Duration::from_millis(30);

/// How many times a follower that found its leader dead campaigns (with
/// pre-vote) before it leaves the matter to its election timer.
pub const CAMPAIGNS: u32 = 3;

/// What the probe of a leader's Raft port found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Refused, or accepted and then reset: nothing serves there.
    Gone,
    /// Accepted and kept open: the process lives.
    Alive,
    /// No answer within [`CONNECT_TIMEOUT`], or another error: undecided.
    Unknown,
}

/// Dials `addr` and says whether anything serves there (see [`SETTLE`]).
/// Sends nothing: the node at the other end sees a connection closed
/// before its handshake.
pub async fn probe(addr: &str) -> Probe {
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Gone,
        Ok(Err(_)) | Err(_) => return Probe::Unknown,
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(SETTLE, stream.read(&mut byte)).await {
        // Nothing within SETTLE, or something sent: a server is there.
        Err(_) | Ok(Ok(1..)) => Probe::Alive,
        // Reset at once: the listener closed with this connection still
        // in its queue.
        Ok(Err(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Probe::Gone
        }
        // Closed in order: a live node's accept loop turned it away (its
        // connection cap), which a dead one cannot do.
        Ok(Ok(0)) | Ok(Err(_)) => Probe::Unknown,
    }
}

/// This node's rank among the voters other than `dead`, lowest id first:
/// 0 for the successor, which campaigns at once; `None` if this node is no
/// such voter. Every follower ranks the same membership the same way.
pub fn rank(voters: impl IntoIterator<Item = u64>, dead: u64, id: u64) -> Option<usize> {
    let mut others: Vec<u64> = voters.into_iter().filter(|v| *v != dead).collect();
    others.sort_unstable();
    others.iter().position(|v| *v == id)
}

/// Watches the ends of the connections a leader replicated on; one per
/// node, shared by its Raft connections.
pub struct LeaderWatch {
    raft: Raft,
    metrics: Arc<Metrics>,
    /// The leader vote this node last found dead: a leader's several
    /// connections end together, and one detection is enough.
    acted_on: Mutex<Option<Vote>>,
}

impl LeaderWatch {
    /// A watch over `raft`'s leader, counting in `metrics`.
    pub fn new(raft: Raft, metrics: Arc<Metrics>) -> Self {
        LeaderWatch {
            raft,
            metrics,
            acted_on: Mutex::new(None),
        }
    }

    /// Called when a Raft connection on which node `leader` sent
    /// AppendEntries has ended. Acts as the module documentation says if
    /// `leader` is still this node's leader and its port is gone.
    pub async fn connection_closed(&self, leader: u64) {
        let (vote, addr, rank, voters) = {
            let m = self.raft.metrics().borrow_watched().clone();
            if m.state.is_leader() || m.current_leader != Some(leader) || leader == m.id {
                return;
            }
            let membership = m.membership_config.membership();
            let Some(node) = membership.get_node(&leader) else {
                return;
            };
            // A learner does not vote: the leader's death is not its call.
            let Some(rank) = rank(membership.voter_ids(), leader, m.id) else {
                return;
            };
            (m.vote, node.raft_addr.clone(), rank, membership.voter_ids().count())
        };
        if self.acted_on.lock().map_or(true, |a| a.as_ref() == Some(&vote)) {
            return;
        }
        let found = probe(&addr).await;
        tracing::info!(leader, %addr, ?found, "the leader's connection closed; probed its port");
        if found != Probe::Gone {
            return;
        }
        // Still the same leader, in the same term, after the probe; and
        // found dead once.
        if self.raft.metrics().borrow_watched().vote != vote {
            return;
        }
        match self.acted_on.lock() {
            Ok(mut a) if a.as_ref() != Some(&vote) => *a = Some(vote),
            _ => return,
        }
        self.metrics.dead_leader_detections.inc();
        tracing::warn!(
            leader,
            rank,
            "the leader's process is gone (connection closed, port gone): ending its lease"
        );
        // openraft's transfer path entered locally, naming the dead leader
        // itself as the target: this node ends its lease on the leader of
        // `vote` and nothing else happens (it is not the target).
        let req = TransferLeaderRequest::new(vote, leader, None);
        if let Err(e) = self.raft.handle_transfer_leader(req).await {
            tracing::warn!(error = %e, "could not end the dead leader's lease");
            return;
        }
        let grace = Duration::from_millis(self.raft.config().heartbeat_interval);
        let others = u32::try_from(voters).unwrap_or(u32::MAX).saturating_sub(1).max(1);
        let mut wait = grace.saturating_mul(u32::try_from(rank).unwrap_or(u32::MAX));
        for _ in 0..CAMPAIGNS {
            tokio::time::sleep(wait).await;
            if self.raft.metrics().borrow_watched().vote != vote {
                // A candidate asked for this node's vote, or this node's
                // own campaign took.
                return;
            }
            tracing::info!(leader, rank, "campaigning after the dead leader (pre-vote first)");
            if self.raft.trigger().elect(true).await.is_err() {
                return;
            }
            wait = grace.saturating_mul(others);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_rank_lowest_id_first_without_the_dead_one() {
        assert_eq!(rank([1, 2, 3], 1, 2), Some(0));
        assert_eq!(rank([1, 2, 3], 1, 3), Some(1));
        assert_eq!(rank([3, 1, 2], 2, 1), Some(0));
        assert_eq!(rank([5, 4, 9, 7, 1], 4, 9), Some(3));
        assert_eq!(rank([1, 2, 3], 1, 4), None, "a learner has no rank");
        assert_eq!(rank([7], 7, 7), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_gone_and_an_open_one_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        // Accepted by the kernel, never answered: a live node waiting for
        // the prober's handshake.
        assert_eq!(probe(&open).await, Probe::Alive);
        drop(listener);
        assert_eq!(probe(&open).await, Probe::Gone);
        assert_eq!(probe("not an address").await, Probe::Unknown);
    }

    /// Accepts one connection on a fresh port and ends it: with a reset
    /// if `reset`, else in order. Returns the port's address.
    async fn ending_port(reset: bool) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let closer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            if reset {
                stream.set_zero_linger().unwrap();
            }
            drop(stream);
        });
        (addr, closer)
    }

    #[tokio::test]
    async fn a_connection_reset_at_once_is_gone_and_one_closed_in_order_undecided() {
        let (addr, closer) = ending_port(true).await;
        assert_eq!(probe(&addr).await, Probe::Gone);
        closer.await.unwrap();
        // A live node's accept loop closes connections over its cap.
        let (addr, closer) = ending_port(false).await;
        assert_eq!(probe(&addr).await, Probe::Unknown);
        closer.await.unwrap();
    }
}
