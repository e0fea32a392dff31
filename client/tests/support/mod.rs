//! Real nodes for the client tests: a single-node cluster (Raft roles do
//! not matter to most tests, and one node starts fast) with a
//! fault-injecting proxy in front of its client port (`driftlock-testkit`).
//!
//! The client under test talks through the proxy; the tests read the
//! cluster's state directly from the node with linearizable reads, so what
//! they check is what the server really holds.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use driftlock_proto::{
    Consistency, DriftlockApiClient, ElectionView, LockView, Query, QueryReply, QueryResult, SessionId, SessionView,
};
#[allow(unused_imports)]
pub use driftlock_testkit::{eventually_async, DropMode, FaultProxy, ProxyTls, TestCluster};

/// Timeout of the tests' own calls to the node.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One node and a proxy in front of it.
pub struct Node {
    /// The node process (killed on drop).
    pub cluster: TestCluster,
    /// The proxy clients connect through.
    pub proxy: FaultProxy,
    api: DriftlockApiClient,
}

/// `serve` flags that make the leader suspect a session soon after its
/// keepalives stop (docs/design.md "Predictive failure analysis"): phi is
/// trusted after two keepalive gaps and suspects at a lower value than by
/// default, and a suspected session has 3 s to answer its probe.
pub fn quick_suspicion_args() -> Vec<String> {
    [
        "--predict-min-keepalives",
        "2",
        "--predict-phi-threshold",
        "3",
        "--predict-min-stddev-ms",
        "100",
        "--predict-probe-timeout-ms",
        "3000",
    ]
    .map(String::from)
    .to_vec()
}

impl Node {
    /// A new single-node cluster with default settings.
    pub async fn start() -> Node {
        Node::start_with(Vec::new()).await
    }

    /// A new single-node cluster with these extra `serve` flags.
    pub async fn start_with(args: Vec<String>) -> Node {
        let cluster = TestCluster::start_with(1, move |_| args.clone()).await;
        let proxy = cluster.proxy(0).await;
        let api = driftlock_proto::connect(cluster.client_addr(0), CALL_TIMEOUT, &cluster.security())
            .await
            .expect("connect to the node");
        Node { cluster, proxy, api }
    }

    /// The address clients connect to (the proxy's).
    pub fn addr(&self) -> String {
        self.proxy.addr()
    }

    /// The node's own client address (no faults on this path).
    pub fn node_addr(&self) -> String {
        self.cluster.client_addr(0).to_owned()
    }

    /// Another proxy to the node, for a client whose traffic alone should
    /// suffer.
    pub async fn another_proxy(&self) -> FaultProxy {
        self.cluster.proxy(0).await
    }

    /// A linearizable read, straight from the node.
    pub async fn read(&self, query: Query) -> QueryReply {
        self.api
            .read(driftlock_proto::context(CALL_TIMEOUT), query, Consistency::Linearizable)
            .await
            .expect("read rpc")
            .expect("read")
    }

    /// The cluster's view of a session (`None` once it ended).
    pub async fn session_view(&self, session: SessionId) -> Option<SessionView> {
        match self.read(Query::Session { session }).await.result {
            QueryResult::Session(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The cluster's view of a lock (`None` when free).
    pub async fn lock_view(&self, name: &str) -> Option<LockView> {
        match self.read(Query::Lock { name: name.into() }).await.result {
            QueryResult::Lock(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The cluster's view of an election.
    pub async fn election_view(&self, name: &str) -> Option<ElectionView> {
        match self.read(Query::Election { name: name.into() }).await.result {
            QueryResult::Election(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The session's view and, as a local instant, a lower bound of when
    /// its cluster deadline passes (the read's send time plus the validity
    /// it had left when the leader answered).
    pub async fn session_deadline(&self, session: SessionId) -> Option<(SessionView, Instant)> {
        let sent = Instant::now();
        let view = self.session_view(session).await?;
        let deadline = sent + Duration::from_micros(view.remaining_us);
        Some((view, deadline))
    }

    /// Polls until `session` waits for the lock `name`.
    pub async fn wait_until_queued(&self, name: &str, session: SessionId, timeout: Duration) -> bool {
        eventually_async(timeout, || async move {
            self.lock_view(name)
                .await
                .is_some_and(|v| v.waiters.iter().any(|(s, _)| *s == session))
        })
        .await
    }

    /// Polls until `session` is a candidate in the election `name`.
    pub async fn wait_until_candidate(&self, name: &str, session: SessionId, timeout: Duration) -> bool {
        eventually_async(timeout, || async move {
            self.election_view(name)
                .await
                .is_some_and(|v| v.candidates.contains(&session))
        })
        .await
    }

    /// Makes the cluster revoke `session` on its own, as it revokes a
    /// client it predicts dead (the node must run with
    /// [`quick_suspicion_args`]): the session's traffic through `proxy`
    /// stalls until the leader suspects it, then flows again except the
    /// answer to the probe, so the probe deadline passes unanswered.
    pub async fn revoke_by_unanswered_probe(&self, proxy: &FaultProxy, session: SessionId) {
        let rule = proxy.block(move |r| {
            matches!(r, driftlock_proto::DriftlockApiRequest::SessionOp {
                session: s,
                op: driftlock_proto::SessionOp::ProbeAnswer,
                ..
            } if *s == session)
        });
        proxy.pause();
        let suspected = eventually_async(Duration::from_secs(5), || async move {
            self.session_view(session)
                .await
                .is_some_and(|v| v.suspicion_permille.is_some())
        })
        .await;
        proxy.resume();
        assert!(suspected, "the stalled session {session} was not suspected");
        let revoked = eventually_async(Duration::from_secs(20), || async move {
            self.session_view(session).await.is_none()
        })
        .await;
        assert!(revoked, "the unanswered probe did not revoke session {session}");
        proxy.unblock(rule);
    }
}

/// Client configuration for tests of `cluster`: its administrator's
/// certificate, fast retries, short timeouts.
pub fn client_config(cluster: &TestCluster, endpoints: Vec<String>) -> driftlock_client::ClientConfig {
    driftlock_client::ClientConfig {
        client_name: "test".into(),
        request_timeout_ms: 1_000,
        op_deadline_ms: 5_000,
        backoff_min_ms: 10,
        backoff_max_ms: 200,
        observe_wait_ms: 1_000,
        poll_interval_ms: 300,
        ..cluster.client_config(endpoints)
    }
}

/// `driftlock_rpc_latency_seconds_count{method="…"}` of the node whose
/// Prometheus endpoint is `metrics_addr`: requests it handled by method.
pub fn rpc_count(metrics_addr: &str, method: &str) -> u64 {
    let series = format!("driftlock_rpc_latency_seconds_count{{method=\"{method}\"}}");
    driftlock_testkit::prom::sample(&driftlock_testkit::prom::scrape(metrics_addr), &series)
}
