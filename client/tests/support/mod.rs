//! An in-process driftlock "cluster" for client tests: one state machine
//! behind a mutex, served over real TCP on loopback by one or more tarpc
//! front-ends, with fault injection.
//!
//! - Each command is applied at `index = last + 1` and
//!   `ts_us = µs since start + offset` (the offset lets a test make cluster
//!   time jump). A ticker commits `Tick` every 50 ms so expiries happen on an
//!   idle "cluster", as the real leader's idle ticker does.
//! - Events go to a bounded buffer served by `observe` long-polls.
//! - Front-ends ([`TestServer`]) share one [`Core`]. Knobs: answer
//!   `NotLeader` with a hint, delay every request, hang every request
//!   (paused), drop the reply of a matching command after applying it
//!   (hang or disconnect), kill connections, stop and restart serving.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use driftlock_proto::{
    AdminReply, AdminRequest, ApiError, Consistency, DriftlockApi, EventBatch, EventFilter, KvWrite, NodeStatus, Query,
    QueryReply, QueryResult, Role,
};
use driftlock_proto::{Config, Event, LockView, Reply, SessionId, SessionOp, SessionView};
use driftlock_state_machine::{Command, EntryMeta, Response, StateMachine};
use futures::StreamExt;
use tarpc::server::Channel;
use tarpc::tokio_serde::formats::Bincode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The replicated state, as if every node applied the same log.
pub struct Core {
    sm: Mutex<StateMachine>,
    started: Instant,
    offset_us: AtomicU64,
    events: Mutex<EventLog>,
    newest: watch::Sender<u64>,
    /// Every applied command with its index, for assertions.
    log: Mutex<Vec<(u64, Command)>>,
}

struct EventLog {
    events: VecDeque<(u64, Event)>,
    capacity: usize,
    dropped_through: u64,
}

/// A test configuration: short TTLs allowed.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.lease.min_ttl_us = 100_000;
    c.lease.min_validity_us = 100_000;
    c
}

impl Core {
    pub fn new(config: Config) -> Arc<Core> {
        let (newest, _) = watch::channel(0);
        Arc::new(Core {
            sm: Mutex::new(StateMachine::new(config)),
            started: Instant::now(),
            offset_us: AtomicU64::new(0),
            events: Mutex::new(EventLog {
                events: VecDeque::new(),
                capacity: 100_000,
                dropped_through: 0,
            }),
            newest,
            log: Mutex::new(Vec::new()),
        })
    }

