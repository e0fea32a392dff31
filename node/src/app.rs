//! `driftlock serve`: opens the store, starts Raft, the Raft and client
//! servers, the idle ticker, the event pump and metrics, and shuts down
//! cleanly on SIGTERM or Ctrl-C.

use openraft::type_config::async_runtime::WatchReceiver;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_proto::Event;
use driftlock_raft_store::{NodeAddr, SmNotice, StoreConfig};
use driftlock_state_machine::Command;
use tokio::sync::broadcast::error::RecvError;

use crate::clock::ClusterClock;
use crate::config::NodeConfig;
use crate::events::EventBuffer;
use crate::metrics::Metrics;
use crate::network::{Network, Raft};
use crate::server::NodeContext;

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store refused to open (corruption names the tree and key).
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// Data directory.
        dir: String,
        /// Cause.
        source: driftlock_raft_store::StoreError,
    },
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Which listener.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// openraft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// Runs a node until SIGTERM / Ctrl-C (or, with `exit_with_parent`, until
/// the parent process is gone).
pub async fn run(config: NodeConfig, exit_with_parent: bool) -> Result<(), NodeError> {
    let started = Instant::now();
    let store_config = StoreConfig {
        snapshot_every_entries: config.snapshot_every_entries,
        ..StoreConfig::default()
    };
    let dir = config.data_dir.display().to_string();
    let store =
        driftlock_raft_store::open_with(&config.data_dir, &store_config).map_err(|source| NodeError::Store {
            dir: dir.clone(),
            source,
        })?;
    let stamps = store.log_store.stamp_handle();
    let state = store.state_machine.reader();
    // A node that had applied entries before is restarting: a failure for
    // its health history.
    let restarted = state.with_state(|sm| sm.last_index() > 0);
    let mut notices = state.subscribe();

    let mut raft_config = openraft::Config {
        cluster_name: "driftlock".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        enable_tick: true,
        ..Default::default()
    };
    store_config.apply_to(&mut raft_config);
    let raft_config = Arc::new(raft_config.validate().map_err(|e| NodeError::Raft(e.to_string()))?);
    let raft: Raft = openraft::Raft::new(config.id, raft_config, Network, store.log_store, store.state_machine)
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;

    let metrics = Arc::new(Metrics::new());
    let clock_sync = Arc::new(crate::clocksync::ClockSync::new(
        crate::clocksync::ClockSyncConfig::from_node(&config),
    ));
    let events = Arc::new(EventBuffer::new(config.event_buffer_len));
    let predict = Arc::new(crate::predict::Predictor::new(
        crate::predict::PredictConfig::from_node(&config),
        metrics.clone(),
    ));
    let ctx = Arc::new(NodeContext {
        id: config.id,
        addr: NodeAddr {
            raft_addr: config.raft_addr.clone(),
            client_addr: config.client_addr.clone(),
        },
        raft: raft.clone(),
        stamps,
        state,
        events: events.clone(),
        clock: ClusterClock::with_bound(clock_sync.rho_hi_handle()).with_unsafe_speedup(
            if config.unsafe_fast_cluster_time {
                tracing::warn!("UNSAFE: --unsafe-fast-cluster-time: cluster time runs fast, locks are NOT safe");
                crate::config::UNSAFE_CLUSTER_TIME_SPEEDUP
            } else {
                1
            },
        ),
        started,
        stopping: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        metrics: metrics.clone(),
        health: crate::health::NodeHealth::new(&config, restarted),
        clock_sync: clock_sync.clone(),
        predict: predict.clone(),
    });

    // Events: from the state machine's broadcast into the observe buffer.
    let pump_metrics = metrics.clone();
    let pump = tokio::spawn(async move {
        loop {
            match notices.recv().await {
                Ok(SmNotice::Applied(applied)) => {
                    for e in &applied.events {
                        if let Event::LockGranted { validity_us, .. } = e {
                            pump_metrics.grants.inc();
                            pump_metrics.grant_validity_seconds.observe(*validity_us as f64 / 1e6);
                        }
                    }
                    predict.on_events(&applied.events);
                    events.push(applied.index, applied.events);
                }
                Ok(SmNotice::SnapshotInstalled { last_index }) => events.mark_gap(last_index),
                Err(RecvError::Lagged(_)) => events.mark_gap(events.newest_index().saturating_add(1)),
                Err(RecvError::Closed) => break,
            }
        }
    });

    let raft_addr = parse(&config.raft_addr, "raft")?;
    let client_addr = parse(&config.client_addr, "client")?;
    let raft_server = crate::network::serve(raft_addr, raft.clone(), clock_sync.clone())
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.raft_addr.clone(),
            what: "raft",
            source,
        })?;
    let client_server = crate::server::serve(client_addr, ctx.clone())
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.client_addr.clone(),
            what: "client",
            source,
        })?;
    let metrics_server = match &config.metrics_addr {
        Some(a) => {
            let addr = parse(a, "metrics")?;
            Some(
                crate::metrics::serve(addr, metrics.clone())
                    .await
                    .map_err(|source| NodeError::Bind {
                        addr: a.clone(),
                        what: "metrics",
                        source,
                    })?,
            )
        }
        None => None,
    };
    let ticker = tokio::spawn(tick_loop(ctx.clone(), Duration::from_millis(config.tick_interval_ms)));
    let gauges = tokio::spawn(gauge_loop(ctx.clone()));
    let health_reports = tokio::spawn(crate::health::report_loop(ctx.clone()));
    let handovers = tokio::spawn(crate::handover::controller_loop(ctx.clone()));
    let clock_task = tokio::spawn(crate::clocksync::run(ctx.clone(), clock_sync.clone()));
    let predict_task = tokio::spawn(crate::predict::run(ctx.clone()));
    tracing::info!(id = config.id, raft = %config.raft_addr, client = %config.client_addr, "driftlock node serving");

    wait_for_shutdown(exit_with_parent).await;
    tracing::info!("shutting down: refusing new requests, finishing in-flight ones");
    ctx.stopping.store(true, Ordering::SeqCst);
    client_server.abort();
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while ctx.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ticker.abort();
    gauges.abort();
    health_reports.abort();
    handovers.abort();
    clock_task.abort();
    predict_task.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    raft_server.abort();
    pump.abort();
    tracing::info!("stopped");
    Ok(())
}

fn parse(addr: &str, what: &'static str) -> Result<std::net::SocketAddr, NodeError> {
    addr.parse().map_err(|_| NodeError::Bind {
        addr: addr.to_owned(),
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an ip:port address"),
    })
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
    }
}

async fn wait_for_shutdown(exit_with_parent: bool) {
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
