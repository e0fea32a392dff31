//! Mastership as this library believes it: the [`Leadership`] a campaign
//! returns, and its loss signal.
//!
//! A session keeps one [`Mastership`] per election it leads, in
//! `SessionInner::masterships`. It ends — once, for good — the moment the
//! library stops believing it leads: the application resigned; the
//! session ended or its local validity (docs/design.md "Time", rule 5) ran
//! out; the cluster showed another master or a newer epoch; or a warm
//! handover was acknowledged by the candidate, in which case the library
//! ends the mastership *before* it relinquishes it, so that the entry that
//! makes the candidate master is proof that the old master stopped
//! (docs/design.md "Elections and warm handover"). Application code acts
//! as master only until then: it selects on [`Leadership::lost`] or checks
//! [`Leadership::is_master`] before each action, and fences external
//! writes with the epoch.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use driftlock_proto::SessionId;
use driftlock_sensors::clock::RawInstant;
use tokio::sync::watch;

use crate::clock::{sleep_until_raw, to_instant};
use crate::session::{SessionInner, SessionState};
use crate::sync::lock;

/// Why a [`Leadership`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeadershipLoss {
    /// Handed over to the candidate `to` by a warm handover: the candidate
    /// acknowledged this master's state, and the library ended the
    /// mastership before relinquishing it (the candidate becomes master
    /// only in the relinquishing entry). The session left the election;
    /// to lead again it campaigns again.
    HandedOver {
        /// The session that takes over.
        to: SessionId,
    },
    /// The application resigned ([`Election::resign`](crate::Election::resign)).
    Resigned,
    /// The session ended: closed, dropped, or ended by the cluster
    /// (expiry or revocation).
    SessionEnded,
    /// The session's local validity ran out (docs/design.md "Time",
    /// rule 5): the cluster may end the mastership from then on.
    ValidityEnded,
    /// The cluster reported another master or an epoch newer than this
    /// mastership's.
    Superseded {
        /// The epoch the cluster reported.
        epoch: u64,
    },
}

impl std::fmt::Display for LeadershipLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeadershipLoss::HandedOver { to } => write!(f, "handed over to session {to}"),
            LeadershipLoss::Resigned => write!(f, "resigned"),
            LeadershipLoss::SessionEnded => write!(f, "the session ended"),
            LeadershipLoss::ValidityEnded => write!(f, "the session's local validity ran out"),
            LeadershipLoss::Superseded { epoch } => write!(f, "the cluster reports a newer master (epoch {epoch})"),
        }
    }
}

/// One mastership as the session believes it, shared by its
/// [`Leadership`] handles and the session's registry.
pub(crate) struct Mastership {
    /// The mastership epoch (the revision of the command that made it).
    pub(crate) epoch: u64,
    /// `None` while the library believes it leads; then why and when that
    /// ended. Set once: the first end wins.
    ended: watch::Sender<Option<(LeadershipLoss, Instant)>>,
}

impl Mastership {
    fn new(epoch: u64) -> Arc<Mastership> {
        Arc::new(Mastership {
            epoch,
            ended: watch::channel(None).0,
        })
    }

    /// Why and when the mastership ended, if it did.
    fn ended(&self) -> Option<(LeadershipLoss, Instant)> {
        self.ended.borrow().clone()
    }

    /// Ends the mastership for `reason` at `at`, unless it already ended;
    /// returns whether this call ended it.
    fn end(&self, reason: LeadershipLoss, at: Instant) -> bool {
        self.ended.send_if_modified(|e| {
            if e.is_some() {
                return false;
            }
            *e = Some((reason, at));
            true
        })
    }
}

impl SessionInner {
    /// Records that this session became master of `election` at `epoch`
    /// (a campaign returned); an earlier mastership of the same election
    /// still on record is superseded.
    pub(crate) fn begin_mastership(&self, election: &str, epoch: u64) -> Arc<Mastership> {
        let m = Mastership::new(epoch);
        let old = lock(&self.masterships).insert(election.to_owned(), m.clone());
        if let Some(old) = old {
            old.end(LeadershipLoss::Superseded { epoch }, Instant::now());
        }
        m
    }

    /// The epoch of this session's mastership of `election`, while the
    /// library believes it leads.
    pub(crate) fn mastership_epoch(&self, election: &str) -> Option<u64> {
        lock(&self.masterships)
            .get(election)
            .filter(|m| m.ended().is_none())
            .map(|m| m.epoch)
    }

    /// Ends this session's mastership of `election`, if its epoch passes
    /// `which`, for `reason`; its loss signal fires now. Returns whether a
    /// mastership ended.
    pub(crate) fn end_mastership(&self, election: &str, which: impl Fn(u64) -> bool, reason: LeadershipLoss) -> bool {
        let m = {
            let mut masterships = lock(&self.masterships);
            match masterships.get(election) {
                Some(m) if which(m.epoch) => masterships.remove(election),
                _ => None,
            }
        };
        let Some(m) = m else { return false };
        let ended = m.end(reason.clone(), Instant::now());
        if ended {
            tracing::info!(session = self.id, %election, epoch = m.epoch, %reason, "mastership ended");
        }
        ended
    }

