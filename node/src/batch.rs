//! Batched proposals (docs/design.md "Batched proposals"): the leader packs
//! the commands that arrive while earlier entries are being appended into
//! one Raft entry, a [`Command::Batch`], so that openraft's, the log's and
//! the network's per-entry costs are paid once per batch instead of once
//! per command.
//!
//! Every proposal goes through one queue, drained by one task. That task
//! keeps at most [`MAX_BATCHES_IN_FLIGHT`] entries between proposal and
//! apply; while they are in flight, new commands wait in the queue, and the
//! next entry takes all that waited (up to [`MAX_BATCH_COMMANDS`] commands
//! and [`MAX_BATCH_BYTES`] bytes). At low load a command finds a free slot
//! and is proposed at once, alone, as the plain command it is: batching
//! adds no latency, only fewer entries under load.
//!
//! Each command keeps its own outcome: the state machine answers a batch
//! with one response per command, in order. A batch that fails to commit
//! fails every command in it the way a single entry would: `NotLeader` (or
//! `Unavailable` for a leader whose lease lapsed) if openraft refused it
//! before appending, `Indeterminate` if it was
//! appended and then lost track of.

use std::sync::{Arc, Weak};

use driftlock_proto::{limits, ApiError, Reply};
use driftlock_raft_store::StampedRequest;
use driftlock_state_machine::{Command, Response, StampedCommand};
use openraft::error::{ClientWriteError, ForwardReason, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::server::NodeContext;

/// Entries proposed and not yet applied at once: one committing while the
/// next forms keeps the pipeline busy without splitting a burst into many
/// small entries.
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;

/// Most commands one entry carries.
pub const MAX_BATCH_COMMANDS: usize = 512;

/// Most encoded command bytes one batch entry carries: half an entry's
/// limit, so the batch's own framing always fits
/// ([`limits::MAX_ENTRY_BYTES`]). A command larger than this still goes
/// alone in an entry of its own.
pub const MAX_BATCH_BYTES: u64 = limits::MAX_ENTRY_BYTES as u64 / 2;

/// Longest a new leader waits for a quorum's first acknowledgement of its
/// term before proposing: a few rounds of appends on a loaded host.
const FIRST_ACK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether a proposal can be accepted as far as the quorum lease goes: not
/// a leader (the caller refuses with `NotLeader`), a leader acknowledged by
/// a quorum in its term, or the only voter.
fn first_ack_seen(m: &openraft::RaftMetrics<driftlock_raft_store::TypeConfig>) -> bool {
    !m.state.is_leader() || m.last_quorum_acked.is_some() || m.membership_config.membership().voter_ids().count() <= 1
}

/// A command waiting to be proposed, with where its answer goes.
pub struct Pending {
    command: Command,
    /// Encoded size of `command`, bytes.
    bytes: u64,
    reply: oneshot::Sender<Result<Reply, ApiError>>,
}

/// The sending side of the proposal queue, held by the [`NodeContext`].
pub struct ProposalQueue {
    tx: mpsc::UnboundedSender<Pending>,
}

/// The receiving side, handed to [`run`].
pub struct ProposalReceiver {
    rx: mpsc::UnboundedReceiver<Pending>,
}

/// A new, empty proposal queue.
pub fn queue() -> (ProposalQueue, ProposalReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ProposalQueue { tx }, ProposalReceiver { rx })
}

impl ProposalQueue {
    /// Queues `command` (encoded size `bytes`) and waits for its own
    /// outcome.
    pub async fn propose(&self, command: Command, bytes: u64) -> Result<Reply, ApiError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending { command, bytes, reply };
        if self.tx.send(pending).is_err() {
            return Err(ApiError::Unavailable("node is shutting down".into()));
        }
        match answer.await {
            Ok(outcome) => outcome,
            // The batch task ended with the command queued or in flight:
            // whether it was appended is unknown.
            Err(_) => Err(ApiError::Indeterminate(
                "the node stopped while the request was in flight".into(),
            )),
        }
    }
}

