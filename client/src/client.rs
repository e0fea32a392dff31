//! [`Client`]: the handle an application keeps — sessions, KV, reads,
//! events, status and administration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::Security;
use driftlock_proto::{KvView, Reply};

use crate::config::{check_endpoint, ClientConfig};
use crate::election::LeaderWatch;
use crate::error::{ClientError, Result};
use crate::session::Session;
use crate::transport::{CallSpec, Delivery, Route, Transport};
use driftlock_proto::{
    AdminReply, AdminRequest, Consistency, EventBatch, EventFilter, KvWrite, NodeStatus, Query, QueryReply, QueryResult,
};
use driftlock_sensors::health::HealthMonitor;

/// A connection to a driftlock cluster. Cheap to clone (an `Arc` inside);
/// every clone shares the connections and the leader it has found. Must be
/// used inside a Tokio runtime (it spawns its connection tasks there).
///
/// ```no_run
/// # async fn demo() -> Result<(), driftlock_client::ClientError> {
/// use driftlock_client::Client;
///
/// let client = Client::connect(vec!["127.0.0.1:7301".into(), "127.0.0.1:7302".into()]).await?;
/// let revision = client.kv_put("config/mode", b"active".to_vec()).await?;
/// let value = client.kv_get("config/mode").await?;
/// assert_eq!(value.map(|v| v.mod_revision), Some(revision));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

/// What every clone of a [`Client`] shares.
pub(crate) struct ClientInner {
    /// Connections, the leader found so far, and the retry loop of every
    /// call.
    pub(crate) transport: Transport,
    /// This host's health, shared by all sessions of the client.
    pub(crate) health: std::sync::Mutex<HealthMonitor>,
    /// This host's clock rate against cluster time, shared by all sessions.
    pub(crate) rate: std::sync::Mutex<crate::clock::ClusterRate>,
    /// The one event long-poll for all of this client's sessions.
    pub(crate) hub: crate::session::Hub,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.transport.config().endpoints)
            .field("leader", &self.inner.transport.leader_hint())
            .finish()
    }
}

impl Client {
    /// Connects with the default configuration (see [`ClientConfig::new`]).
    pub async fn connect(endpoints: Vec<String>) -> Result<Client> {
        Client::connect_with(ClientConfig::new(endpoints)).await
    }