    /// Ends every mastership of the session, which is expiring: at its
    /// local validity end if that is what passed, else now.
    pub(crate) fn end_all_masterships(&self) {
        let all: Vec<(String, Arc<Mastership>)> = lock(&self.masterships).drain().collect();
        if all.is_empty() {
            return;
        }
        let until = self.valid_until_raw();
        let (reason, at) = if RawInstant::now() >= until {
            (LeadershipLoss::ValidityEnded, to_instant(until))
        } else {
            (LeadershipLoss::SessionEnded, Instant::now())
        };
        for (election, m) in all {
            if m.end(reason.clone(), at) {
                tracing::info!(session = self.id, %election, epoch = m.epoch, %reason, "mastership ended");
            }
        }
    }
}

/// Mastership won by [`Election::campaign`](crate::Election::campaign).
///
/// **Act as master only until [`lost`](Self::lost) resolves** (or, checking
/// before each action, while [`is_master`](Self::is_master) holds). The
/// loss fires the moment the library stops believing this session leads:
/// on [`Election::resign`](crate::Election::resign), when the session ends
/// or its local validity runs out, when the cluster reports another master,
/// and in a warm handover when the candidate has acknowledged this
/// master's state — the library fires it *before* it relinquishes the
/// mastership, and the candidate becomes master only in that relinquishing
/// entry, so two masters never both have reason to believe they lead
/// (docs/design.md "Elections and warm handover"). The library waits the
/// session's local margin (`ClientConfig::local_margin_us`) between the
/// loss and the relinquish, for an action that checked `is_master` just
/// before. A lost mastership never comes back: to lead again, campaign
/// again.
///
/// The epoch is strictly greater than every earlier master's, so it can
/// fence work like a lock's token.
///
/// ```no_run
/// # async fn demo(session: driftlock_client::Session) -> Result<(), driftlock_client::ClientError> {
/// let election = session.election("scheduler");
/// let leadership = election.campaign(b"worker-7".to_vec()).await?;
/// tokio::select! {
///     _ = async { /* work as master, fenced with leadership.epoch() */ } => {}
///     why = leadership.lost() => eprintln!("no longer master: {why}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Leadership {
    election: String,
    session: Arc<SessionInner>,
    mastership: Arc<Mastership>,
    handover_state: Option<Vec<u8>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("election", &self.election)
            .field("session", &self.session.id)
            .field("epoch", &self.mastership.epoch)
            .field("loss", &self.mastership.ended())
            .finish()
    }
}

impl Leadership {
    pub(crate) fn new(
        election: String,
        session: Arc<SessionInner>,
        mastership: Arc<Mastership>,
        handover_state: Option<Vec<u8>>,
    ) -> Self {
        Leadership {
            election,
            session,
            mastership,
            handover_state,
        }
    }

    /// The mastership epoch (the revision of the command that made this
    /// session master).
    pub fn epoch(&self) -> u64 {
        self.mastership.epoch
    }

    /// The election's name.
    pub fn election(&self) -> &str {
        &self.election
    }

    /// The id of the session that won: the master.
    pub fn session_id(&self) -> SessionId {
        self.session.id
    }

    /// The previous master's state, when this mastership came by warm
    /// handover (the state was received and acknowledged before this
    /// session became master); `None` after an ordinary election.
    pub fn handover_state(&self) -> Option<&[u8]> {
        self.handover_state.as_deref()
    }

    /// Whether the library still believes this session leads: the loss
    /// signal has not fired, the session is not expired and its local
    /// validity is not over. Once false, false for good.
    pub fn is_master(&self) -> bool {
        self.check_session();
        self.mastership.ended().is_none()
    }

    /// Why the mastership ended, if it did.
    pub fn loss(&self) -> Option<LeadershipLoss> {
        self.check_session();
        self.mastership.ended().map(|(reason, _)| reason)
    }

    /// When the mastership ended, if it did: when the loss signal fired, or
    /// the end of the session's local validity if that came first.
    pub fn lost_at(&self) -> Option<Instant> {
        self.check_session();
        self.mastership.ended().map(|(_, at)| at)
    }

    /// Resolves when the mastership ends (at once if it has), with the
    /// reason; from then on, code must no longer act as master. Owns what
    /// it needs, so it can be moved into a task.
    pub fn lost(&self) -> impl Future<Output = LeadershipLoss> + Send + 'static {
        let this = self.clone();
        async move {
            let mut ended = this.mastership.ended.subscribe();
            loop {
                this.check_session();
                if let Some((reason, _)) = this.mastership.ended() {
                    return reason;
                }
                // Woken by the signal, the session's expiry, or the end of
                // its local validity as it stands (a renewal moves it on:
                // then this loops).
                let until = this.session.valid_until_raw();
                tokio::select! {
                    _ = ended.changed() => {}
                    () = this.session.lost() => {}
                    () = sleep_until_raw(until) => {}
                }
            }
        }
    }

    /// Ends the mastership if the session can no longer back it: expired,
    /// or its local validity over (the keepalive task notices that a moment
    /// after the fact; the mastership ends at the validity end itself).
    fn check_session(&self) {
        if self.mastership.ended().is_some() {
            return;
        }
        let until = self.session.valid_until_raw();
        let (reason, at) = if RawInstant::now() >= until {
            (LeadershipLoss::ValidityEnded, to_instant(until))
        } else if self.session.state() == SessionState::Expired {
            (LeadershipLoss::SessionEnded, Instant::now())
        } else {
            return;
        };
        if self.mastership.end(reason.clone(), at) {
            let mut masterships = lock(&self.session.masterships);
            if masterships
                .get(&self.election)
                .is_some_and(|m| Arc::ptr_eq(m, &self.mastership))
            {
                masterships.remove(&self.election);
            }
            tracing::info!(session = self.session.id, election = %self.election, epoch = self.mastership.epoch, %reason, "mastership ended");
        }
    }
}
