//! Connections, leader discovery and the one retry loop every call goes
//! through.
//!
//! - One tarpc connection per endpoint, reused by every caller and dropped
//!   when it fails or a request on it times out; reconnects to an endpoint
//!   back off exponentially (`backoff_min_ms` … `backoff_max_ms`).
//! - Leader discovery: calls go to the preferred endpoint (the last known
//!   leader), else to the configured endpoints in turn. A
//!   [`ApiError::NotLeader`] hint moves the preference to the hinted client
//!   address at once; no hint, a connection failure or a timeout moves on to
//!   the next endpoint after a backoff pause, kept short (at most
//!   `backoff_min_ms << 2`) while the client is searching for a leader.
//! - Delivery classes: an idempotent call (reads, `observe`, session
//!   operations with their fixed `(session, seq)`, `open_session` with its
//!   fixed nonce) is retried on every transient failure until the retry
//!   budget is spent. An at-most-once call (sessionless KV writes, admin) is
//!   retried only when it surely did not take effect — it never reached the
//!   node, or the node answered `NotLeader`/`Unavailable` (both are decided
//!   before anything is proposed); once it may have been delivered, a
//!   timeout or a broken connection is reported as
//!   [`ClientError::Indeterminate`].
//! - Throttling: a node serves at most `Caps::in_flight` (128) requests at
//!   once per connection and turns the rest away unread (a tarpc
//!   `WouldBlock` server error). The client keeps at most
//!   `max_in_flight_per_connection` requests in flight per connection (a
//!   semaphore per connection: a burst queues here instead of being turned
//!   away), and a request the node throttles anyway (another handle of the
//!   node's cap, a smaller cap on the node) was not delivered: it keeps the
//!   connection and the endpoint, pauses a jittered backoff and is sent to
//!   the same node again, whatever its delivery class. Throttled requests
//!   are counted ([`Transport::throttled`]) and logged at debug.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tarpc::client::{NewClient, RpcError};

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::sync::lock;
use driftlock_proto::Security;
use driftlock_proto::{ApiError, DriftlockApiClient};

/// Shortest deadline an attempt gets, even at the very end of its budget.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// Slack on top of an RPC's tarpc deadline before the local timer gives up
/// (the dispatch task normally reports the deadline itself).
const LOCAL_TIMER_SLACK: Duration = Duration::from_millis(250);
/// Leader-search failures (an unreachable node, `NotLeader`, leadership
/// moving under a request) count at most this many steps into the
/// exponential backoff: while a new leader is being elected the client
/// keeps probing every `backoff_min_ms << 2` at most (80 ms by default)
/// instead of backing off towards `backoff_max_ms`, so the first operation
/// after a failover is not held back by a long pause taken during the
/// election.
const LEADER_SEARCH_MAX_STEP: u32 = 3;

/// Where a call may be served.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// The leader (mutations, linearizable reads, admin).
    Leader,
    /// Any node (serializable reads, `observe`, status).
    Any,
    /// This endpoint only.
    Exact(String),
}

/// What may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Safe to repeat: deduplicated by the cluster, or read-only.
    Idempotent,
    /// Not deduplicated: retried only when it surely was not delivered.
    AtMostOnce,
}

/// How one call is made.
#[derive(Clone, Debug)]
pub(crate) struct CallSpec {
    /// For error messages.
    pub what: &'static str,
    /// Where it may go.
    pub route: Route,
    /// Whether the call may be resent after a transient failure
    /// (idempotent) or only when it surely never arrived (at most once).
    pub delivery: Delivery,
    /// End of the retry budget. At least one attempt is always made.
    pub deadline: Instant,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
}

/// A live connection to one endpoint.
#[derive(Clone)]
pub(crate) struct Conn {
    api: DriftlockApiClient,
    /// Cleared when the connection's dispatch task ends.
    alive: Arc<AtomicBool>,
    /// Permits for requests in flight on this connection
    /// (`max_in_flight_per_connection`): one is held from send to answer.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Conn {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn same(&self, other: &Conn) -> bool {
        Arc::ptr_eq(&self.alive, &other.alive)
    }
}

