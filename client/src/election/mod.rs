//! Elections as a session takes part in them: campaigning (wait in the
//! candidate queue, woken by the session's events and confirmed by a
//! linearizable read), proclaiming, resigning, and registering the state a
//! warm handover carries. The [`Leadership`] won and its loss signal are
//! [`leadership`]'s; watching an election's master without taking part is
//! [`watch`]'s.

mod leadership;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use driftlock_proto::{ElectionView, Rejection, Reply, SessionId, SessionOp};

use crate::client::unexpected;
use crate::error::{ClientError, Result};
use crate::session::{ResourceKey, SessionInner, SessionState, Undo};
use crate::sync::lock;
use driftlock_proto::{Consistency, Query, QueryResult};
pub(crate) use leadership::Mastership;
pub use leadership::{Leadership, LeadershipLoss};
pub use watch::{LeaderChange, LeaderWatch};

/// An election seen by one session. Cheap to clone; every handle of one
/// session on one election shares the session's mastership of it.
#[derive(Clone)]
pub struct Election {
    session: Arc<SessionInner>,
    name: String,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .field("session", &self.session.id)
            .field("epoch", &self.session.mastership_epoch(&self.name))
            .finish()
    }
}

/// This session's standing in an election, as a linearizable read shows it.
enum Standing {
    /// Master at this epoch.
    Master(u64),
    /// In the candidate queue.
    Candidate,
    /// Neither master nor candidate.
    Neither,
}