    /// Validates `config` and connects to one of its endpoints (trying them
    /// in turn, with backoff, for up to `op_deadline_ms`). Leader discovery
    /// happens on the first request that needs the leader.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), driftlock_client::ClientError> {
    /// use driftlock_client::{endpoints_from_env, Client, ClientConfig};
    ///
    /// let config = ClientConfig {
    ///     client_name: "inventory-service".into(),
    ///     op_deadline_ms: 5_000,
    ///     ..ClientConfig::new(endpoints_from_env()?)
    /// };
    /// let client = Client::connect_with(config).await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn connect_with(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let security =
            Security::from_files(config.tls.as_ref()).map_err(|e| ClientError::InvalidConfig(format!("tls: {e}")))?;
        let client = Client::unconnected(config, security);
        let t = &client.inner.transport;
        let deadline = Instant::now() + Duration::from_millis(t.config().op_deadline_ms);
        let endpoints = t.config().endpoints.clone();
        let mut failures = 0u32;
        let mut last_error = String::new();
        loop {
            for ep in &endpoints {
                match t.connection(ep).await {
                    Ok(_) => return Ok(client),
                    Err(e) => last_error = e,
                }
            }
            failures += 1;
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(format!(
                    "no endpoint reachable; last error: {last_error}"
                )));
            }
            let pause = t
                .backoff(failures)
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }

    /// A client for a validated `config` that has not dialled anything yet.
    pub(crate) fn unconnected(config: ClientConfig, security: Security) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                health: std::sync::Mutex::new(HealthMonitor::new(config.health_override)),
                rate: std::sync::Mutex::new(crate::clock::ClusterRate::new()),
                transport: Transport::new(config, security),
                hub: crate::session::Hub::default(),
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        self.inner.transport.config()
    }

    /// Cluster time measured against this host's clock from keepalive
    /// replies (offset µs, drift ppb: negative when this host runs fast),
    /// with σ of each. Once settled, `|drift| + 3σ` widens the drift bound
    /// this client applies to its local validity (docs/design.md "Time", rule 5)
    /// when it exceeds the cluster's.
    pub fn cluster_clock_estimate(&self) -> driftlock_proto::ClockEstimate {
        crate::sync::lock(&self.inner.rate).estimate()
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.config().endpoints.clone()
    }

    /// Requests a node turned away so far because this client had too many
    /// in flight on one connection (each was retried on the same node
    /// after a pause). Stays at 0 while `max_in_flight_per_connection` is
    /// below the nodes' cap.
    pub fn throttled_requests(&self) -> u64 {
        self.inner.transport.throttled()
    }

    /// The client address of the node last seen acting as leader, if any.
    pub fn leader_hint(&self) -> Option<String> {
        self.inner.transport.leader_hint()
    }

    pub(crate) fn spec(&self, what: &'static str, route: Route, delivery: Delivery) -> CallSpec {
        let c = self.config();
        CallSpec {
            what,
            route,
            delivery,
            deadline: Instant::now() + Duration::from_millis(c.op_deadline_ms),
            attempt_timeout: Duration::from_millis(c.request_timeout_ms),
        }
    }

    /// Opens a session asking for `ttl` of validity per keepalive. The
    /// returned [`Session`] keeps itself alive in the background until it
    /// is closed or dropped.
    ///
    /// ```no_run
    /// # async fn demo(client: driftlock_client::Client) -> Result<(), driftlock_client::ClientError> {
    /// use std::time::Duration;
    /// use driftlock_client::SessionState;
    ///
    /// let session = client.open_session(Duration::from_secs(10)).await?;
    /// assert_eq!(session.state(), SessionState::Valid);
    /// println!("session {} valid for {:?}", session.id(), session.valid_until() - std::time::Instant::now());
    /// session.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn open_session(&self, ttl: Duration) -> Result<Session> {
        Session::open(self.clone(), ttl).await
    }

    /// A read, from the leader (linearizable) or any node (serializable).
    pub async fn read(&self, query: Query, consistency: Consistency) -> Result<QueryReply> {
        let route = match consistency {
            Consistency::Linearizable => Route::Leader,
            Consistency::Serializable => Route::Any,
        };
        self.inner
            .transport
            .call(self.spec("read", route, Delivery::Idempotent), |api, ctx| {
                let query = query.clone();
                async move { api.read(ctx, query, consistency).await }
            })
            .await
    }

    /// A key's value and revisions (linearizable); `None` if absent.
    pub async fn kv_get(&self, key: &str) -> Result<Option<KvView>> {
        self.kv_get_with(key, Consistency::Linearizable).await
    }

    /// A key, with the given consistency.
    pub async fn kv_get_with(&self, key: &str, consistency: Consistency) -> Result<Option<KvView>> {
        let reply = self.read(Query::KvGet { key: key.to_owned() }, consistency).await?;
        match reply.result {
            QueryResult::Kv(v) => Ok(v),
            other => Err(unexpected("KvGet", &other)),
        }
    }

    /// Up to `limit` keys starting with `prefix`, in key order.
    ///
    /// A node answers one page at a time (at most
    /// [`MAX_RANGE_KEYS`](driftlock_proto::limits::MAX_RANGE_KEYS) keys and
    /// [`MAX_BATCH_BYTES`](driftlock_proto::limits::MAX_BATCH_BYTES) of
    /// entries); this reads as many pages as `limit` needs. Each page is a
    /// linearizable read of its own: a range spanning pages is not one
    /// atomic snapshot.
    pub async fn kv_range(&self, prefix: &str, limit: u32) -> Result<Vec<(String, KvView)>> {
        let mut out: Vec<(String, KvView)> = Vec::new();
        loop {
            let want = limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX));
            if want == 0 {
                return Ok(out);
            }
            let query = Query::KvRange {
                prefix: prefix.to_owned(),
                start_after: out.last().map(|(k, _)| k.clone()),
                limit: want,
            };
            match self.read(query, Consistency::Linearizable).await?.result {
                QueryResult::KvRange { entries, more } => {
                    let progressed = !entries.is_empty();
                    out.extend(entries);
                    if !more || !progressed {
                        return Ok(out);
                    }
                }
                other => return Err(unexpected("KvRange", &other)),
            }
        }
    }

    /// Writes a key outside any session; returns its new revision.
    ///
    /// Sessionless writes are not deduplicated by the cluster, so they are
    /// retried only when they surely did not arrive (connection refused,
    /// `NotLeader`, node unavailable). A write that was sent and timed out
    /// fails with [`ClientError::Indeterminate`] instead of risking a
    /// second application; read the key to find out. Use a session's fenced
    /// writes for exactly-once behaviour.
    pub async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        let reply = self
            .kv_write(KvWrite::Put {
                key: key.to_owned(),
                value,
            })
            .await?;
        revision_of(reply)
    }

    /// Compare-and-set on the key's modification revision (0: the key must
    /// not exist); returns the new revision. Retried like [`kv_put`](Self::kv_put).
    pub async fn kv_cas(&self, key: &str, expected_revision: u64, value: Vec<u8>) -> Result<u64> {
        let reply = self
            .kv_write(KvWrite::Cas {
                key: key.to_owned(),
                expected_revision,
                value,
            })
            .await?;
        revision_of(reply)
    }

    /// Deletes a key (`Rejected(KeyNotFound)` if absent); returns the
    /// revision of the delete. Retried like [`kv_put`](Self::kv_put).
    pub async fn kv_delete(&self, key: &str) -> Result<u64> {
        let reply = self.kv_write(KvWrite::Delete { key: key.to_owned() }).await?;
        revision_of(reply)
    }

    /// A sessionless KV write (see [`kv_put`](Self::kv_put) for retries).
    pub async fn kv_write(&self, write: KvWrite) -> Result<Reply> {
        self.inner
            .transport
            .call(
                self.spec("kv_write", Route::Leader, Delivery::AtMostOnce),
                |api, ctx| {
                    let write = write.clone();
                    async move { api.kv_write(ctx, write).await }
                },
            )
            .await
    }

    /// One `observe` long-poll: events of commands after revision `after_index`
    /// matching `filter`, waiting up to `wait` on the node for some. Served
    /// by any node; retried on another when one fails.
    pub async fn observe(&self, after_index: u64, filter: EventFilter, wait: Duration) -> Result<EventBatch> {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let mut spec = self.spec("observe", Route::Any, Delivery::Idempotent);
        spec.attempt_timeout += wait;
        spec.deadline += wait;
        self.inner
            .transport
            .call(spec, |api, ctx| {
                let filter = filter.clone();
                async move { api.observe(ctx, after_index, filter, wait_ms).await }
            })
            .await
    }

    /// Leader changes of an election, without campaigning (see
    /// [`LeaderWatch`]).
    pub fn watch_election(&self, name: &str) -> LeaderWatch {
        LeaderWatch::new(self.clone(), name.to_owned())
    }

    /// The status one node reports of itself (no retries on other nodes;
    /// one request timeout of budget).
    pub async fn status_of(&self, endpoint: &str) -> Result<NodeStatus> {
        check_endpoint(endpoint)?;
        let mut spec = self.spec("status", Route::Exact(endpoint.to_owned()), Delivery::Idempotent);
        spec.deadline = Instant::now() + spec.attempt_timeout;
        self.inner
            .transport
            .call(spec, |api, ctx| async move { api.status(ctx).await.map(Ok) })
            .await
    }

    /// Cluster administration, sent to the leader. `Init` is sent to the
    /// first configured endpoint instead (use [`admin_at`](Self::admin_at)
    /// to choose). Admin requests can take long (a learner catching up), so
    /// one attempt may last `op_deadline_ms`; they are retried only when
    /// they surely did not arrive, like sessionless writes.
    pub async fn admin(&self, request: AdminRequest) -> Result<AdminReply> {
        let route = match &request {
            AdminRequest::Init { .. } => Route::Exact(self.config().endpoints[0].clone()),
            _ => Route::Leader,
        };
        self.admin_via(route, request).await
    }

    /// An admin request to one given node.
    pub async fn admin_at(&self, endpoint: &str, request: AdminRequest) -> Result<AdminReply> {
        check_endpoint(endpoint)?;
        self.admin_via(Route::Exact(endpoint.to_owned()), request).await
    }

    async fn admin_via(&self, route: Route, request: AdminRequest) -> Result<AdminReply> {
        let mut spec = self.spec("admin", route, Delivery::AtMostOnce);
        spec.attempt_timeout = spec
            .attempt_timeout
            .max(Duration::from_millis(self.config().op_deadline_ms));
        self.inner
            .transport
            .call(spec, |api, ctx| {
                let request = request.clone();
                async move { api.admin(ctx, request).await }
            })
            .await
    }
}

pub(crate) fn revision_of(reply: Reply) -> Result<u64> {
    match reply {
        Reply::KvWritten { revision } => Ok(revision),
        other => Err(ClientError::UnexpectedReply(format!("{other:?} to a KV write"))),
    }
}

pub(crate) fn unexpected(query: &str, result: &QueryResult) -> ClientError {
    ClientError::UnexpectedReply(format!("{result:?} to a {query} query"))
}