/// Connection state of one endpoint.
#[derive(Default)]
struct Slot {
    conn: Option<Conn>,
    /// Consecutive failed connects.
    failures: u32,
    /// No new connect before this instant.
    retry_at: Option<Instant>,
}

/// Connections and leader tracking shared by all handles of a client.
pub(crate) struct Transport {
    /// How connections are opened: mutual TLS, or plain TCP to an
    /// `--insecure` cluster.
    security: Security,
    config: ClientConfig,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    /// The endpoint believed to be the leader.
    preferred: Mutex<Option<String>>,
    /// Next configured endpoint to try.
    cursor: AtomicUsize,
    /// Requests a node turned away over its in-flight cap (each retried).
    throttled: AtomicU64,
}

impl Transport {
    pub(crate) fn new(config: ClientConfig, security: Security) -> Self {
        debug_assert!(!config.endpoints.is_empty());
        Transport {
            config,
            security,
            slots: Mutex::new(HashMap::new()),
            preferred: Mutex::new(None),
            cursor: AtomicUsize::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// Requests a node turned away because too many of this client's were
    /// in flight on the connection (each was retried on the same node).
    pub(crate) fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The endpoint believed to be the leader, if any.
    pub(crate) fn leader_hint(&self) -> Option<String> {
        lock(&self.preferred).clone()
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// Pause before retry number `failures` (1-based): exponential from
    /// `backoff_min_ms`, capped at `backoff_max_ms`, with jitter in the
    /// upper half so that clients do not retry in lockstep.
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let min = self.config.backoff_min_ms.max(1);
        let max = self.config.backoff_max_ms.max(min);
        let exp = failures.saturating_sub(1).min(20);
        let ms = min.saturating_mul(1u64 << exp).min(max);
        let jittered = rand::random_range(ms / 2..=ms).max(1);
        Duration::from_millis(jittered)
    }

    fn target(&self, route: &Route) -> String {
        match route {
            Route::Exact(addr) => addr.clone(),
            Route::Leader | Route::Any => {
                if let Some(p) = lock(&self.preferred).clone() {
                    return p;
                }
                let eps = &self.config.endpoints;
                eps[self.cursor.load(Ordering::Relaxed) % eps.len()].clone()
            }
        }
    }

    /// Stops preferring `addr` and moves on to the next configured endpoint.
    fn demote(&self, addr: &str) {
        let mut preferred = lock(&self.preferred);
        if preferred.as_deref() == Some(addr) {
            *preferred = None;
        }
        drop(preferred);
        let eps = &self.config.endpoints;
        let cur = self.cursor.load(Ordering::Relaxed);
        // Only advance past `addr` itself, so that concurrent failures of one
        // endpoint do not skip healthy ones.
        if eps[cur % eps.len()] == addr || !eps.iter().any(|e| e == addr) {
            let _ = self
                .cursor
                .compare_exchange(cur, cur.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn prefer(&self, addr: &str) {
        *lock(&self.preferred) = Some(addr.to_owned());
    }

    fn slot(&self, addr: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        lock(&self.slots).entry(addr.to_owned()).or_default().clone()
    }

    /// The connection to `addr`: the cached one if it is alive, else a new
    /// one unless the endpoint is still in its reconnect backoff.
    pub(crate) async fn connection(&self, addr: &str) -> std::result::Result<Conn, String> {
        let slot = self.slot(addr);
        let mut slot = slot.lock().await;
        if let Some(conn) = &slot.conn {
            if conn.is_alive() {
                return Ok(conn.clone());
            }
            slot.conn = None;
        }
        if let Some(at) = slot.retry_at {
            if Instant::now() < at {
                return Err(format!("{addr}: reconnect backoff after {} failures", slot.failures));
            }
        }
        match self.dial(addr).await {
            Ok(conn) => {
                slot.failures = 0;
                slot.retry_at = None;
                slot.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.retry_at = Some(Instant::now() + self.backoff(slot.failures));
                Err(e)
            }
        }
    }

    /// Opens a connection (`driftlock_proto::dial`: TCP with `TCP_NODELAY`,
    /// mutual TLS unless configured without, bounded bincode frames) and a
    /// dispatch task whose end marks the connection dead.
    async fn dial(&self, addr: &str) -> std::result::Result<Conn, String> {
        let NewClient { client, dispatch } = driftlock_proto::dial(addr, self.request_timeout(), &self.security)
            .await
            .map_err(|e| e.to_string())?;
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let peer = addr.to_owned();
        tokio::spawn(async move {
            if let Err(e) = dispatch.await {
                tracing::debug!(endpoint = %peer, error = %e, "connection broken");
            }
            flag.store(false, Ordering::SeqCst);
        });
        tracing::debug!(endpoint = %addr, "connected");
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_in_flight_per_connection.max(1),
        ));
        Ok(Conn {
            api: client,
            alive,
            permits,
        })
    }

    /// Drops the cached connection to `addr` if it is still `conn`.
    async fn discard(&self, addr: &str, conn: &Conn) {
        let slot = self.slot(addr);
        let mut slot = slot.lock().await;
        if slot.conn.as_ref().is_some_and(|c| c.same(conn)) {
            slot.conn = None;
        }
    }

    /// Sleeps before the next attempt, never past the budget.
    async fn pause(&self, failures: u32, deadline: Instant) {
        let until = (Instant::now() + self.backoff(failures)).min(deadline);
        tokio::time::sleep_until(until.into()).await;
    }

    /// The pause after a leader-search failure (see
    /// [`LEADER_SEARCH_MAX_STEP`]).
    fn leader_search_backoff(&self, failures: u32) -> Duration {
        self.backoff(failures.min(LEADER_SEARCH_MAX_STEP))
    }

    async fn pause_leader_search(&self, failures: u32, deadline: Instant) {
        let until = (Instant::now() + self.leader_search_backoff(failures)).min(deadline);
        tokio::time::sleep_until(until.into()).await;
    }

    /// Runs `f` against the right node until it succeeds, fails for good or
    /// the budget is spent (see the module documentation for what is
    /// retried).
    pub(crate) async fn call<T, F, Fut>(&self, spec: CallSpec, mut f: F) -> Result<T>
    where
        F: FnMut(DriftlockApiClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = std::result::Result<std::result::Result<T, ApiError>, RpcError>>,
    {
        let mut failures: u32 = 0;
        let mut throttled: u32 = 0;
        let mut hops: u32 = 0;
        let mut attempts: u32 = 0;
        let mut last_error = String::from("no attempt made");
        let max_hops = 2 * self.config.endpoints.len() as u32 + 2;
        loop {
            let now = Instant::now();
            if attempts > 0 && now >= spec.deadline {
                return Err(ClientError::Unavailable(format!(
                    "{}: no answer after {attempts} attempts; last error: {last_error}",
                    spec.what
                )));
            }
            attempts += 1;
            let addr = self.target(&spec.route);
            let conn = match self.connection(&addr).await {
                Ok(c) => c,
                Err(e) => {
                    last_error = e;
                    self.demote(&addr);
                    failures += 1;
                    self.pause_leader_search(failures, spec.deadline).await;
                    continue;
                }
            };
            let timeout = match spec.delivery {
                // An at-most-once call keeps its full deadline: cutting it
                // short would only make more outcomes unknown.
                Delivery::AtMostOnce => spec.attempt_timeout,
                Delivery::Idempotent => spec
                    .attempt_timeout
                    .min(spec.deadline.saturating_duration_since(now))
                    .max(MIN_ATTEMPT),
            };
            // Queue here rather than be turned away by the node; the wait
            // is part of the retry budget, not of the attempt.
            let permit = match tokio::time::timeout_at(spec.deadline.into(), conn.permits.clone().acquire_owned()).await
            {
                Ok(Ok(permit)) => permit,
                // Closed (never) or the budget spent while queued: nothing
                // was sent.
                _ => {
                    last_error = format!("{addr}: still queued behind this client's requests in flight");
                    continue;
                }
            };
            let was_alive = conn.is_alive();
            let mut ctx = tarpc::context::current();
            ctx.deadline = Instant::now() + timeout;
            let outcome = tokio::time::timeout(timeout + LOCAL_TIMER_SLACK, f(conn.api.clone(), ctx))
                .await
                .unwrap_or(Err(RpcError::DeadlineExceeded));
            drop(permit);
            let err = match outcome {
                Ok(Ok(value)) => {
                    if matches!(spec.route, Route::Leader) {
                        self.prefer(&addr);
                    }
                    return Ok(value);
                }
                Ok(Err(e)) => e,
                Err(rpc) if is_throttled(&rpc) => {
                    // The node's in-flight cap turned it away unread: the
                    // connection and the endpoint are fine; retry there
                    // after a pause.
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = %addr, what = spec.what, "request throttled by the node; retrying");
                    last_error = format!("{addr}: {rpc}");
                    throttled += 1;
                    self.pause(throttled, spec.deadline).await;
                    continue;
                }
                Err(rpc) => {
                    self.discard(&addr, &conn).await;
                    let maybe_delivered = maybe_delivered(&rpc, was_alive);
                    last_error = format!("{addr}: {rpc}");
                    if spec.delivery == Delivery::AtMostOnce && maybe_delivered {
                        return Err(ClientError::Indeterminate(format!("{}: {last_error}", spec.what)));
                    }
                    tracing::debug!(endpoint = %addr, error = %rpc, what = spec.what, "attempt failed");
                    self.demote(&addr);
                    failures += 1;
                    self.pause_leader_search(failures, spec.deadline).await;
                    continue;
                }
            };
            tracing::debug!(endpoint = %addr, error = %err, what = spec.what, "attempt answered with an error");
            match err {
                ApiError::Rejected(r) => return Err(ClientError::Rejected(r)),
                ApiError::InvalidRequest(s) => return Err(ClientError::InvalidRequest(s)),
                denied @ ApiError::PermissionDenied { .. } => {
                    return Err(ClientError::PermissionDenied(denied.to_string()))
                }
                ApiError::NotLeader { leader_hint } => {
                    last_error = format!("{addr}: not the leader (leader: {leader_hint:?})");
                    if matches!(spec.route, Route::Exact(_)) {
                        // The caller chose this node; asking it again will
                        // not make it the leader.
                        return Err(ClientError::Unavailable(format!("{}: {last_error}", spec.what)));
                    }
                    match leader_hint {
                        Some((_, hinted)) if hinted != addr && self.config.follow_leader_hints => {
                            self.prefer(&hinted);
                            hops += 1;
                            if hops > max_hops {
                                // Hints that go round in circles: slow down.
                                failures += 1;
                                self.pause_leader_search(failures, spec.deadline).await;
                            }
                        }
                        _ => {
                            self.demote(&addr);
                            failures += 1;
                            self.pause_leader_search(failures, spec.deadline).await;
                        }
                    }
                }
                ApiError::Unavailable(s) => {
                    last_error = format!("{addr}: unavailable: {s}");
                    self.demote(&addr);
                    failures += 1;
                    self.pause(failures, spec.deadline).await;
                }
                ApiError::Indeterminate(s) => {
                    last_error = format!("{addr}: outcome unknown: {s}");
                    if spec.delivery == Delivery::AtMostOnce {
                        return Err(ClientError::Indeterminate(format!("{}: {last_error}", spec.what)));
                    }
                    // Leadership moved under the request: the next attempt
                    // will most likely be told where the leader is.
                    failures += 1;
                    self.pause_leader_search(failures, spec.deadline).await;
                }
            }
        }
    }
}

/// Whether the node turned the request away unread over its in-flight cap
/// per connection (tarpc's `max_concurrent_requests`).
fn is_throttled(rpc: &RpcError) -> bool {
    matches!(rpc, RpcError::Server(e) if e.kind == std::io::ErrorKind::WouldBlock)
}

/// Whether a request that failed with `rpc` may have reached the node
/// (and so may have taken effect). `Send` means the frame never left;
/// `Shutdown` on a connection that was already dead means it was never
/// handed to one; a `WouldBlock` server error is the node's in-flight cap
/// per connection turning the request away unread (the next attempt takes
/// a new connection). Anything else may have been delivered.
fn maybe_delivered(rpc: &RpcError, was_alive: bool) -> bool {
    match rpc {
        RpcError::Send(_) => false,
        RpcError::Shutdown => was_alive,
        RpcError::Server(e) => e.kind != std::io::ErrorKind::WouldBlock,
        _ => true,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_request_the_node_throttled_was_not_delivered() {
        let throttled = RpcError::Server(tarpc::ServerError::new(
            std::io::ErrorKind::WouldBlock,
            "server throttled the request.".into(),
        ));
        assert!(!maybe_delivered(&throttled, true));
        assert!(is_throttled(&throttled));
        let other = RpcError::Server(tarpc::ServerError::new(
            std::io::ErrorKind::Other,
            "handler panicked".into(),
        ));
        assert!(maybe_delivered(&other, true));
        assert!(!is_throttled(&other));
        assert!(maybe_delivered(&RpcError::DeadlineExceeded, true));
        assert!(!maybe_delivered(&RpcError::Shutdown, false));
        assert!(maybe_delivered(&RpcError::Shutdown, true));
    }
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let t = Transport::new(
            ClientConfig {
                backoff_min_ms: 20,
                backoff_max_ms: 1_000,
                ..ClientConfig::new(vec!["127.0.0.1:1".into()])
            },
            Security::Insecure,
        );
        for failures in 1..40 {
            let b = t.backoff(failures);
            let cap = (20u64 << (failures - 1).min(20)).min(1_000);
            assert!(b <= Duration::from_millis(cap), "{failures}: {b:?}");
            assert!(b >= Duration::from_millis(cap / 2), "{failures}: {b:?}");
        }
    }

    #[test]
    fn leader_search_backoff_stays_short() {
        let t = Transport::new(
            ClientConfig {
                backoff_min_ms: 20,
                backoff_max_ms: 1_000,
                ..ClientConfig::new(vec!["127.0.0.1:1".into()])
            },
            Security::Insecure,
        );
        let cap = Duration::from_millis(20 << (LEADER_SEARCH_MAX_STEP - 1));
        for failures in 1..40 {
            let b = t.leader_search_backoff(failures);
            assert!(b <= cap, "{failures}: {b:?}");
            assert!(b >= Duration::from_millis(10), "{failures}: {b:?}");
        }
        // The general backoff still reaches its maximum.
        assert!(t.backoff(30) >= Duration::from_millis(500));
    }

    #[test]
    fn demote_moves_to_the_next_endpoint() {
        let t = Transport::new(ClientConfig::new(vec!["a:1".into(), "b:1".into()]), Security::Insecure);
        assert_eq!(t.target(&Route::Leader), "a:1");
        t.demote("a:1");
        assert_eq!(t.target(&Route::Leader), "b:1");
        t.prefer("c:1");
        assert_eq!(t.target(&Route::Any), "c:1");
        t.demote("c:1");
        assert_eq!(t.target(&Route::Leader), "a:1");
        assert_eq!(t.target(&Route::Exact("z:9".into())), "z:9");
    }
}