impl Election {
    pub(crate) fn new(session: Arc<SessionInner>, name: String) -> Self {
        Election { session, name }
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Joins the candidate queue with `value` and waits until this session
    /// is master. **Act as master only until the returned
    /// [`Leadership`]'s [`lost`](Leadership::lost) resolves** (or while its
    /// [`is_master`](Leadership::is_master) holds): the session may stay
    /// valid after the mastership ended, e.g. after a warm handover.
    ///
    /// # Errors
    /// [`ClientError::SessionExpired`] the moment the session expires while
    /// waiting (no zombie candidate: the candidacy is withdrawn in the
    /// background, as it is when the returned future is dropped);
    /// `Rejected(AlreadyCandidate)` if this session campaigns already;
    /// `Rejected(NotCandidate)` if the candidacy ended otherwise (e.g.
    /// resigned from another handle).
    ///
    /// ```no_run
    /// # async fn demo(client: driftlock_client::Client) -> Result<(), driftlock_client::ClientError> {
    /// use std::time::Duration;
    ///
    /// let session = client.open_session(Duration::from_secs(10)).await?;
    /// let election = session.election("primary-db");
    /// let leadership = election.campaign(b"10.0.0.7:5432".to_vec()).await?;
    /// election.proclaim(b"10.0.0.7:5433".to_vec()).await?;
    /// println!("primary at epoch {}", leadership.epoch());
    /// tokio::select! {
    ///     _ = async { /* serve as primary, fenced with leadership.epoch() */ } => {
    ///         election.resign().await?;
    ///     }
    ///     why = leadership.lost() => println!("no longer primary: {why}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn campaign(&self, value: Vec<u8>) -> Result<Leadership> {
        let inner = &self.session;
        inner.check_usable()?;
        let key = ResourceKey::Election(self.name.clone());
        let permit = inner.resource_lock(&key).lock_owned().await;
        let mut hint = inner.subscribe(key);
        let undo = Undo::new(
            inner.clone(),
            SessionOp::Resign {
                election: self.name.clone(),
            },
            permit,
        );
        let op = SessionOp::Campaign {
            election: self.name.clone(),
            value,
        };
        let reply = tokio::select! {
            r = inner.op(op, false) => r,
            () = inner.lost() => Err(ClientError::SessionExpired),
        };
        let epoch = match reply {
            Ok(Reply::Elected { epoch }) => epoch,
            Ok(Reply::Candidate { .. }) => {
                let poll = Duration::from_millis(inner.client.config().poll_interval_ms);
                let wait = async {
                    loop {
                        tokio::select! {
                            () = hint.changed() => {}
                            () = tokio::time::sleep(poll) => {}
                        }
                        match self.standing().await {
                            Ok(Standing::Master(epoch)) => return Some(epoch),
                            Ok(Standing::Neither) => return None,
                            Ok(Standing::Candidate) => {}
                            Err(e) => tracing::debug!(election = %self.name, error = %e, "election poll failed"),
                        }
                    }
                };
                let won = tokio::select! {
                    r = wait => r,
                    () = inner.lost() => return Err(ClientError::SessionExpired),
                };
                match won {
                    Some(epoch) => epoch,
                    None => {
                        undo.disarm();
                        return Err(if inner.state() == SessionState::Expired {
                            ClientError::SessionExpired
                        } else {
                            ClientError::Rejected(Rejection::NotCandidate)
                        });
                    }
                }
            }
            Ok(other) => return Err(ClientError::UnexpectedReply(format!("{other:?} to a campaign"))),
            Err(e @ (ClientError::Rejected(_) | ClientError::InvalidRequest(_))) => {
                undo.disarm();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        inner.check_usable()?;
        debug_assert!(epoch > 0, "a master's epoch is a revision, never 0");
        // Recorded while this campaign still holds the election's operation
        // lock: a handover's relinquish, which takes that lock, then finds
        // the mastership whose loss it must signal first.
        let mastership = inner.begin_mastership(&self.name, epoch);
        undo.disarm();
        // A handover's state belongs to the mastership right after the
        // master that sent it (an aborted handover's state is dropped when
        // the abort is seen).
        let handover_state = match lock(&inner.handover_received).remove(&self.name) {
            Some((from_epoch, state)) if from_epoch < epoch => Some(state),
            _ => None,
        };
        Ok(Leadership::new(
            self.name.clone(),
            inner.clone(),
            mastership,
            handover_state,
        ))
    }

    /// This session's standing, by linearizable read.
    async fn standing(&self) -> Result<Standing> {
        let Some(view) = self.view().await? else {
            return Ok(Standing::Neither);
        };
        let me = self.session.id;
        if view.master.as_ref().is_some_and(|(s, _)| *s == me) {
            return Ok(Standing::Master(view.epoch));
        }
        if view.candidates.contains(&me) {
            return Ok(Standing::Candidate);
        }
        Ok(Standing::Neither)
    }

    async fn view(&self) -> Result<Option<ElectionView>> {
        let reply = self
            .session
            .client
            .read(
                Query::Election {
                    name: self.name.clone(),
                },
                Consistency::Linearizable,
            )
            .await?;
        match reply.result {
            QueryResult::Election(v) => Ok(v),
            other => Err(unexpected("Election", &other)),
        }
    }

    /// The current master: its session, proclaimed value and epoch.
    pub async fn leader(&self) -> Result<Option<(SessionId, Vec<u8>, u64)>> {
        Ok(self
            .view()
            .await?
            .and_then(|v| v.master.map(|(s, value)| (s, value, v.epoch))))
    }

    /// As master, replaces the proclaimed value (`Rejected(NotMaster)`
    /// otherwise, which also ends this session's [`Leadership`] of the
    /// election if the library still believed in it).
    pub async fn proclaim(&self, value: Vec<u8>) -> Result<()> {
        let epoch = self.session.mastership_epoch(&self.name);
        let op = SessionOp::Proclaim {
            election: self.name.clone(),
            epoch: epoch.unwrap_or(0),
            value,
        };
        let result = self.session.op(op, false).await.map(|_| ());
        if let (Err(ClientError::Rejected(Rejection::NotMaster { epoch: now })), Some(mine)) = (&result, epoch) {
            self.session
                .end_mastership(&self.name, |e| e == mine, LeadershipLoss::Superseded { epoch: *now });
        }
        result
    }

    /// Leaves the election: as master, the [`Leadership`]'s loss signal
    /// fires first, then mastership passes to the next candidate at once;
    /// as a candidate, leaves the queue. After a warm handover the session
    /// has already left the election: `Rejected(NotCandidate)`.
    pub async fn resign(&self) -> Result<()> {
        let key = ResourceKey::Election(self.name.clone());
        let _permit = self.session.resource_lock(&key).lock_owned().await;
        self.session
            .end_mastership(&self.name, |_| true, LeadershipLoss::Resigned);
        let op = SessionOp::Resign {
            election: self.name.clone(),
        };
        self.session.op(op, true).await.map(|_| ())
    }

    /// Registers what this session hands over if the cluster moves its
    /// mastership to a healthier candidate (docs/design.md "Elections and
    /// warm handover"). `state` is called when a handover begins; its bytes
    /// (up to the cluster's `max_handover_bytes`, 4 MiB by default) are
    /// committed and reach the candidate, which acknowledges them. Then this
    /// session's [`Leadership`] ends ([`LeadershipLoss::HandedOver`]) and the
    /// library relinquishes the mastership; only that makes the candidate
    /// master, and it finds the state in [`Leadership::handover_state`].
    /// Without a registered closure an empty state is handed over.
    ///
    /// ```no_run
    /// # async fn demo(session: driftlock_client::Session) -> Result<(), driftlock_client::ClientError> {
    /// let election = session.election("scheduler");
    /// election.on_handover(|| b"cursor=1234".to_vec());
    /// let leadership = election.campaign(b"worker-7".to_vec()).await?;
    /// if let Some(state) = leadership.handover_state() {
    ///     println!("resuming from {}", String::from_utf8_lossy(state));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn on_handover(&self, state: impl Fn() -> Vec<u8> + Send + Sync + 'static) {
        lock(&self.session.handover_providers).insert(self.name.clone(), std::sync::Arc::new(state));
    }

    /// Leader changes of this election (see [`LeaderWatch`]).
    pub fn observe(&self) -> LeaderWatch {
        self.session.client.watch_election(&self.name)
    }
}
