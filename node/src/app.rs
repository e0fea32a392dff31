//! `driftlock serve`, one node's life: open the store, start Raft, start
//! the servers and the background loops as supervised [`Tasks`], wait for
//! a shutdown request (or for a task to end on its own), then drain and
//! stop.

use openraft::type_config::async_runtime::WatchReceiver;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::Event;
use driftlock_raft_store::{NodeAddr, SmNotice, Store, StoreConfig};
use driftlock_state_machine::Command;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::clock::ClusterClock;
use crate::config::NodeConfig;
use crate::events::EventBuffer;
use crate::listener::Acceptor;
use crate::metrics::Metrics;
use crate::network::{Network, Raft};
use crate::server::NodeContext;
use crate::tasks::{Stop, TaskEnded, Tasks};
use crate::tls::NodeSecurity;

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store refused to open (corruption names the tree and key).
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// The data directory (`[node] data_dir`) the store was opened in.
        dir: String,
        /// What the store reported; a corruption names the sled tree and key.
        source: driftlock_raft_store::StoreError,
    },
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address as configured; also reported when it is not an
        /// `ip:port`.
        addr: String,
        /// `raft`, `client` or `metrics`.
        what: &'static str,
        /// Why binding failed (e.g. the address is in use), or `InvalidInput`
        /// for an address that does not parse.
        source: std::io::Error,
    },
    /// The TLS files are missing, unreadable or not this node's.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsSetupError),
    /// openraft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// A server or background task ended on its own; the node shut down
    /// rather than run without it.
    #[error("{0}; the node shut down")]
    TaskEnded(TaskEnded),
}

/// Flags of `driftlock serve` that change how the node runs but are not
/// settings (never read from a file or the environment).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop when the process that started this one is gone (`dev`).
    pub exit_with_parent: bool,
    /// UNSAFE, jepsen's negative test only: cluster time runs
    /// [`UNSAFE_CLUSTER_TIME_SPEEDUP`](crate::config::UNSAFE_CLUSTER_TIME_SPEEDUP)×
    /// fast (`--unsafe-fast-cluster-time`).
    pub unsafe_fast_cluster_time: bool,
}

/// Runs a node until SIGTERM / Ctrl-C (or, with `exit_with_parent`, until
/// the parent process is gone): then it refuses new requests, lets the ones
/// in flight finish for up to [`DRAIN_LIMIT`], shuts Raft down and returns
/// `Ok`. If one of its tasks ends on its own (an error or a panic), the
/// node shuts down the same way and returns [`NodeError::TaskEnded`].
pub async fn run(config: NodeConfig, options: RunOptions) -> Result<(), NodeError> {
    // Certificates first: a node that cannot authenticate must not touch
    // its store.
    let security = NodeSecurity::from_config(&config)?;
    let store = open_store(&config)?;
    // Subscribed before Raft starts applying, so the pump misses no event.
    let notices = store.state_machine.reader().subscribe();
    let node = start_raft(&config, options, store, security).await?;
    let mut tasks = Tasks::default();
    tasks.spawn("event pump", Stop::AfterRaft, event_pump(notices, node.clone()));
    if let Err(e) = start_servers(&config, &node, &mut tasks).await {
        stop(&node, &mut tasks).await;
        return Err(e);
    }
    start_loops(&config, &node, &mut tasks);
    tracing::info!(id = config.node.id, raft = %config.node.raft_addr, client = %config.node.client_addr, "driftlock node serving");

    let ended = tokio::select! {
        () = shutdown_requested(options.exit_with_parent) => None,
        ended = tasks.ended() => Some(ended),
    };
    match &ended {
        None => tracing::info!("shutting down: refusing new requests, finishing in-flight ones"),
        Some(e) => tracing::error!("{e}: shutting the node down"),
    }
    stop(&node, &mut tasks).await;
    tracing::info!("stopped");
    match ended {
        None => Ok(()),
        Some(e) => Err(NodeError::TaskEnded(e)),
    }
}

/// Longest time a shutting-down node waits for requests in flight.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Opens the sled store in the data directory.
fn open_store(config: &NodeConfig) -> Result<Store, NodeError> {
    let store_config = store_config(config);
    driftlock_raft_store::open_with(&config.node.data_dir, &store_config).map_err(|source| NodeError::Store {
        dir: config.node.data_dir.display().to_string(),
        source,
    })
}

fn store_config(config: &NodeConfig) -> StoreConfig {
    StoreConfig {
        snapshot_every_entries: config.raft.snapshot_every_entries,
        entries_kept_after_snapshot: config.raft.log_kept_after_snapshot,
        cache_capacity_bytes: mib_to_bytes(config.raft.store_cache_mib) as u64,
        ..StoreConfig::default()
    }
}