    /// Cluster time now, µs.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64 + self.offset_us.load(Ordering::SeqCst)
    }

    /// Makes cluster time jump forward.
    pub fn advance(&self, by: Duration) {
        self.offset_us.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }

    /// The local instant at which cluster time reaches `ts_us` (with the
    /// current offset).
    pub fn instant_of(&self, ts_us: u64) -> Instant {
        let offset = self.offset_us.load(Ordering::SeqCst);
        self.started + Duration::from_micros(ts_us.saturating_sub(offset))
    }

    /// Applies a command as the next log entry.
    pub fn apply(&self, command: Command) -> (u64, Response) {
        let mut sm = lock(&self.sm);
        let index = sm.last_index() + 1;
        let meta = EntryMeta {
            index,
            ts_us: self.now_us(),
        };
        lock(&self.log).push((index, command.clone()));
        let (response, events) = sm.apply(command, meta);
        debug_assert_eq!(sm.check_invariants(), Ok(()));
        drop(sm);
        {
            let mut log = lock(&self.events);
            for e in events {
                log.events.push_back((index, e));
            }
            while log.events.len() > log.capacity {
                if let Some((i, _)) = log.events.pop_front() {
                    log.dropped_through = log.dropped_through.max(i);
                }
            }
        }
        self.newest.send_modify(|n| *n = (*n).max(index));
        (index, response)
    }

    /// Keeps only the newest `capacity` events (older ones are reported as
    /// a gap).
    pub fn set_event_capacity(&self, capacity: usize) {
        lock(&self.events).capacity = capacity.max(1);
    }

    pub fn session_view(&self, id: SessionId) -> Option<SessionView> {
        lock(&self.sm).session_view(id, self.now_us())
    }

    pub fn lock_view(&self, name: &str) -> Option<LockView> {
        lock(&self.sm).lock_view(name, self.now_us())
    }

    /// Applied commands matching `pred`.
    pub fn count_applied(&self, pred: impl Fn(&Command) -> bool) -> usize {
        lock(&self.log).iter().filter(|(_, c)| pred(c)).count()
    }

    pub fn last_index(&self) -> u64 {
        lock(&self.sm).last_index()
    }

    fn read(&self, query: &Query) -> QueryReply {
        let sm = lock(&self.sm);
        let now = self.now_us();
        let result = match query {
            Query::KvGet { key } => QueryResult::Kv(sm.kv_get(key)),
            Query::KvRange {
                prefix,
                start_after,
                limit,
            } => {
                let (entries, more) = sm.kv_range(prefix, start_after.as_deref(), *limit as usize, usize::MAX);
                QueryResult::KvRange { entries, more }
            }
            Query::Lock { name } => QueryResult::Lock(sm.lock_view(name, now)),
            Query::Session { session } => QueryResult::Session(sm.session_view(*session, now)),
            Query::Election { name } => QueryResult::Election(sm.election_view(name, now)),
            Query::Stats => QueryResult::Stats(sm.stats()),
        };
        QueryReply {
            applied_index: sm.last_index(),
            cluster_ts_us: now,
            result,
        }
    }

    fn fetch(&self, after: u64, filter: &EventFilter) -> EventBatch {
        let log = lock(&self.events);
        let truncated = after < log.dropped_through;
        let events = log
            .events
            .iter()
            .filter(|(i, e)| *i > after && filter.matches(e))
            .cloned()
            .collect();
        EventBatch {
            events,
            next_after_index: after.max(*self.newest.borrow()),
            truncated,
        }
    }

    async fn observe(&self, after: u64, filter: &EventFilter, wait: Duration) -> EventBatch {
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = self.newest.subscribe();
        let mut seen = after;
        loop {
            let batch = self.fetch(seen, filter);
            if !batch.events.is_empty() || batch.truncated {
                return batch;
            }
            seen = batch.next_after_index.max(seen);
            match tokio::time::timeout_at(deadline, rx.wait_for(|n| *n > seen)).await {
                Ok(Ok(_)) => continue,
                _ => {
                    return EventBatch {
                        events: Vec::new(),
                        next_after_index: seen,
                        truncated: false,
                    }
                }
            }
        }
    }
}

/// What to do with a reply that is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// Never answer (the client times out).
    Hang,
    /// Close every connection of this front-end instead of answering.
    Disconnect,
}

type Matcher = Box<dyn Fn(&Command) -> bool + Send + Sync>;

/// Fault-injection knobs of one front-end.
#[derive(Default)]
pub struct Knobs {
    /// `Some(hint)`: answer mutations and linearizable reads with
    /// `NotLeader { leader_hint: hint }`.
    not_leader: Mutex<Option<Option<(u64, String)>>>,
    /// Delay before handling any request, ms.
    delay_ms: AtomicU64,
    /// Hang every request while set.
    paused: AtomicBool,
    /// Hang `observe` requests while set (events never arrive).
    observe_blocked: AtomicBool,
    /// Apply the next matching command, then drop its reply.
    drop_rules: Mutex<Vec<(Matcher, DropMode)>>,
    /// Requests received, by method.
    pub requests: Mutex<Vec<&'static str>>,
}

