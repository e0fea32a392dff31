//! The workloads, all through the `driftlock-client` library.
//!
//! - **register** (in-process tasks): read / write / cas on a few keys with
//!   sessionless linearizable KV calls; a cas is a linearizable read and,
//!   if the value matches, a cas on the read's revision.
//! - **election** (in-process tasks): candidates campaign, hold mastership
//!   for a while (or until the library's loss signal), resign; an observer
//!   records who it sees as master; an operator asks for a warm handover
//!   now and then, so masterships also end by handover. Each mastership's
//!   loss-signal time is recorded with its final interval.
//! - **lock + fenced counter** (separate *worker processes*, this binary's
//!   hidden `worker` subcommand): acquire, read the counter, write it plus
//!   one fenced by the grant's token, release. Workers are processes so
//!   that the pause nemesis can SIGSTOP a client that holds the lock (its
//!   keepalives stop too), as in Jepsen's etcd 3.4.3 analysis. They report
//!   each event as a JSON line on stdout; lock intervals are in
//!   `CLOCK_MONOTONIC` nanoseconds, which the harness maps to history time.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_client::proto::tls::TlsFiles;
use driftlock_client::proto::{AdminRequest, DriftlockApiRequest, SessionOp};
use driftlock_client::{Client, ClientConfig, ClientError, LockOptions, Rejection, Session};
use driftlock_testkit::{FaultProxy, ProxyTls};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::history::{Function, History, LockHold, MasterView, Mastership, Op, OpKind, Value};

/// Register keys of the register workload.
pub const REGISTER_KEYS: [&str; 3] = ["r0", "r1", "r2"];
/// The lock of the lock workload (also names its counter).
pub const LOCK_NAME: &str = "l0";
/// The election of the election workload.
pub const ELECTION_NAME: &str = "e0";

/// The error text of a cas whose comparison failed (a definite `fail`).
pub const CAS_MISMATCH: &str = "value differs";

/// KV key holding the counter fenced by `lock`.
pub fn counter_key(lock: &str) -> String {
    format!("counter/{lock}")
}

/// `CLOCK_MONOTONIC` now, ns (the clock behind `std::time::Instant`).
pub fn mono_now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
            u64::try_from(ns).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// An instant as `CLOCK_MONOTONIC` ns.
