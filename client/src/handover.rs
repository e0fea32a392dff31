//! The client's part in a warm handover (docs/design.md "Elections and warm handover").
//!
//! The leader decides that an election's master should hand over and
//! commits `HandoverBegin { from, to }`. Both sessions see it on their event
//! streams:
//!
//! - the master (`from`) asks the application for its state (the closure
//!   registered with [`Election::on_handover`](crate::Election::on_handover),
//!   empty if none) and commits it as crc32-checked `HandoverState` chunks;
//! - the candidate (`to`) follows the election's events, collects the
//!   chunks, checks the running crc32 and acknowledges with `HandoverAck`.
//!   Only then may the leader commit `LeaseTransfer`, so the candidate holds
//!   the state before it is master; the state is handed to the application
//!   with its [`Leadership`](crate::Leadership).
//!
//! Nothing here decides safety: the state machine checks chunk order, sizes
//! and checksums, and a handover that stalls is aborted by its deadline.

use std::sync::Arc;
use std::time::Duration;

use driftlock_proto::{Event, SessionOp};

use crate::session::SessionInner;
use crate::sync::lock;
use driftlock_proto::EventFilter;

/// How long a candidate follows a handover before giving up (the cluster
/// aborts it much sooner by its deadline).
const RECEIVE_LIMIT: Duration = Duration::from_secs(120);

/// A closure that produces the master's state for a handover.
pub(crate) type StateProvider = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// As master: commit the application's state for `election` in chunks.
pub(crate) async fn send_state(inner: Arc<SessionInner>, election: String, epoch: u64) {
    let provider = lock(&inner.handover_providers).get(&election).cloned();
    let state = match provider {
        Some(p) => p(),
        None => Vec::new(),
    };
    let chunks: Vec<&[u8]> = if state.is_empty() {
        vec![&[][..]]
    } else {
        state.chunks(driftlock_proto::limits::HANDOVER_CHUNK_BYTES).collect()
    };
    let count = chunks.len();
    tracing::info!(
        session = inner.id,
        %election,
        epoch,
        bytes = state.len(),
        chunks = count,
        "handing over: sending state"
    );
    for (i, data) in chunks.into_iter().enumerate() {
        let Ok(chunk_seq) = u32::try_from(i) else {
            tracing::warn!(%election, "handover state has too many chunks");
            return;
        };
        let op = SessionOp::HandoverState {
            election: election.clone(),
            epoch,
            chunk_seq,
            data: data.to_vec(),
            crc32: crc32fast::hash(data),
            last: i + 1 == count,
        };
        if let Err(e) = inner.op(op, false).await {
            // The leader's deadline aborts the handover; mastership stays.
            tracing::warn!(session = inner.id, %election, epoch, chunk_seq, error = %e, "handover chunk refused");
            return;
        }
    }
}

/// As candidate: collect the chunks of the handover that began at log
/// index `begun_at`, then acknowledge them.
pub(crate) async fn receive_state(inner: Arc<SessionInner>, election: String, epoch: u64, begun_at: u64) {
    let filter = EventFilter {
        election: Some(election.clone()),
        ..EventFilter::default()
    };
    let wait = Duration::from_millis(inner.client.config().observe_wait_ms);
    let give_up = tokio::time::Instant::now() + RECEIVE_LIMIT;
    let mut after = begun_at;
    let mut state = Vec::new();
    let mut chunks = 0u32;
    let mut hasher = crc32fast::Hasher::new();
    let mut failures = 0u32;
    while tokio::time::Instant::now() < give_up && inner.is_valid() {
        let batch = match inner.client.observe(after, filter.clone(), wait).await {
            Ok(b) => b,
            Err(e) => {
                failures += 1;
                tracing::debug!(%election, error = %e, "observing the handover failed");
                tokio::time::sleep(inner.client.inner.transport.backoff(failures)).await;
                continue;
            }
        };
        failures = 0;
        if batch.truncated {
            // Chunks may be lost: let the deadline abort this handover.
            tracing::warn!(%election, epoch, "handover events truncated; not acknowledging");
            return;
        }
        for (_, event) in batch.events {
            match event {
                Event::HandoverChunk {
                    election: ref e,
                    epoch: ep,
                    chunk_seq,
                    data,
                    last,
                } if *e == election && ep == epoch => {
                    if chunk_seq != chunks {
                        tracing::warn!(%election, epoch, chunk_seq, expected = chunks, "handover chunk out of order");
                        return;
                    }
                    hasher.update(&data);
                    state.extend_from_slice(&data);
                    chunks += 1;
                    if last {
                        let total_crc32 = hasher.clone().finalize();
                        // Stored before the ack leaves: once acknowledged, the
                        // transfer can make this session master at any time,
                        // and `campaign` must find the state then.
                        lock(&inner.handover_received).insert(election.clone(), (epoch, state.clone()));
                        let op = SessionOp::HandoverAck {
                            election: election.clone(),
                            epoch,
                            chunks,
                            total_crc32,
                        };
                        match inner.op(op, false).await {
                            Ok(_) => {
                                tracing::info!(session = inner.id, %election, epoch, chunks, "handover state acknowledged")
                            }
                            Err(e) => {
                                tracing::warn!(session = inner.id, %election, epoch, error = %e, "handover ack refused");
                                return;
                            }
                        }
                        // Keep following until the transfer or an abort.
                    }
                }
                Event::HandoverAborted { epoch: ep, .. } if ep == epoch => {
                    let mut received = lock(&inner.handover_received);
                    if received.get(&election).is_some_and(|(e, _)| *e == epoch) {
                        received.remove(&election);
                    }
                    return;
                }
                Event::LeaseTransferred { .. } => return,
                _ => {}
            }
        }
        after = after.max(batch.next_after_index);
    }
}