struct Shared {
    id: u64,
    core: Arc<Core>,
    knobs: Knobs,
    addr: Mutex<String>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    async fn gate(&self, method: &'static str) {
        lock(&self.knobs.requests).push(method);
        let delay = self.knobs.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        while self.knobs.paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn not_leader(&self) -> Result<(), ApiError> {
        match &*lock(&self.knobs.not_leader) {
            Some(hint) => Err(ApiError::NotLeader {
                leader_hint: hint.clone(),
            }),
            None => Ok(()),
        }
    }

    fn kill_connections(&self) {
        for c in lock(&self.conns).drain(..) {
            c.abort();
        }
    }

    async fn commit(&self, command: Command) -> Result<Reply, ApiError> {
        self.not_leader()?;
        let fault = {
            let mut rules = lock(&self.knobs.drop_rules);
            let found = rules.iter().position(|(m, _)| m(&command));
            found.map(|i| rules.remove(i).1)
        };
        let (_, response) = self.core.apply(command);
        match fault {
            None => {}
            Some(DropMode::Hang) => std::future::pending::<()>().await,
            Some(DropMode::Disconnect) => {
                self.kill_connections();
                // Let the aborted connection tasks go before answering into
                // nothing.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        response.map_err(ApiError::Rejected)
    }
}

#[derive(Clone)]
struct Handler(Arc<Shared>);

impl DriftlockApi for Handler {
    async fn open_session(
        self,
        _: tarpc::context::Context,
        nonce: u128,
        client_name: String,
        requested_ttl_us: u64,
    ) -> Result<Reply, ApiError> {
        self.0.gate("open_session").await;
        self.0
            .commit(Command::OpenSession {
                nonce,
                client_name,
                requested_ttl_us,
            })
            .await
    }

    async fn session_op(
        self,
        _: tarpc::context::Context,
        session: SessionId,
        seq: u64,
        op: SessionOp,
    ) -> Result<Reply, ApiError> {
        self.0.gate("session_op").await;
        if seq == 0 {
            return Err(ApiError::InvalidRequest("sequence numbers start at 1".into()));
        }
        self.0.commit(Command::Session { session, seq, op }).await
    }

    async fn kv_write(self, _: tarpc::context::Context, write: KvWrite) -> Result<Reply, ApiError> {
        self.0.gate("kv_write").await;
        let command = match write {
            KvWrite::Put { key, value } => Command::KvPut { key, value },
            KvWrite::Delete { key } => Command::KvDelete { key },
            KvWrite::Cas {
                key,
                expected_revision,
                value,
            } => Command::KvCas {
                key,
                expected_revision,
                value,
            },
        };
        self.0.commit(command).await
    }

    async fn read(
        self,
        _: tarpc::context::Context,
        query: Query,
        consistency: Consistency,
    ) -> Result<QueryReply, ApiError> {
        self.0.gate("read").await;
        if consistency == Consistency::Linearizable {
            self.0.not_leader()?;
        }
        Ok(self.0.core.read(&query))
    }

    async fn observe(
        self,
        _: tarpc::context::Context,
        after_index: u64,
        filter: EventFilter,
        timeout_ms: u64,
    ) -> Result<EventBatch, ApiError> {
        self.0.gate("observe").await;
        while self.0.knobs.observe_blocked.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wait = Duration::from_millis(timeout_ms.min(30_000));
        Ok(self.0.core.observe(after_index, &filter, wait).await)
    }

    async fn status(self, _: tarpc::context::Context) -> NodeStatus {
        self.0.gate("status").await;
        let leader = lock(&self.0.knobs.not_leader).is_none();
        let addr = lock(&self.0.addr).clone();
        let sm = lock(&self.0.core.sm);
        NodeStatus {
            id: self.0.id,
            client_addr: addr.clone(),
            raft_addr: addr.clone(),
            role: if leader { Role::Leader } else { Role::Follower },
            term: 1,
            leader: if leader {
                Some((self.0.id, addr))
            } else {
                lock(&self.0.knobs.not_leader).clone().flatten()
            },
            last_log_index: sm.last_index(),
            applied_index: sm.last_index(),
            voters: Vec::new(),
            learners: Vec::new(),
            cluster_ts_us: sm.ts_eff_us(),
            stats: sm.stats(),
            health: None,
            nhi_permille: None,
            health_tier: None,
            clock: None,
            rho_hi_ppm: 500,
            hot_locks: Vec::new(),
        }
    }

    async fn admin(self, _: tarpc::context::Context, request: AdminRequest) -> Result<AdminReply, ApiError> {
        self.0.gate("admin").await;
        if !matches!(request, AdminRequest::Init { .. }) {
            self.0.not_leader()?;
        }
        Ok(AdminReply::Done)
    }
}

/// One front-end serving the shared core on a loopback port.
pub struct TestServer {
    pub core: Arc<Core>,
    shared: Arc<Shared>,
    ticker: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A new core with the test configuration, its ticker, and a leader
    /// front-end.
    pub async fn start() -> TestServer {
        Self::start_with(test_config()).await
    }

    /// Like [`start`](Self::start) with a given configuration.
    pub async fn start_with(config: Config) -> TestServer {
        let core = Core::new(config);
        let ticker_core = core.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = ticker_core.apply(Command::Tick);
            }
        });
        let mut server = Self::serve(core, 1, "127.0.0.1:0").await;
        server.ticker = Some(ticker);
        server
    }

