//! The client's part in a warm handover (docs/design.md "Elections and warm handover").
//!
//! The leader decides that an election's master should hand over and
//! commits `HandoverBegin { from, to }`. Both sessions see it on their event
//! streams:
//!
//! - the master (`from`, [`hand_over`]) asks the application for its state
//!   (the closure registered with
//!   [`Election::on_handover`](crate::Election::on_handover), empty if none)
//!   and commits it as crc32-checked `HandoverState` chunks, then follows the
//!   election's events;
//! - the candidate (`to`, [`receive_state`]) collects the chunks, checks the
//!   running crc32, keeps the state and acknowledges with `HandoverAck`;
//! - the master, seeing `HandoverAcked`, **ends its mastership first** (its
//!   [`Leadership`](crate::Leadership)'s loss signal fires), waits the local
//!   margin ε, and only then commits `Relinquish`: in that entry the
//!   candidate becomes master and the master leaves the election. So the
//!   candidate is told it is master only after the old master stopped
//!   believing it is; the state reaches the application with the new
//!   master's `Leadership`.
//!
//! A master that never relinquishes (cut off, dead) keeps its mastership:
//! the handover's deadline aborts it, and the election goes on as usual
//! (its session's end, then the succession delay). A relinquish that comes
//! too late is refused, and the library resigns instead, which its code
//! was already told. Nothing here decides safety: the state machine checks
//! chunk order, sizes, checksums and who may relinquish.

use std::sync::Arc;
use std::time::Duration;

use driftlock_proto::{Consistency, Event, Query, QueryResult, Rejection, SessionId, SessionOp};

use crate::election::LeadershipLoss;
use crate::error::ClientError;
use crate::session::{ResourceKey, SessionInner, SessionState};
use crate::sync::lock;
use driftlock_proto::EventFilter;

/// How long either side follows a handover before giving up (the cluster
/// aborts it much sooner by its deadline).
const RECEIVE_LIMIT: Duration = Duration::from_secs(120);

/// A closure that produces the master's state for a handover.
pub(crate) type StateProvider = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// As master at `epoch`: hand `election` over to `to`, for the handover
/// begun at revision `begun_at`. Commits the state, follows the handover,
/// and relinquishes once the candidate acknowledged.
pub(crate) async fn hand_over(inner: Arc<SessionInner>, election: String, epoch: u64, to: SessionId, begun_at: u64) {
    if !send_state(&inner, &election, epoch).await {
        return;
    }
    match follow(&inner, &election, epoch, begun_at).await {
        Followed::Acked => relinquish(&inner, &election, epoch, to).await,
        Followed::Aborted => {
            tracing::info!(session = inner.id, %election, epoch, "handover aborted: still master");
        }
        Followed::Superseded(now) => {
            inner.end_mastership(&election, |e| e == epoch, LeadershipLoss::Superseded { epoch: now });
        }
        Followed::GaveUp => {}
    }
}

/// Commits the application's state for `election` in chunks; whether every
/// chunk was committed.
async fn send_state(inner: &Arc<SessionInner>, election: &str, epoch: u64) -> bool {
    let provider = lock(&inner.handover_providers).get(election).cloned();
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
            return false;
        };
        let op = SessionOp::HandoverState {
            election: election.to_owned(),
            epoch,
            chunk_seq,
            data: data.to_vec(),
            crc32: crc32fast::hash(data),
            last: i + 1 == count,
        };
        if let Err(e) = inner.op(op, false).await {
            // The handover's deadline aborts it; mastership stays.
            tracing::warn!(session = inner.id, %election, epoch, chunk_seq, error = %e, "handover chunk refused");
            return false;
        }
    }
    true
}

/// How following a handover ended, for its master.
enum Followed {
    /// The candidate acknowledged the state.
    Acked,
    /// The handover was aborted; the mastership stays.
    Aborted,
    /// The cluster shows another master or a newer epoch than the
    /// handover's.
    Superseded(u64),
    /// The session ended, or the follow limit passed.
    GaveUp,
}