pub fn mono_ns_at(instant: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = mono_now_ns();
    if instant >= now {
        now_ns.saturating_add(u64::try_from((instant - now).as_nanos()).unwrap_or(u64::MAX))
    } else {
        now_ns.saturating_sub(u64::try_from((now - instant).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The certificates of the run's cluster (docs/security.md): every
/// workload client connects with `client`, and a proxy that stands in for
/// a node presents `node`.
#[derive(Clone, Debug)]
pub struct RunTls {
    /// The harness's client certificate (an administrator: the operator
    /// workload changes the membership).
    pub client: TlsFiles,
    /// A node certificate, for proxies clients must take for a node.
    pub node: TlsFiles,
}

/// The certificates of the run in progress, `None` for a plain-TCP run.
static RUN_TLS: std::sync::RwLock<Option<RunTls>> = std::sync::RwLock::new(None);

/// Sets the certificates the workloads of this process connect with (a
/// new run, a new CA).
pub fn set_run_tls(tls: Option<RunTls>) {
    *RUN_TLS.write().unwrap_or_else(std::sync::PoisonError::into_inner) = tls;
}

/// The certificates of the run in progress, if it runs TLS.
pub fn run_tls() -> Option<RunTls> {
    RUN_TLS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Client settings of the workloads: short deadlines so that faults show
/// up as failed and indeterminate ops rather than long stalls. The
/// certificates are the run's ([`set_run_tls`]), or in a worker process
/// those its parent passed in `DRIFTLOCK_CA/CERT/KEY`.
pub fn workload_client_config(endpoints: Vec<String>, name: &str) -> ClientConfig {
    let base = ClientConfig::new(endpoints);
    ClientConfig {
        tls: run_tls().map(|t| t.client).or(base.tls.clone()),
        client_name: name.to_owned(),
        request_timeout_ms: 1_000,
        op_deadline_ms: 4_000,
        backoff_min_ms: 20,
        backoff_max_ms: 300,
        keepalive_retry_ms: 100,
        poll_interval_ms: 300,
        observe_wait_ms: 1_000,
        health_report_interval_ms: 0,
        // Workload clients reach the nodes through fault proxies (delay,
        // handover-cut): a leader hint names the node's own address, and
        // following it would leave the proxy behind for good.
        follow_leader_hints: false,
        ..base
    }
}

/// The completion kind of a failed client call: `Info` if it may have
/// taken effect, else `Fail`.
pub fn error_kind(e: &ClientError) -> OpKind {
    if e.is_indeterminate() || matches!(e, ClientError::SessionExpired) {
        OpKind::Info
    } else {
        OpKind::Fail
    }
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Runs the register workload with `procs` processes (ids from
/// `first_process`, a fresh id after every `Info`) until `stop`. Fails
/// when a process cannot connect or panics.
pub async fn run_register(
    endpoints: Vec<String>,
    history: History,
    procs: u64,
    first_process: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let next_value = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for k in 0..procs {
        let endpoints = endpoints.clone();
        let history = history.clone();
        let stop = stop.clone();
        let next_value = next_value.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (0x5eed_0000 + k));
            let client = Client::connect_with(workload_client_config(endpoints, "jepsen-register"))
                .await
                .map_err(|e| format!("process {k} cannot connect: {e}"))?;
            let mut process = first_process + k;
            let mut known = KnownValues::default();
            while !stop.load(Ordering::Relaxed) {
                let key = REGISTER_KEYS[rng.random_range(0..REGISTER_KEYS.len())].to_owned();
                let kind = register_op(&client, &history, process, &key, &mut rng, &next_value, &mut known).await;
                if kind == OpKind::Info {
                    process += procs;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
            Ok::<(), String>(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("a process failed: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Share of cas ops that take `from` from the process's last read or
/// written value of the key (the rest draw it from every value issued, so
/// failed comparisons are exercised too).
pub const CAS_FROM_KNOWN: f64 = 0.8;

/// The last value one register process read or wrote per key: what its
/// next cas expects. An `Info` write forgets the key (its value is
/// unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownValues {
    last: BTreeMap<String, u64>,
}

impl KnownValues {
    /// The last value seen on `key`.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.last.get(key).copied()
    }

    /// `key` holds `value`, as far as this process knows; `None` (absent
    /// key, or an outcome unknown) forgets it.
    pub fn set(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => {
                self.last.insert(key.to_owned(), v);
            }
            None => {
                self.last.remove(key);
            }
        }
    }

    /// The `from` of a cas on `key`: most of the time ([`CAS_FROM_KNOWN`])
    /// the last value seen, else (or when none is known) a value drawn from
    /// `0..issued`.
    pub fn cas_from(&self, key: &str, issued: u64, rng: &mut impl Rng) -> u64 {
        match self.get(key) {
            Some(v) if rng.random_bool(CAS_FROM_KNOWN) => v,
            _ => rng.random_range(0..issued.max(1)),
        }
    }
}

async fn register_op(
    client: &Client,
    history: &History,
    process: u64,
    key: &str,
    rng: &mut StdRng,
    next_value: &AtomicU64,
    known: &mut KnownValues,
) -> OpKind {
    match rng.random_range(0..10) {
        0..=3 => {
            let inv = history.invoke(process, Function::Read { key: key.to_owned() });
            match client.kv_get(key).await {
                Ok(v) => {
                    let value = v.as_ref().and_then(|v| parse_u64(&v.value));
                    known.set(key, value);
                    history.ok(&inv, Value::Register(value));
                    OpKind::Ok
                }
                // A read changes nothing: any error is a failure.
                Err(e) => {
                    history.fail(&inv, Value::Error(e.to_string()));
                    OpKind::Fail
                }
            }
        }
        4..=6 => {
            let value = next_value.fetch_add(1, Ordering::Relaxed);
            let inv = history.invoke(
                process,
                Function::Write {
                    key: key.to_owned(),
                    value,
                },
            );
            match client.kv_put(key, value.to_string().into_bytes()).await {
                Ok(_) => {
                    known.set(key, Some(value));
                    history.ok(&inv, Value::None);
                    OpKind::Ok
                }
                Err(e) => {
                    let kind = error_kind(&e);
                    if kind == OpKind::Info {
                        known.set(key, None);
                    }
                    history.complete(&inv, kind, Value::Error(e.to_string()));
                    kind
                }
            }
        }
        _ => {
            let from = known.cas_from(key, next_value.load(Ordering::Relaxed), rng);
            let to = next_value.fetch_add(1, Ordering::Relaxed);
            let inv = history.invoke(
                process,
                Function::Cas {
                    key: key.to_owned(),
                    from,
                    to,
                },
            );
            let view = match client.kv_get(key).await {
                Ok(v) => v,
                Err(e) => {
                    history.fail(&inv, Value::Error(format!("read before cas: {e}")));
                    return OpKind::Fail;
                }
            };
            let current = view.as_ref().and_then(|v| parse_u64(&v.value));
            let Some(view) = view.filter(|_| current == Some(from)) else {
                // The read is not recorded as an op of its own, but this
                // process saw it: the next cas expects it.
                known.set(key, current);
                history.fail(&inv, Value::Error(CAS_MISMATCH.into()));
                return OpKind::Fail;
            };
            match client.kv_cas(key, view.mod_revision, to.to_string().into_bytes()).await {
                Ok(_) => {
                    known.set(key, Some(to));
                    history.ok(&inv, Value::None);
                    OpKind::Ok
                }
                Err(e) => {
                    let kind = error_kind(&e);
                    if kind == OpKind::Info {
                        known.set(key, None);
                    }
                    history.complete(&inv, kind, Value::Error(e.to_string()));
                    kind
                }
            }
        }
    }
}

/// Final reads of the register keys and counters: each retried until it
/// succeeds or `timeout` passes. Fails naming what could not be read.
pub async fn final_reads(
    endpoints: Vec<String>,
    history: &History,
    process: u64,
    timeout: Duration,
) -> Result<(), String> {
    let client = Client::connect_with(workload_client_config(endpoints, "jepsen-final"))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut unread = Vec::new();
    for key in REGISTER_KEYS {
        let mut done = false;
        while Instant::now() < deadline {
            let inv = history.invoke(process, Function::Read { key: key.to_owned() });
            match client.kv_get(key).await {
                Ok(v) => {
                    history.ok(&inv, Value::Register(v.as_ref().and_then(|v| parse_u64(&v.value))));
                    done = true;
                    break;
                }
                Err(e) => {
                    history.fail(&inv, Value::Error(e.to_string()));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !done {
            unread.push(key.to_owned());
        }
    }
    let mut counter_done = false;
    while Instant::now() < deadline {
        let inv = history.invoke(
            process,
            Function::CounterRead {
                lock: LOCK_NAME.to_owned(),
            },
        );
        match client.kv_get(&counter_key(LOCK_NAME)).await {
            Ok(v) => {
                let n = v.as_ref().and_then(|v| parse_u64(&v.value)).unwrap_or(0);
                history.ok(&inv, Value::Counter(n));
                counter_done = true;
                break;
            }
            Err(e) => {
                history.fail(&inv, Value::Error(e.to_string()));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !counter_done {
        unread.push(counter_key(LOCK_NAME));
    }
    if unread.is_empty() {
        Ok(())
    } else {
        Err(format!("not read within {timeout:?}: {}", unread.join(", ")))
    }
}

/// Mean pause between the election workload's handover requests, ms.
pub const HANDOVER_EVERY_MS: u64 = 2_000;

/// One election candidate's network, as the handover-cut nemesis sees it:
/// every request the candidate sends passes a proxy that can cut it off
/// right after it sent the last chunk of its handover state.
#[derive(Debug, Default)]
pub struct CutSwitch {
    /// Cut this candidate off once it sends the last state chunk.
    pub armed: AtomicBool,
    /// It sent it: every further request is dropped until healed.
    pub cut: AtomicBool,
}

/// Longest a master holds while the handover-cut nemesis is armed (it
/// usually loses mastership sooner, by the handover).
const ARMED_HOLD: Duration = Duration::from_secs(10);

/// The election workload's candidates' switches, shared with the nemesis.
pub type CutSwitches = Arc<std::sync::Mutex<Vec<Arc<CutSwitch>>>>;

/// Delaying proxies, one in front of each node's client endpoint, through
/// which every workload client reaches the nodes when the run enables the
/// `delay` nemesis (it sets their delay). They terminate TLS as a node
/// would, like the election's cut proxies.
pub async fn delay_proxies(endpoints: &[String]) -> Result<Vec<FaultProxy>, String> {
    let tls = run_tls();
    let mut proxies = Vec::new();
    for ep in endpoints {
        let proxy_tls = match &tls {
            Some(t) => Some(ProxyTls::new(&t.node, &t.client).map_err(|e| format!("proxy certificates: {e}"))?),
            None => None,
        };
        let proxy = FaultProxy::start_tls(ep, proxy_tls)
            .await
            .map_err(|e| format!("delay proxy for {ep}: {e}"))?;
        proxy.set_recording(false);
        proxies.push(proxy);
    }
    Ok(proxies)
}

/// Proxies in front of every endpoint, each dropping the candidate's
/// requests once `switch` says it is cut off; returns them (they live as
/// long as the client) and their addresses.
async fn cut_proxies(endpoints: &[String], switch: &Arc<CutSwitch>) -> Option<(Vec<FaultProxy>, Vec<String>)> {
    let mut proxies = Vec::new();
    let tls = run_tls();
    for ep in endpoints {
        let proxy_tls = match &tls {
            Some(t) => Some(ProxyTls::new(&t.node, &t.client).ok()?),
            None => None,
        };
        let proxy = FaultProxy::start_tls(ep, proxy_tls).await.ok()?;
        proxy.set_recording(false);
        let sw = switch.clone();
        proxy.block(move |r| {
            if sw.cut.load(Ordering::SeqCst) {
                return true;
            }
            let last_chunk = matches!(
                r,
                DriftlockApiRequest::SessionOp {
                    op: SessionOp::HandoverState { last: true, .. },
                    ..
                }
            );
            if last_chunk && sw.armed.load(Ordering::SeqCst) {
                // This chunk still goes through; nothing after it does.
                sw.cut.store(true, Ordering::SeqCst);
            }
            false
        });
        proxies.push(proxy);
    }
    let addrs = proxies.iter().map(FaultProxy::addr).collect();
    Some((proxies, addrs))
}

/// History process id of election candidate `k` (of `candidates`) after
/// `infos` indeterminate ops: a fresh id each time, never the observer's
/// (`first + candidates`) nor the operator's (`first + candidates + 1`)
/// nor another candidate's.
pub fn candidate_process(first: u64, candidates: u64, k: u64, infos: u64) -> u64 {
    first + k + infos * (candidates + 2)
}

/// Runs the election workload: `candidates` campaigning processes, one
/// observer (process `first_process + candidates`) and one operator that
/// asks for a warm handover of the election every ~[`HANDOVER_EVERY_MS`]
/// (recorded as [`Function::Nemesis`] ops of process
/// `first_process + candidates + 1`), until `stop`.
#[allow(clippy::too_many_arguments)]
pub async fn run_election(
    endpoints: Vec<String>,
    history: History,
    candidates: u64,
    first_process: u64,
    session_ttl: Duration,
    seed: u64,
    switches: CutSwitches,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut tasks = Vec::new();
    for k in 0..candidates {
        let endpoints = endpoints.clone();
        let history = history.clone();
        let stop = stop.clone();
        let switches = switches.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (0xe1ec_0000 + k));
            let switch = Arc::new(CutSwitch::default());
            let (_proxies, via) = cut_proxies(&endpoints, &switch)
                .await
                .ok_or_else(|| format!("candidate {k}: cannot start its proxies"))?;
            if let Ok(mut all) = switches.lock() {
                all.push(switch.clone());
            }
            let client = Client::connect_with(workload_client_config(via, "jepsen-election"))
                .await
                .map_err(|e| format!("candidate {k} cannot connect: {e}"))?;
            let mut infos = 0;
            let mut process = candidate_process(first_process, candidates, k, infos);
            while !stop.load(Ordering::Relaxed) {
                let session = match client.open_session(session_ttl).await {
                    Ok(s) => s,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let info = candidate_term(&session, &history, process, &mut rng, &stop, &switch).await;
                let _ = session.close().await;
                if info {
                    infos += 1;
                    process = candidate_process(first_process, candidates, k, infos);
                }
            }
            Ok::<(), String>(())
        }));
    }
    // The operator: warm handovers to whichever candidate the leader picks.
    {
        let history = history.clone();
        let stop = stop.clone();
        let endpoints = endpoints.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x4a4d_0000);
            let client = Client::connect_with(workload_client_config(endpoints, "jepsen-operator"))
                .await
                .map_err(|e| format!("operator cannot connect: {e}"))?;
            let process = first_process + candidates + 1;
            while !stop.load(Ordering::Relaxed) {
                let pause = rng.random_range(HANDOVER_EVERY_MS / 2..HANDOVER_EVERY_MS * 3 / 2);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let request = AdminRequest::Handover {
                    election: ELECTION_NAME.to_owned(),
                    to: None,
                };
                // Refused when there is no master or no candidate: fine.
                if client.admin(request).await.is_ok() {
                    history.observe(
                        process,
                        Function::Nemesis {
                            action: format!("handover {ELECTION_NAME}"),
                        },
                        Value::None,
                    );
                }
            }
            Ok(())
        }));
    }
    // The observer.
    {
        let history = history.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::connect_with(workload_client_config(endpoints, "jepsen-observer"))
                .await
                .map_err(|e| format!("observer cannot connect: {e}"))?;
            // The session opens once the cluster answers; faults may delay it.
            let mut session = None;
            while session.is_none() && !stop.load(Ordering::Relaxed) {
                match client.open_session(session_ttl).await {
                    Ok(s) => session = Some(s),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            let Some(session) = session else {
                return Err("observer never opened a session".to_owned());
            };
            let election = session.election(ELECTION_NAME);
            let process = first_process + candidates;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(m) = election.leader().await {
                    let view = m.map(|(session, _, epoch)| MasterView { epoch, session });
                    history.observe(
                        process,
                        Function::Master {
                            election: ELECTION_NAME.to_owned(),
                        },
                        Value::Master(view),
                    );
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            Ok(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("a task failed: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// One candidate session: campaign, hold until a random time or the loss
/// signal, resign. While the handover-cut nemesis is armed a master holds
/// for up to [`ARMED_HOLD`] instead, so that the handover it asked for
/// reaches the old master's last state chunk rather than losing the race
/// with a resignation (on a loaded host a handover takes longer than the
/// usual 0.2–1.5 s hold). Returns whether an op ended `Info` (the caller
/// then changes process id).
async fn candidate_term(
    session: &Session,
    history: &History,
    process: u64,
    rng: &mut StdRng,
    stop: &AtomicBool,
    switch: &CutSwitch,
) -> bool {
    let election = session.election(ELECTION_NAME);
    let f = Function::Campaign {
        election: ELECTION_NAME.to_owned(),
    };
    let inv = history.invoke(process, f);
    let campaign = tokio::time::timeout(Duration::from_secs(8), election.campaign(b"jepsen".to_vec())).await;
    let leadership = match campaign {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            let kind = error_kind(&e);
            history.complete(&inv, kind, Value::Error(e.to_string()));
            return kind == OpKind::Info;
        }
        Err(_) => {
            // The campaign future was dropped: its candidacy is withdrawn
            // in the background, but it may have won meanwhile.
            history.info(&inv, Value::Error("campaign timed out".into()));
            return true;
        }
    };
    let held_from_ns = history.now_ns();
    let mastership = |until_ns: u64| Mastership {
        epoch: leadership.epoch(),
        session: leadership.session_id(),
        held_from_ns,
        held_until_ns: until_ns.max(held_from_ns),
        lost_ns: leadership.lost_at().map(|t| history.ns_at(t)),
    };
    history.ok(
        &inv,
        Value::Mastership(mastership(history.ns_at(session.valid_until()))),
    );
    let hold = Duration::from_millis(rng.random_range(200..1500));
    let hold = if switch.armed.load(Ordering::SeqCst) {
        ARMED_HOLD
    } else {
        hold
    };
    let end = Instant::now() + hold;
    // The library's loss signal (a handover, the session's end) ends the
    // mastership early; its time is what `lost_at` records.
    while Instant::now() < end && !stop.load(Ordering::Relaxed) && leadership.is_master() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = leadership.lost() => {}
        }
    }
    let inv = history.invoke(
        process,
        Function::Resign {
            election: ELECTION_NAME.to_owned(),
        },
    );
    // Read before resigning: a resignation is itself a loss, at about
    // `inv.time_ns`, which `held_until_ns` already covers.
    let until = history.ns_at(session.valid_until()).min(inv.time_ns);
    let value = Value::Mastership(mastership(until));
    match election.resign().await {
        Ok(()) => {
            history.ok(&inv, value);
            false
        }
        // Handed over: the session already left the election.
        Err(ClientError::Rejected(Rejection::NotCandidate)) => {
            history.fail(&inv, value);
            false
        }
        Err(_) => {
            history.info(&inv, value);
            true
        }
    }
}

// ---------------------------------------------------------------------------
// Lock workers.

/// One event a worker reports (a JSON line on its stdout). Lock intervals
/// in `value` are `CLOCK_MONOTONIC` ns.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// Worker-local process number (0, then +1 after every `Info`).
    pub process: u64,
    /// Invocation or completion.
    pub kind: OpKind,
    /// The operation and its inputs, as [`Op::f`].
    pub f: Function,
    /// Its result, as [`Op::value`]; lock intervals in `CLOCK_MONOTONIC` ns
    /// here, which the harness maps to history time.
    pub value: Value,
}

/// Settings of one lock worker (passed on its command line).
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    /// Client API endpoints.
    pub endpoints: Vec<String>,
    /// TTL of the worker's sessions, ms (`--session-ttl-ms` of the run).
    pub session_ttl_ms: u64,
    /// Seed of its random hold times.
    pub seed: u64,
}

fn emit(out: &mut String, process: u64, kind: OpKind, f: &Function, value: Value) {
    let event = WorkerEvent {
        process,
        kind,
        f: f.clone(),
        value,
    };
    if let Ok(line) = serde_json::to_string(&event) {
        out.push_str(&line);
        out.push('\n');
    }
}

/// The body of the hidden `worker` subcommand: loops acquire → increment
/// → release on [`LOCK_NAME`] until its stdin closes.
pub async fn worker_main(args: WorkerArgs) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut stdin = BufReader::new(tokio::io::stdin());
            let mut line = String::new();
            // EOF (or an error) on stdin means: finish up.
            while matches!(stdin.read_line(&mut line).await, Ok(n) if n > 0) {
                line.clear();
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut stdout = tokio::io::stdout();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let client = Client::connect_with(workload_client_config(args.endpoints.clone(), "jepsen-lock-worker"))
        .await
        .map_err(|e| e.to_string())?;
    let ttl = Duration::from_millis(args.session_ttl_ms);
    let mut process = 0u64;
    let acquire = Function::Acquire {
        lock: LOCK_NAME.to_owned(),
    };
    let increment = Function::Increment {
        lock: LOCK_NAME.to_owned(),
    };
    let release = Function::Release {
        lock: LOCK_NAME.to_owned(),
    };
    let mut session: Option<Session> = None;
    while !stop.load(Ordering::Relaxed) {
        let s = match &session {
            Some(s) if s.is_valid() => s.clone(),
            _ => match client.open_session(ttl).await {
                Ok(s) => {
                    session = Some(s.clone());
                    s
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let mut out = String::new();
        emit(&mut out, process, OpKind::Invoke, &acquire, Value::None);
        flush(&mut stdout, &mut out).await?;
        let opts = LockOptions {
            wait: Duration::from_secs(3),
            ..LockOptions::default()
        };
        let guard = match s.lock_with(LOCK_NAME, opts).await {
            Ok(g) => g,
            Err(e) => {
                let kind = error_kind(&e);
                emit(&mut out, process, kind, &acquire, Value::Error(e.to_string()));
                flush(&mut stdout, &mut out).await?;
                if kind == OpKind::Info {
                    process += 1;
                }
                continue;
            }
        };
        let held_from = mono_now_ns();
        let hold = |until: u64| LockHold {
            fencing_token: guard.fencing_token(),
            session: s.id(),
            held_from_ns: held_from,
            held_until_ns: until.max(held_from),
        };
        emit(
            &mut out,
            process,
            OpKind::Ok,
            &acquire,
            Value::Lock(hold(mono_ns_at(guard.valid_until()))),
        );
        // Increment the counter under the lock.
        emit(&mut out, process, OpKind::Invoke, &increment, Value::None);
        flush(&mut stdout, &mut out).await?;
        let key = counter_key(LOCK_NAME);
        let mut info = false;
        match s.client().kv_get(&key).await {
            Err(e) => emit(
                &mut out,
                process,
                OpKind::Fail,
                &increment,
                Value::Error(format!("read: {e}")),
            ),
            Ok(v) => {
                let n = v.as_ref().and_then(|v| parse_u64(&v.value)).unwrap_or(0) + 1;
                match s.kv_put_fenced(&key, n.to_string().into_bytes(), &guard).await {
                    Ok(_) => emit(&mut out, process, OpKind::Ok, &increment, Value::Counter(n)),
                    Err(e) => {
                        let kind = error_kind(&e);
                        info = kind == OpKind::Info;
                        emit(&mut out, process, kind, &increment, Value::Error(e.to_string()));
                    }
                }
            }
        }
        flush(&mut stdout, &mut out).await?;
        if info {
            // Keep the process: the release still belongs to this hold.
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
        let release_start = mono_now_ns();
        emit(&mut out, process, OpKind::Invoke, &release, Value::None);
        flush(&mut stdout, &mut out).await?;
        let final_hold = hold(mono_ns_at(guard.valid_until()).min(release_start));
        let kind = match guard.release().await {
            Ok(()) => OpKind::Ok,
            Err(_) => OpKind::Info,
        };
        emit(&mut out, process, kind, &release, Value::Lock(final_hold));
        flush(&mut stdout, &mut out).await?;
        if kind == OpKind::Info || info {
            process += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
    }
    if let Some(s) = session {
        let _ = s.close().await;
    }
    Ok(())
}

async fn flush(stdout: &mut tokio::io::Stdout, out: &mut String) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    stdout.write_all(out.as_bytes()).await.map_err(|e| e.to_string())?;
    stdout.flush().await.map_err(|e| e.to_string())?;
    out.clear();
    Ok(())
}

/// A running lock worker process, as the harness sees it.
pub struct Worker {
    /// Worker number from 0; its history process ids start at
    /// `first_process + 1000·index`.
    pub index: u64,
    /// The worker's child process (the runner binary's hidden `worker`
    /// subcommand).
    pub child: tokio::process::Child,
    /// Its pid (for SIGSTOP/SIGCONT).
    pub pid: Option<nix::unistd::Pid>,
    /// The task reading its events.
    pub reader: tokio::task::JoinHandle<u64>,
}

/// Spawns lock worker `index` (the runner binary `exe` with `worker`) and
/// a task that records its events in `history` under process ids
/// `first_process + 1000·index + local`.
pub fn spawn_worker(
    exe: &Path,
    args: &WorkerArgs,
    index: u64,
    first_process: u64,
    history: History,
    log_dir: &Path,
) -> Result<Worker, String> {
    let stderr =
        std::fs::File::create(log_dir.join(format!("worker{index}.log"))).map_err(|e| format!("worker log: {e}"))?;
    let mut command = tokio::process::Command::new(exe);
    if let Some(t) = run_tls() {
        command
            .env(driftlock_client::CA_ENV, &t.client.ca)
            .env(driftlock_client::CERT_ENV, &t.client.cert)
            .env(driftlock_client::KEY_ENV, &t.client.key);
    }
    let mut child = command
        .arg("worker")
        .args(["--endpoints", &args.endpoints.join(",")])
        .args(["--session-ttl-ms", &args.session_ttl_ms.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start worker {}: {e}", exe.display()))?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(nix::unistd::Pid::from_raw);
    let stdout = child.stdout.take().ok_or("worker has no stdout")?;
    let base = first_process + 1000 * index;
    let reader = tokio::spawn(async move {
        // Offset of CLOCK_MONOTONIC against history time.
        let offset = mono_now_ns().saturating_sub(history.now_ns());
        let to_history = |ns: u64| ns.saturating_sub(offset);
        let mut lines = BufReader::new(stdout).lines();
        let mut open: BTreeMap<u64, Op> = BTreeMap::new();
        let mut count = 0u64;
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(ev) = serde_json::from_str::<WorkerEvent>(&line) else {
                continue;
            };
            let value = match ev.value {
                Value::Lock(mut h) => {
                    h.held_from_ns = to_history(h.held_from_ns);
                    h.held_until_ns = to_history(h.held_until_ns);
                    Value::Lock(h)
                }
                v => v,
            };
            let process = base + ev.process;
            if ev.kind == OpKind::Invoke {
                open.insert(process, history.invoke(process, ev.f));
            } else if let Some(inv) = open.remove(&process) {
                history.complete(&inv, ev.kind, value);
            }
            count += 1;
        }
        count
    });
    Ok(Worker {
        index,
        child,
        pid,
        reader,
    })
}