    /// Another front-end on the same core (a "follower" once told so).
    pub async fn replica(&self, id: u64) -> TestServer {
        Self::serve(self.core.clone(), id, "127.0.0.1:0").await
    }

    async fn serve(core: Arc<Core>, id: u64, bind: &str) -> TestServer {
        let shared = Arc::new(Shared {
            id,
            core: core.clone(),
            knobs: Knobs::default(),
            addr: Mutex::new(String::new()),
            conns: Mutex::new(Vec::new()),
            accept: Mutex::new(None),
        });
        start_accepting(&shared, bind).await;
        TestServer {
            core,
            shared,
            ticker: None,
        }
    }

    /// `host:port` of this front-end.
    pub fn addr(&self) -> String {
        lock(&self.shared.addr).clone()
    }

    /// Node id of this front-end.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    pub fn knobs(&self) -> &Knobs {
        &self.shared.knobs
    }

    /// Answer mutations and linearizable reads with `NotLeader { hint }`.
    pub fn set_not_leader(&self, hint: Option<(u64, String)>) {
        *lock(&self.shared.knobs.not_leader) = Some(hint);
    }

    /// Serve everything again.
    pub fn set_leader(&self) {
        *lock(&self.shared.knobs.not_leader) = None;
    }

    pub fn set_delay(&self, d: Duration) {
        self.shared.knobs.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Hang every request (not applied) until unpaused.
    pub fn set_paused(&self, paused: bool) {
        self.shared.knobs.paused.store(paused, Ordering::SeqCst);
    }

    /// Hang `observe` long-polls (no events reach clients) while set.
    pub fn set_observe_blocked(&self, blocked: bool) {
        self.shared.knobs.observe_blocked.store(blocked, Ordering::SeqCst);
    }

    /// Apply the next command matching `pred`, then drop its reply.
    pub fn drop_reply_of(&self, pred: impl Fn(&Command) -> bool + Send + Sync + 'static, mode: DropMode) {
        lock(&self.shared.knobs.drop_rules).push((Box::new(pred), mode));
    }

    /// Requests received so far for `method`.
    pub fn requests(&self, method: &str) -> usize {
        lock(&self.shared.knobs.requests)
            .iter()
            .filter(|m| **m == method)
            .count()
    }

    /// Closes every open connection (new ones are accepted).
    pub fn kill_connections(&self) {
        self.shared.kill_connections();
    }

    /// Stops serving: closes the listener and every connection.
    pub fn stop(&self) {
        if let Some(a) = lock(&self.shared.accept).take() {
            a.abort();
        }
        self.shared.kill_connections();
    }

    /// Serves again on the same address after [`stop`](Self::stop).
    pub async fn restart(&self) {
        let addr = self.addr();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The aborted listener may take a moment to release the port.
        loop {
            if try_accepting(&self.shared, &addr).await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "cannot bind {addr} again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

async fn start_accepting(shared: &Arc<Shared>, bind: &str) {
    try_accepting(shared, bind).await.expect("bind a loopback port");
}

async fn try_accepting(shared: &Arc<Shared>, bind: &str) -> std::io::Result<()> {
    let mut incoming = tarpc::serde_transport::tcp::listen(bind, Bincode::default).await?;
    *lock(&shared.addr) = incoming.local_addr().to_string();
    let handler = Handler(shared.clone());
    let conns_of = shared.clone();
    let accept = tokio::spawn(async move {
        while let Some(conn) = incoming.next().await {
            let Ok(transport) = conn else { continue };
            let handler = handler.clone();
            let task = tokio::spawn(async move {
                tarpc::server::BaseChannel::with_defaults(transport)
                    .execute(handler.serve())
                    .for_each(|response| async move {
                        tokio::spawn(response);
                    })
                    .await;
            });
            lock(&conns_of.conns).push(task);
        }
    });
    *lock(&shared.accept) = Some(accept);
    Ok(())
}

/// Client configuration for tests: fast retries, short timeouts.
pub fn client_config(endpoints: Vec<String>) -> driftlock_client::ClientConfig {
    driftlock_client::ClientConfig {
        client_name: "test".into(),
        request_timeout_ms: 1_000,
        op_deadline_ms: 5_000,
        backoff_min_ms: 10,
        backoff_max_ms: 200,
        observe_wait_ms: 1_000,
        poll_interval_ms: 300,
        ..driftlock_client::ClientConfig::new(endpoints)
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