/// MiB to bytes, saturating (the settings are validated positive).
fn mib_to_bytes(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}

/// Starts Raft on the store and builds what the servers and loops share.
async fn start_raft(
    config: &NodeConfig,
    options: RunOptions,
    store: Store,
    security: NodeSecurity,
) -> Result<Arc<NodeContext>, NodeError> {
    let stamps = store.log_store.stamp_handle();
    let state = store.state_machine.reader();
    // A node that had applied entries before is restarting: a failure for
    // its health history.
    let restarted = state.with_state(|sm| sm.last_index() > 0);
    // The events of every command up to the snapshot the state was
    // restored from were never published in this process (those above it
    // are, as openraft re-applies them): observers behind it must be told.
    // Events are numbered by revision (docs/design.md "Batched proposals").
    let restored_through = state.with_state(|sm| sm.last_revision());

    // Before the log store goes to openraft: its flushes feed the fsync
    // histogram from the first one.
    let metrics = Arc::new(Metrics::new());
    let fsync_seconds = metrics.fsync_seconds.clone();
    store
        .log_store
        .observe_flushes(move |elapsed| fsync_seconds.observe(elapsed.as_secs_f64()));

    let mut raft_config = openraft::Config {
        cluster_name: "driftlock".into(),
        heartbeat_interval: config.raft.heartbeat_ms,
        election_timeout_min: config.raft.election_timeout_min_ms,
        election_timeout_max: config.raft.election_timeout_max_ms,
        enable_tick: true,
        // A follower asks its peers whether it would win before it raises
        // its term: a node cut off, paused or removed from the voters
        // (whose requests its peers refuse) cannot inflate its term and
        // unseat a healthy leader when it comes back (docs/design.md,
        // "Membership changes").
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    store_config(config).apply_to(&mut raft_config);
    let raft_config = Arc::new(raft_config.validate().map_err(|e| NodeError::Raft(e.to_string()))?);
    let raft: Raft = openraft::Raft::new(
        config.node.id,
        raft_config,
        Network {
            security: security.clone(),
            append_timeout: Duration::from_millis(config.raft.rpc_timeout_ms),
        },
        store.log_store,
        store.state_machine,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;

    let clock_sync = Arc::new(crate::clocksync::ClockSync::new(
        crate::clocksync::ClockSyncConfig::from_node(config),
    ));
    let speedup = if options.unsafe_fast_cluster_time {
        tracing::warn!("UNSAFE: --unsafe-fast-cluster-time: cluster time runs fast, locks are NOT safe");
        crate::config::UNSAFE_CLUSTER_TIME_SPEEDUP
    } else {
        1
    };
    let (proposals, proposal_receiver) = crate::batch::queue();
    let ctx = Arc::new(NodeContext {
        id: config.node.id,
        addr: NodeAddr {
            raft_addr: config.node.raft_addr.clone(),
            client_addr: config.node.client_addr.clone(),
        },
        raft,
        security,
        stamps,
        state,
        events: Arc::new(EventBuffer::restored(
            config.events.buffer_len,
            mib_to_bytes(config.events.buffer_mib),
            restored_through,
        )),
        clock: ClusterClock::with_bound(clock_sync.rho_hi_handle()).with_unsafe_speedup(speedup),
        stopping: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        metrics: metrics.clone(),
        health: crate::health::NodeHealth::new(config, restarted),
        clock_sync,
        predict: Arc::new(crate::predict::Predictor::new(
            crate::predict::PredictConfig::from_node(config),
            metrics,
        )),
        proposals,
    });
    tokio::spawn(crate::batch::run(Arc::downgrade(&ctx), proposal_receiver));
    Ok(ctx)
}

/// Binds the Raft, client and metrics ports and runs their accept loops.
async fn start_servers(config: &NodeConfig, ctx: &Arc<NodeContext>, tasks: &mut Tasks) -> Result<(), NodeError> {
    let n = &config.node;
    let acceptor = |port, caps| Acceptor {
        security: ctx.security.clone(),
        handshake_timeout: Duration::from_millis(config.tls.handshake_timeout_ms),
        metrics: ctx.metrics.clone(),
        port,
        caps,
    };
    let raft_server = crate::network::serve(
        parse(&n.raft_addr, "raft")?,
        ctx.raft.clone(),
        ctx.clock_sync.clone(),
        acceptor("raft", crate::listener::Caps::RAFT),
    )
    .await
    .map_err(|source| bind_error(&n.raft_addr, "raft", source))?;
    tasks.spawn("raft server", Stop::AfterRaft, raft_server);
    let client_server = crate::server::serve(
        parse(&n.client_addr, "client")?,
        ctx.clone(),
        acceptor("client", crate::listener::Caps::CLIENT),
    )
    .await
    .map_err(|source| bind_error(&n.client_addr, "client", source))?;
    tasks.spawn("client server", Stop::WithRequests, client_server);
    if let Some(addr) = &n.metrics_addr {
        let metrics_server = crate::http::serve(parse(addr, "metrics")?, ctx.clone())
            .await
            .map_err(|source| bind_error(addr, "metrics", source))?;
        tasks.spawn("metrics server", Stop::BeforeRaft, metrics_server);
    }
    Ok(())
}

/// Starts the background loops: idle ticks, gauges, health reports,
/// handovers, clock sampling, failure prediction.
fn start_loops(config: &NodeConfig, ctx: &Arc<NodeContext>, tasks: &mut Tasks) {
    tasks.spawn("raft core", Stop::BeforeRaft, raft_core_watch(ctx.raft.metrics()));
    let tick_interval = Duration::from_millis(config.raft.tick_interval_ms);
    tasks.spawn("idle ticker", Stop::BeforeRaft, tick_loop(ctx.clone(), tick_interval));
    tasks.spawn("gauges", Stop::BeforeRaft, gauge_loop(ctx.clone()));
    tasks.spawn(
        "health reports",
        Stop::BeforeRaft,
        crate::health::report_loop(ctx.clone()),
    );
    tasks.spawn(
        "handover controller",
        Stop::BeforeRaft,
        crate::handover::controller_loop(ctx.clone()),
    );
    tasks.spawn(
        "clock sync",
        Stop::BeforeRaft,
        crate::clocksync::run(ctx.clone(), ctx.clock_sync.clone()),
    );
    tasks.spawn("failure prediction", Stop::BeforeRaft, crate::predict::run(ctx.clone()));
    tasks.spawn(
        "certificate reload",
        Stop::BeforeRaft,
        crate::tls::reload_on_sighup(ctx.security.clone()),
    );
}

/// What `Raft::metrics` returns: a watch of openraft's metrics.
type RaftMetricsWatch = openraft::type_config::alias::WatchReceiverOf<
    driftlock_raft_store::TypeConfig,
    openraft::RaftMetrics<driftlock_raft_store::TypeConfig>,
>;

/// Returns when openraft's core stopped on its own — a storage error, or a
/// panic inside it (`running_state` is `Err`, or its metrics channel
/// closed) — so the node shuts down as for any supervised task that ends
/// (`tasks.rs`). Without it the node would run half-alive: its ports
/// answer and `status` shows the role it last had (a stopped leader still
/// says `Leader`), while every write fails and clients keep coming back.
/// The exit lets a supervisor (systemd's `Restart=on-failure`) restart it.
async fn raft_core_watch(mut metrics: RaftMetricsWatch) {
    loop {
        if let Err(fatal) = &metrics.borrow_watched().running_state {
            tracing::error!(error = %fatal, "the Raft core stopped");
            return;
        }
        if metrics.changed().await.is_err() {
            tracing::error!("the Raft core stopped: its metrics channel closed");
            return;
        }
    }
}

/// Shuts the node down: refuses new requests and stops the client port,
/// waits up to [`DRAIN_LIMIT`] for requests in flight, stops the loops,
/// shuts Raft down, then stops and joins every task left.
async fn stop(ctx: &NodeContext, tasks: &mut Tasks) {
    ctx.stopping.store(true, Ordering::SeqCst);
    tasks.stop(Stop::WithRequests);
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    while ctx.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tasks.stop(Stop::BeforeRaft);
    if let Err(e) = ctx.raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    tasks.shutdown().await;
}

fn parse(addr: &str, what: &'static str) -> Result<std::net::SocketAddr, NodeError> {
    addr.parse().map_err(|_| {
        bind_error(
            addr,
            what,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an ip:port address"),
        )
    })
}

fn bind_error(addr: &str, what: &'static str, source: std::io::Error) -> NodeError {
    NodeError::Bind {
        addr: addr.to_owned(),
        what,
        source,
    }
}

/// The log line every node writes when it applies a `SetConfig`: the new
/// revision and each setting changed, `key: old → new`.
fn log_config_change(revision: u64, changes: &[driftlock_proto::ConfigChange]) {
    if changes.is_empty() {
        tracing::info!(revision, "replicated config set again, unchanged");
        return;
    }
    let changed = changes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ");
    tracing::info!(revision, %changed, "replicated config changed");
}

/// Moves applied events from the state machine's broadcast into the
/// observe buffer, the predictor and the grant metrics.
async fn event_pump(mut notices: broadcast::Receiver<SmNotice>, ctx: Arc<NodeContext>) {
    let events = &ctx.events;
    loop {
        match notices.recv().await {
            Ok(SmNotice::Applied(applied)) => {
                for (_, e) in &applied.events {
                    match e {
                        Event::LockGranted { validity_us, .. } => {
                            ctx.metrics.grants.inc();
                            ctx.metrics.grant_validity_seconds.observe(*validity_us as f64 / 1e6);
                        }
                        Event::ConfigChanged { revision, changes } => log_config_change(*revision, changes),
                        Event::SessionEnded { cause, .. } => ctx.metrics.session_ended(cause),
                        _ => {}
                    }
                }
                ctx.predict.on_events(applied.events.iter().map(|(_, e)| e));
                events.push_tagged(applied.events);
            }
            Ok(SmNotice::SnapshotInstalled {
                last_index,
                last_revision,
            }) => {
                tracing::info!(last_index, last_revision, "installed a snapshot from the leader");
                ctx.metrics.snapshots_installed.inc();
                events.mark_gap(last_revision);
            }
            Err(RecvError::Lagged(_)) => events.mark_gap(events.newest_index().saturating_add(1)),
            Err(RecvError::Closed) => break,
        }
    }
}

/// On the leader, commits a `Tick` whenever the log has been idle for
/// `interval`, so expiries happen without traffic.
async fn tick_loop(ctx: Arc<NodeContext>, interval: Duration) {
    let mut timer = tokio::time::interval(interval / 2);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        timer.tick().await;
        if !ctx.raft.is_leader() {
            continue;
        }
        let idle = ctx.stamps.last_stamp().is_none_or(|(_, at)| at.elapsed() >= interval);
        if idle {
            if let Err(e) = ctx.propose(Command::Tick).await {
                tracing::debug!("tick not committed: {e}");
            }
        }
    }
}

/// Refreshes the gauges from Raft metrics and the applied state.
async fn gauge_loop(ctx: Arc<NodeContext>) {
    let mut timer = tokio::time::interval(Duration::from_millis(500));
    let mut last_leader = None;
    loop {
        timer.tick().await;
        let m = ctx.raft.metrics().borrow_watched().clone();
        let metrics = &ctx.metrics;
        metrics.term.set(m.current_term as i64);
        if m.current_leader != last_leader {
            if m.current_leader.is_some() {
                metrics.leader_changes.inc();
            }
            last_leader = m.current_leader;
        }
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
        metrics.last_log_index.set(last as i64);
        metrics
            .committed_index
            .set(m.local_committed.as_ref().map_or(0, |l| l.index) as i64);
        metrics.applied_index.set(applied as i64);
        metrics.apply_lag.set(last.saturating_sub(applied) as i64);
        metrics
            .is_leader
            .set(i64::from(m.state == openraft::ServerState::Leader));
        let stats = ctx.state.with_state(|sm| sm.stats());
        metrics.sessions.set(stats.sessions as i64);
        metrics.held_locks.set(stats.held_locks as i64);
        metrics.waiters.set(stats.waiters as i64);
        metrics.store.set(&ctx.state.timings());
        if let Some(left_s) = ctx.security.expires_in_s() {
            metrics.security.cert_expiry_seconds.set(left_s);
        }
    }
}

/// Returns on SIGTERM or Ctrl-C, or, with `exit_with_parent`, when the
/// parent process is gone.
async fn shutdown_requested(exit_with_parent: bool) {
    let parent = std::os::unix::process::parent_id();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            None
        }
    };
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => return,
            _ = poll.tick() => {
                if exit_with_parent && std::os::unix::process::parent_id() != parent {
                    tracing::info!("parent process exited");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod core_watch_tests {
    use super::raft_core_watch;
    use driftlock_raft_store::TypeConfig;
    use openraft::error::Fatal;
    use openraft::type_config::async_runtime::WatchSender;
    use openraft::type_config::TypeConfigExt;
    use openraft::RaftMetrics;
    use std::time::Duration;

    /// The watch keeps waiting while the core runs, and returns once the
    /// core reports a fatal stop (a panic inside it, a storage error).
    #[tokio::test]
    async fn returns_when_the_core_stops_and_not_before() {
        let (tx, rx) = TypeConfig::watch_channel(RaftMetrics::<TypeConfig>::new_initial(1));
        let watch = tokio::spawn(raft_core_watch(rx));
        let mut running = RaftMetrics::<TypeConfig>::new_initial(1);
        running.current_term = 3;
        tx.send(running.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!watch.is_finished(), "returned while the core runs");
        running.running_state = Err(Fatal::Panicked);
        tx.send(running).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the watch saw the core stop")
            .unwrap();
    }

    /// A closed metrics channel (the core and its sender are gone) ends
    /// the watch too.
    #[tokio::test]
    async fn returns_when_the_metrics_channel_closes() {
        let (tx, rx) = TypeConfig::watch_channel(RaftMetrics::<TypeConfig>::new_initial(1));
        let watch = tokio::spawn(raft_core_watch(rx));
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the watch saw the channel close")
            .unwrap();
    }
}