/// Drains the queue until every [`ProposalQueue`] is gone or the node's
/// context is dropped: forms batches and proposes them, at most
/// [`MAX_BATCHES_IN_FLIGHT`] at a time.
pub async fn run(node: Weak<NodeContext>, receiver: ProposalReceiver) {
    let ProposalReceiver { mut rx } = receiver;
    let slots = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        // Wait for a free slot before taking commands: what arrives in the
        // meantime joins the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + next.bytes > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        let Some(node) = node.upgrade() else { return };
        tokio::spawn(async move {
            node.metrics.batch_commands.observe(batch.len() as f64);
            propose_batch(&node, batch).await;
            drop(slot);
        });
    }
}

/// Proposes one entry for `batch` (the command itself when it is alone)
/// and answers each command.
async fn propose_batch(node: &NodeContext, batch: Vec<Pending>) {
    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    debug_assert!(count > 0 && count <= MAX_BATCH_COMMANDS);
    let command = match <[Command; 1]>::try_from(commands) {
        Ok([single]) => single,
        Err(commands) => Command::Batch(commands),
    };
    let outcomes = propose_entry(node, command, count).await;
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        // A caller that gave up (its connection closed) no longer listens.
        let _ = reply.send(outcome);
    }
}

/// Proposes one entry holding `count` commands and returns one outcome per
/// command.
async fn propose_entry(node: &NodeContext, command: Command, count: usize) -> Vec<Result<Reply, ApiError>> {
    if !node.raft.is_leader() {
        let err = node.not_leader();
        return vec![Err(err); count];
    }
    // Leader of a term no quorum has acknowledged yet: openraft would
    // refuse the write (its lease is not valid). The acknowledgement of its
    // first append comes a round trip later, so wait for it here rather
    // than refuse the burst of requests that follows every election and
    // transfer. Bounded: a leader that hears from nobody proposes anyway
    // and is refused (`Unavailable`).
    if !node
        .settle(
            FIRST_ACK_WAIT,
            "the first quorum acknowledgement of this term",
            first_ack_seen,
        )
        .await
    {
        tracing::debug!("no quorum acknowledgement yet; proposing anyway");
    }
    if !node.raft.is_leader() {
        let err = node.not_leader();
        return vec![Err(err); count];
    }
    let ts_us = node.stamp();
    let request = StampedRequest(StampedCommand { ts_us, command });
    match node.raft.client_write(request).await {
        Ok(resp) => {
            let responses = resp.data.responses;
            if responses.len() != count {
                let err = ApiError::Indeterminate(format!(
                    "entry {} answered {} of its {count} commands",
                    resp.log_id.index,
                    responses.len()
                ));
                return vec![Err(err); count];
            }
            responses.into_iter().map(|r| outcome(node, r)).collect()
        }
        // openraft's contract: `ForwardToLeader` means the proposal was
        // refused before its entry was appended (not the leader any more,
        // leadership being transferred, or the leader lease lapsed). Nothing
        // was written, so the answer is definite: `NotLeader` pointing at
        // the leader or the transfer target when known (the client goes
        // there without waiting), `Unavailable` for a lapsed lease.
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            if forward.reason == ForwardReason::LeadershipTransfer {
                // Point the client at the new leader once there is one,
                // not at a target that may not know yet that it is one.
                node.await_successor().await;
                if let Some(leader) = node.leader_hint().filter(|(id, _)| *id != node.id) {
                    return vec![
                        Err(ApiError::NotLeader {
                            leader_hint: Some(leader)
                        });
                        count
                    ];
                }
            }
            vec![Err(crate::server::forward_error(forward, || node.leader_hint())); count]
        }
        // The entry was appended and then discarded under a new leader: it
        // may still commit there.
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
            let err = ApiError::Indeterminate(format!(
                "leadership changed while the request was in flight; retry at {:?}",
                node.leader_hint()
            ));
            vec![Err(err); count]
        }
        Err(e) => vec![Err(ApiError::Indeterminate(e.to_string())); count],
    }
}

/// One command's outcome from the state machine's response.
fn outcome(node: &NodeContext, response: Response) -> Result<Reply, ApiError> {
    match response {
        Ok(reply) => {
            if let Reply::SessionOpened { lease, .. } | Reply::KeptAlive { lease, .. } = &reply {
                node.metrics.observe_lease(lease);
            }
            Ok(reply)
        }
        Err(rejection) => Err(ApiError::Rejected(rejection)),
    }
}
