//! Watching an election's master without taking part: the first answer
//! is a linearizable read, later ones follow `MasterChanged` events
//! long-polled from any node, and a gap in the events means a fresh read.

use std::collections::VecDeque;
use std::time::Duration;

use driftlock_proto::{ElectionView, Event, SessionId};
use futures::Stream;

use crate::client::{unexpected, Client};
use crate::error::Result;
use driftlock_proto::{Consistency, EventFilter, Query, QueryResult};

/// The state of an election as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// The master, if any.
    pub master: Option<SessionId>,
    /// The master's proclaimed value (empty without a master).
    pub value: Vec<u8>,
    /// The election's epoch (0 when the election does not exist).
    pub epoch: u64,
}

impl LeaderChange {
    fn from_view(view: Option<ElectionView>) -> LeaderChange {
        match view {
            Some(v) => {
                let (master, value) = match v.master {
                    Some((s, value)) => (Some(s), value),
                    None => (None, Vec::new()),
                };
                LeaderChange {
                    master,
                    value,
                    epoch: v.epoch,
                }
            }
            None => LeaderChange {
                master: None,
                value: Vec::new(),
                epoch: 0,
            },
        }
    }
}

/// Follows an election's master. The first [`next`](Self::next) answers the
/// current state (by linearizable read); later ones wait for changes
/// (`MasterChanged` events, long-polled from any node). Consecutive equal
/// states are reported once; after a gap in the event stream the state is
/// read again.
///
/// ```no_run
/// # async fn demo(client: driftlock_client::Client) -> Result<(), driftlock_client::ClientError> {
/// let mut watch = client.watch_election("scheduler");
/// loop {
///     let change = watch.next().await?;
///     match change.master {
///         Some(s) => println!("master is session {s} at epoch {}", change.epoch),
///         None => println!("no master"),
///     }
/// }
/// # }
/// ```
pub struct LeaderWatch {
    client: Client,
    name: String,
    /// Events are followed after this index; `None` = read the state first.
    after: Option<u64>,
    last: Option<LeaderChange>,
    pending: VecDeque<LeaderChange>,
}

impl std::fmt::Debug for LeaderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderWatch")
            .field("election", &self.name)
            .field("after", &self.after)
            .field("last", &self.last)
            .finish()
    }
}

impl LeaderWatch {
    pub(crate) fn new(client: Client, name: String) -> Self {
        LeaderWatch {
            client,
            name,
            after: None,
            last: None,
            pending: VecDeque::new(),
        }
    }

    fn push(&mut self, change: LeaderChange) {
        let newest = self.pending.back().or(self.last.as_ref());
        if newest != Some(&change) {
            self.pending.push_back(change);
        }
    }

    /// The next state of the election. An error (cluster unavailable for
    /// the retry budget) leaves the watch usable: call again to resume.
    pub async fn next(&mut self) -> Result<LeaderChange> {
        let wait = Duration::from_millis(self.client.config().observe_wait_ms);
        loop {
            if let Some(change) = self.pending.pop_front() {
                self.last = Some(change.clone());
                return Ok(change);
            }
            match self.after {
                None => {
                    let query = Query::Election {
                        name: self.name.clone(),
                    };
                    let reply = self.client.read(query, Consistency::Linearizable).await?;
                    let view = match reply.result {
                        QueryResult::Election(v) => v,
                        other => return Err(unexpected("Election", &other)),
                    };
                    self.push(LeaderChange::from_view(view));
                    self.after = Some(reply.revision);
                }
                Some(after) => {
                    let filter = EventFilter {
                        election: Some(self.name.clone()),
                        ..EventFilter::default()
                    };
                    let batch = self.client.observe(after, filter, wait).await?;
                    for (_, event) in batch.events {
                        if let Event::MasterChanged {
                            election,
                            master,
                            epoch,
                            value,
                        } = event
                        {
                            if election == self.name {
                                self.push(LeaderChange { master, value, epoch });
                            }
                        }
                    }
                    self.after = if batch.truncated {
                        None
                    } else {
                        Some(after.max(batch.next_after_index))
                    };
                }
            }
        }
    }

    /// The watch as a stream of states.
    pub fn into_stream(self) -> impl Stream<Item = Result<LeaderChange>> + Send {
        futures::stream::unfold(self, |mut watch| async move {
            let item = watch.next().await;
            Some((item, watch))
        })
    }
}