/// Follows the election's events after `begun_at` until the handover at
/// `epoch` is acknowledged or aborted. A gap in the events is filled by a
/// linearizable read of the election.
async fn follow(inner: &Arc<SessionInner>, election: &str, epoch: u64, begun_at: u64) -> Followed {
    let filter = EventFilter {
        election: Some(election.to_owned()),
        ..EventFilter::default()
    };
    let wait = Duration::from_millis(inner.client.config().observe_wait_ms);
    let give_up = tokio::time::Instant::now() + RECEIVE_LIMIT;
    let mut after = begun_at;
    let mut failures = 0u32;
    while tokio::time::Instant::now() < give_up && inner.state() != SessionState::Expired {
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
            match standing(inner, election, epoch).await {
                Some(outcome) => return outcome,
                None => {
                    after = after.max(batch.next_after_index);
                    continue;
                }
            }
        }
        for (_, event) in batch.events {
            match event {
                Event::HandoverAcked { election: e, epoch: ep } if e == election && ep == epoch => {
                    return Followed::Acked
                }
                Event::HandoverAborted {
                    election: e, epoch: ep, ..
                } if e == election && ep == epoch => return Followed::Aborted,
                Event::MasterChanged {
                    election: e,
                    master,
                    epoch: now,
                    ..
                } if e == election && (now > epoch || master != Some(inner.id)) => return Followed::Superseded(now),
                _ => {}
            }
        }
        after = after.max(batch.next_after_index);
    }
    Followed::GaveUp
}

/// The handover's outcome as a linearizable read shows it, or `None` while
/// it is still under way (or the read failed).
async fn standing(inner: &Arc<SessionInner>, election: &str, epoch: u64) -> Option<Followed> {
    let query = Query::Election {
        name: election.to_owned(),
    };
    let reply = inner.client.read(query, Consistency::Linearizable).await.ok()?;
    let QueryResult::Election(view) = reply.result else {
        return None;
    };
    let Some(v) = view else {
        return Some(Followed::Superseded(0));
    };
    if v.epoch != epoch || v.master.as_ref().map(|m| m.0) != Some(inner.id) {
        return Some(Followed::Superseded(v.epoch));
    }
    match v.handover {
        Some((_, _, true)) => Some(Followed::Acked),
        Some(_) => None,
        None => Some(Followed::Aborted),
    }
}

/// Ends this session's mastership of `election` at `epoch` (its loss
/// signal fires), waits the local margin ε, then relinquishes it to `to`;
/// if the cluster refuses (the handover was aborted meanwhile), resigns
/// instead, since the application already stopped acting as master. Holds
/// the election's operation lock throughout, so the application's next
/// campaign on it comes after.
async fn relinquish(inner: &Arc<SessionInner>, election: &str, epoch: u64, to: SessionId) {
    let key = ResourceKey::Election(election.to_owned());
    let _permit = inner.resource_lock(&key).lock_owned().await;
    inner.end_mastership(election, |e| e == epoch, LeadershipLoss::HandedOver { to });
    // ε of rule 5: room for an action that checked `is_master` just before.
    tokio::time::sleep(Duration::from_micros(inner.client.config().local_margin_us)).await;
    let relinquish = SessionOp::Relinquish {
        election: election.to_owned(),
        epoch,
    };
    match persist(inner, relinquish).await {
        Ok(()) => {
            tracing::info!(session = inner.id, %election, epoch, to, "mastership relinquished");
            return;
        }
        Err(Some(r)) => {
            tracing::info!(session = inner.id, %election, epoch, rejection = %r, "relinquish refused: resigning instead");
        }
        Err(None) => return,
    }
    let resign = SessionOp::Resign {
        election: election.to_owned(),
    };
    match persist(inner, resign).await {
        Ok(()) | Err(Some(Rejection::NotCandidate)) => {}
        Err(Some(r)) => tracing::warn!(session = inner.id, %election, rejection = %r, "resignation refused"),
        Err(None) => {}
    }
}

/// Sends a cleanup operation until the cluster answers it or the session
/// ends: `Err(Some(_))` for a refusal, `Err(None)` when the session ended.
async fn persist(inner: &Arc<SessionInner>, op: SessionOp) -> Result<(), Option<Rejection>> {
    let mut failures = 0u32;
    loop {
        match inner.op(op.clone(), true).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Rejected(r)) => return Err(Some(r)),
            Err(ClientError::SessionExpired) => return Err(None),
            Err(e) => {
                if inner.state() == SessionState::Expired {
                    return Err(None);
                }
                failures += 1;
                tracing::warn!(session = inner.id, ?op, error = %e, "handover step failed; retrying");
                tokio::time::sleep(inner.client.inner.transport.backoff(failures)).await;
            }
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
                        // old master's relinquish can make this session master
                        // at any time, and `campaign` must find the state then.
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
                        // Keep following until the relinquish or an abort.
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
