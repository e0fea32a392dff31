//! Nemeses: the faults, scheduled from a seed.
//!
//! Every few seconds the schedule picks one enabled fault, starts it, holds
//! it a few seconds and heals it; start and stop are recorded in the
//! history as [`Function::Nemesis`] ops, and in the run's fault list
//! ([`FaultRecord`]: what, start, end, heal). A requested nemesis this
//! machine cannot run (partitions, loss and snapshots need network
//! namespaces, netem the kernel's `sch_netem`, clock libfaketime) is
//! reported by [`usable`] and makes the run invalid (`crate::verdict`),
//! unless it was only implied by `all` and optional here (netem without
//! `sch_netem`: `loss` stands in for it).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::cluster::{libfaketime, netem_available, Cluster};
use crate::history::{Function, History, OpKind, Value};
use crate::progress::Progress;
use crate::verdict::FaultRecord;

/// Process id the nemesis records its ops under.
pub const NEMESIS_PROCESS: u64 = 999_999;

/// How many handover requests the handover-cut fault makes (250 ms apart)
/// before it gives up for this round.
const HANDOVER_CUT_TRIES: u32 = 60;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// SIGKILL a node, restart it after a while.
    Kill,
    /// SIGSTOP a node or a lock worker process, SIGCONT after a while.
    Pause,
    /// iptables partitions: majority/minority, isolated leader, bridge, ring.
    Partition,
    /// `tc netem` delay and loss on every node.
    Netem,
    /// Slow client links: every workload client reaches the nodes through a
    /// delaying proxy per node; this sets a delay of 20–200 ms on the proxy
    /// of one node or of all (requests only; Raft traffic between nodes is
    /// not delayed).
    Delay,
    /// Random packet loss on every node: iptables' `statistic` match drops
    /// incoming packets with a probability (the stand-in for netem on
    /// kernels without `sch_netem`).
    Loss,
    /// Restart a node under libfaketime with a rate error and offset.
    Clock,
    /// Slow disk on one node: its `fsync`, `fdatasync` and
    /// `sync_file_range` sleep 20–250 ms first (an `LD_PRELOAD` shim,
    /// [`crate::slowdisk`]).
    SlowDisk,
    /// Rate strobes on a running node: its clock's rate flips among
    /// 1.002, 0.998, 1.0005, 0.9995 every 0.3–1 s, continuously (no step),
    /// through its libfaketime spec file ([`crate::cluster::LiveClock`]).
    ClockLive,
    /// Steps every clock of a running node by ±0.1–2 s, and back at heal.
    /// Outside driftlock's model (the monotonic clock never steps; the
    /// design bounds its rate only): not part of `all`, for exploration.
    ClockBump,
    /// A burst of Raft leader transfers.
    Transfer,
    /// Remove a node from the voters, add it back later.
    Membership,
    /// Cut a follower off until the leader's log has moved past it, so it
    /// catches up by installing a snapshot, then make it the leader (its
    /// cluster-time anchor is the installed snapshot's). The run starts its
    /// nodes with a small snapshot interval and log tail for this
    /// ([`SNAPSHOT_NODE_ARGS`]).
    Snapshot,
    /// Ask for a warm handover of the election workload's election and cut
    /// the old master off the network right after it sent its state: the
    /// candidate must not become master while the old one may still
    /// believe it leads (needs the election workload).
    HandoverCut,
}

/// `serve` flags a run adds when the snapshot nemesis is enabled: frequent
/// snapshots and a short log tail, so a follower cut off for a few seconds
/// lags beyond what the leader keeps.
pub const SNAPSHOT_NODE_ARGS: [&str; 4] = ["--snapshot-every-entries", "200", "--log-kept-after-snapshot", "20"];

/// How far past an isolated follower's last entry the leader's log must be
/// before the snapshot fault heals: two snapshot intervals and the kept
/// tail of [`SNAPSHOT_NODE_ARGS`], so the entry the follower needs next is
/// purged.
pub const SNAPSHOT_LAG_ENTRIES: u64 = 2 * 200 + 20;

impl Nemesis {
    /// Every nemesis: what `--nemesis all` selects.
    pub const ALL: [Nemesis; 13] = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::Netem,
        Nemesis::Loss,
        Nemesis::Delay,
        Nemesis::Clock,
        Nemesis::ClockLive,
        Nemesis::SlowDisk,
        Nemesis::Transfer,
        Nemesis::Membership,
        Nemesis::Snapshot,
        Nemesis::HandoverCut,
    ];

    /// Every nemesis there is: [`Nemesis::ALL`] and those only run when
    /// named ([`Nemesis::ClockBump`]).
    pub const EVERY: [Nemesis; 14] = [
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::Partition,
        Nemesis::Netem,
        Nemesis::Loss,
        Nemesis::Delay,
        Nemesis::Clock,
        Nemesis::ClockLive,
        Nemesis::ClockBump,
        Nemesis::SlowDisk,
        Nemesis::Transfer,
        Nemesis::Membership,
        Nemesis::Snapshot,
        Nemesis::HandoverCut,
    ];

    /// Whether its fault takes effect only if its heal says so (the
    /// snapshot install, the cut after the last state chunk), rather than
    /// once applied.
    pub fn confirmed_at_heal(self) -> bool {
        matches!(self, Nemesis::Snapshot | Nemesis::HandoverCut)
    }

    /// Whether it changes clocks at run time (the nodes then run under
    /// libfaketime with a spec file from the start).
    pub fn needs_live_clocks(self) -> bool {
        matches!(self, Nemesis::ClockLive | Nemesis::ClockBump)
    }

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::Netem => "netem",
            Nemesis::Loss => "loss",
            Nemesis::Delay => "delay",
            Nemesis::SlowDisk => "slow-disk",
            Nemesis::Clock => "clock",
            Nemesis::ClockLive => "clock-live",
            Nemesis::ClockBump => "clock-bump",
            Nemesis::Transfer => "transfer",
            Nemesis::Membership => "membership",
            Nemesis::Snapshot => "snapshot",
            Nemesis::HandoverCut => "handover-cut",
        }
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Nemesis::EVERY.into_iter().find(|n| n.name() == s).ok_or_else(|| {
            format!(
                "unknown nemesis '{s}' (known: kill, pause, partition, netem, loss, delay, clock, clock-live, clock-bump, slow-disk, transfer, membership, snapshot, handover-cut, all, none)"
            )
        })
    }
}

/// Parses a comma-separated nemesis list (`all`, `none` allowed).
pub fn parse_list(s: &str) -> Result<Vec<Nemesis>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "all" => out.extend(Nemesis::ALL),
            "none" => {}
            p => out.push(p.parse()?),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What one nemesis did over a run.
#[derive(Clone, Debug, Default)]
pub struct NemesisStats {
    /// Faults of this kind applied; one that could not be applied counts in
    /// `errors` instead.
    pub started: u64,
    /// Faults that could not be applied (with the last reason).
    pub errors: u64,
    /// The most recent of those errors, for the nemesis table; `None` when
    /// there were none.
    pub last_error: Option<String>,
    /// Leader changes seen while it was active.
    pub leader_changes: u64,
    /// Time it was active, ms.
    pub active_ms: u64,
}

/// The shared state of a run's faults.
pub struct NemesisCtx {
    /// The cluster the faults act on; the run locks it too, to restart and
    /// heal every node for the final phase.
    pub cluster: Arc<Mutex<Cluster>>,
    /// The run's history, where each fault is recorded as a
    /// [`Function::Nemesis`] op.
    pub history: History,
    /// Pids of the lock worker processes (for client pauses).
    pub workers: Vec<nix::unistd::Pid>,
    /// The fault in force now (for attributing leader changes).
    pub active: std::sync::Mutex<Option<Nemesis>>,
    /// Per-nemesis statistics.
    pub stats: std::sync::Mutex<BTreeMap<Nemesis, NemesisStats>>,
    /// The election candidates' network switches (empty without the
    /// election workload), for the handover-cut fault.
    pub election_switches: crate::workload::CutSwitches,
    /// Where the faults are shown while the run runs.
    pub progress: Arc<Progress>,
    /// The workload clients' delaying proxies, one per node (empty unless
    /// the `delay` nemesis is enabled).
    pub delay_proxies: Arc<Vec<driftlock_testkit::FaultProxy>>,
    /// Every fault applied, in order, with its heal.
    pub faults: std::sync::Mutex<Vec<FaultRecord>>,
}

fn record(history: &History, action: String) {
    history.record(
        NEMESIS_PROCESS,
        OpKind::Invoke,
        Function::Nemesis { action: action.clone() },
        Value::None,
    );
    history.record(NEMESIS_PROCESS, OpKind::Ok, Function::Nemesis { action }, Value::None);
}

/// Which of `wanted` can run here, and why each other one cannot (no
/// network namespaces, no `sch_netem`, no libfaketime).
pub fn usable(wanted: &[Nemesis], netns: bool) -> (Vec<Nemesis>, BTreeMap<Nemesis, String>) {
    let mut ok = Vec::new();
    let mut not = BTreeMap::new();
    for &n in wanted {
        let why = match n {
            Nemesis::Partition | Nemesis::Netem | Nemesis::Loss | Nemesis::Snapshot if !netns => {
                Some("needs network namespaces (root, ip netns, iptables, tc)".to_owned())
            }
            Nemesis::Netem => netem_available().err(),
            Nemesis::Clock | Nemesis::ClockLive | Nemesis::ClockBump if libfaketime().is_none() => {
                Some("libfaketime not installed (apt-get install faketime)".to_owned())
            }
            _ => None,
        };
        match why {
            Some(why) => {
                not.insert(n, why);
            }
            None => ok.push(n),
        }
    }
    (ok, not)
}

/// A healing action remembered while a fault holds.
enum Undo {
    Restart(usize),
    Resume(usize),
    ResumeWorker(nix::unistd::Pid),
    HealPartition,
    HealNetem,
    HealLoss,
    /// Take the delay off every proxy.
    Undelay,
    /// This node's fsyncs are fast again.
    FastDisk(usize),
    ClearClock(usize),
    /// Stop the rate strobe of this node (its task returns the number of
    /// rate changes) and put its clock back at the real rate.
    StopStrobe(usize, Arc<AtomicBool>, tokio::task::JoinHandle<Result<u64, String>>),
    /// Step this node's clock back by this many seconds.
    Unbump(usize, f64),
    Readd(usize),
    /// Heal the isolation of this node, wait until it caught up, check it
    /// installed a snapshot (it had installed this many before), make it
    /// lead.
    /// The isolated follower's last log index is the third field: the
    /// isolation holds until the leader's log is far enough past it.
    CatchUpAndLead(usize, u64, u64),
    /// Reconnect the election candidates; say whether one was cut off.
    Uncut,
    Nothing,
}

impl NemesisCtx {
    fn stat<F: FnOnce(&mut NemesisStats)>(&self, n: Nemesis, f: F) {
        if let Ok(mut s) = self.stats.lock() {
            f(s.entry(n).or_default());
        }
    }

    /// Runs the schedule until `stop`. `duration` is the faulty phase's
    /// planned length: when it leaves little time per enabled nemesis,
    /// gaps and holds shrink ([`schedule_ms`]) so that the first cycle
    /// still fits, as every requested nemesis must run for a valid run.
    pub async fn run(self: Arc<Self>, enabled: Vec<Nemesis>, seed: u64, stop: Arc<AtomicBool>, duration: Duration) {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
        if enabled.is_empty() {
            return;
        }
        // Leader-change watcher.
        let watcher = {
            let me = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut last: Option<u64> = None;
                while !stop.load(Ordering::Relaxed) {
                    let leader = {
                        let c = me.cluster.lock().await;
                        c.leader().await.map(|i| c.nodes[i].id)
                    };
                    if let (Some(now), Some(before)) = (leader, last) {
                        if now != before {
                            record(&me.history, format!("leader n{before} -> n{now}"));
                            let active = me.active.lock().ok().and_then(|a| *a);
                            if let Some(n) = active {
                                me.stat(n, |s| s.leader_changes += 1);
                            }
                        }
                    }
                    if leader.is_some() {
                        last = leader;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        // Faults come in shuffled cycles: every enabled nemesis runs once
        // per cycle, so a short run still exercises each of them.
        let (gap_ms, hold_ms) = schedule_ms(duration, enabled.len());
        let mut cycle = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            sleep_unless(Duration::from_millis(rng.random_range(gap_ms.clone())), &stop).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if cycle.is_empty() {
                cycle = enabled.to_vec();
                cycle.shuffle(&mut rng);
                // Those that have not taken effect yet come first (they are
                // popped from the end): a short run gets a second try at
                // them before the others run again.
                let done: Vec<Nemesis> = self
                    .faults
                    .lock()
                    .map(|f| f.iter().filter(|r| r.took_effect).map(|r| r.nemesis).collect())
                    .unwrap_or_default();
                cycle.sort_by_key(|n| !done.contains(n));
            }
            let Some(n) = cycle.pop() else { break };
            let start = std::time::Instant::now();
            if let Ok(mut a) = self.active.lock() {
                *a = Some(n);
            }
            let applied = match self.start(n, &mut rng).await {
                Ok((what, undo)) => {
                    self.progress.set_fault(Some(what.clone()));
                    record(&self.history, what.clone());
                    self.stat(n, |s| s.started += 1);
                    let start_ns = self.history.now_ns();
                    if let Ok(mut f) = self.faults.lock() {
                        f.push(FaultRecord {
                            nemesis: n,
                            what: what.clone(),
                            start_ns,
                            end_ns: None,
                            heal: Err("not healed before the run ended".into()),
                            took_effect: !n.confirmed_at_heal(),
                        });
                    }
                    Some((what, undo))
                }
                Err(e) => {
                    self.progress.line(&format!("nemesis {n}: could not apply: {e}"));
                    self.stat(n, |s| {
                        s.errors += 1;
                        s.last_error = Some(e);
                    });
                    None
                }
            };
            sleep_unless(Duration::from_millis(rng.random_range(hold_ms.clone())), &stop).await;
            if let Some((what, undo)) = applied {
                let (heal, took_effect) = self.heal(n, undo).await;
                let end_ns = self.history.now_ns();
                let mut secs = 0.0;
                if let Ok(mut f) = self.faults.lock() {
                    if let Some(last) = f.last_mut() {
                        last.end_ns = Some(end_ns);
                        last.heal = heal.clone();
                        last.took_effect = took_effect;
                        secs = end_ns.saturating_sub(last.start_ns) as f64 / 1e9;
                    }
                }
                self.progress.set_fault(None);
                match heal {
                    Ok(h) => self.progress.line(&format!("nemesis: {what} ({secs:.1} s); {h}")),
                    Err(e) => self
                        .progress
                        .line(&format!("nemesis: {what} ({secs:.1} s); heal failed: {e}")),
                }
            }
            // Leader changes caused by the fault show up shortly after.
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            if let Ok(mut a) = self.active.lock() {
                *a = None;
            }
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.stat(n, |s| s.active_ms += ms);
        }
        let _ = watcher.await;
    }

    async fn start(&self, n: Nemesis, rng: &mut StdRng) -> Result<(String, Undo), String> {
        let mut c = self.cluster.lock().await;
        let count = c.nodes.len();
        let live: Vec<usize> = (0..count).filter(|&i| c.is_running(i)).collect();
        let pick = |rng: &mut StdRng| live.choose(rng).copied().ok_or_else(|| "no live node".to_string());
        match n {
            Nemesis::Kill => {
                let i = pick(rng)?;
                c.kill(i);
                Ok((format!("kill -9 n{}", c.nodes[i].id), Undo::Restart(i)))
            }
            Nemesis::Pause => {
                if !self.workers.is_empty() && rng.random_bool(0.5) {
                    let Some(&pid) = self.workers.choose(rng) else {
                        return Err("no worker".into());
                    };
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
                    Ok((format!("SIGSTOP lock client pid {pid}"), Undo::ResumeWorker(pid)))
                } else {
                    let i = pick(rng)?;
                    c.pause(i, true).map_err(|e| e.to_string())?;
                    Ok((format!("SIGSTOP n{}", c.nodes[i].id), Undo::Resume(i)))
                }
            }
            Nemesis::Partition => {
                let leader = c.leader().await;
                let mut order: Vec<usize> = (0..count).collect();
                order.shuffle(rng);
                let (what, pairs) = match rng.random_range(0..4) {
                    0 => {
                        let minority = &order[..count / 2];
                        (
                            format!("partition majority/minority {:?}", ids(&c, minority)),
                            split(minority, count),
                        )
                    }
                    1 => {
                        let l = leader.ok_or("no leader to isolate")?;
                        (
                            format!("partition isolating leader n{}", c.nodes[l].id),
                            split(&[l], count),
                        )
                    }
                    2 => {
                        // Bridge: two halves joined through one node that sees both.
                        let mid = count / 2;
                        let left = &order[..mid];
                        let right = &order[mid + 1..];
                        let pairs = left
                            .iter()
                            .flat_map(|&a| right.iter().map(move |&b| (a, b)))
                            .collect::<Vec<_>>();
                        (format!("partition bridge via n{}", c.nodes[order[mid]].id), pairs)
                    }
                    _ => {
                        // Ring: each node sees only its two ring neighbours.
                        let mut pairs = Vec::new();
                        for x in 0..count {
                            for y in x + 1..count {
                                let d = (y - x).min(count - (y - x));
                                if d > 1 {
                                    pairs.push((order[x], order[y]));
                                }
                            }
                        }
                        (format!("partition ring {:?}", ids(&c, &order)), pairs)
                    }
                };
                c.block(&pairs).map_err(|e| e.to_string())?;
                Ok((what, Undo::HealPartition))
            }
            Nemesis::Netem => {
                let delay = rng.random_range(20..120);
                let loss = rng.random_range(1..10);
                c.netem(delay, delay / 3, loss).map_err(|e| e.to_string())?;
                Ok((format!("netem delay {delay}ms loss {loss}%"), Undo::HealNetem))
            }
            Nemesis::Loss => {
                let probability = [0.05, 0.1, 0.2, 0.3][rng.random_range(0..4)];
                c.drop_randomly(probability).map_err(|e| e.to_string())?;
                Ok((
                    format!("loss: every node drops {:.0}% of incoming packets", probability * 100.0),
                    Undo::HealLoss,
                ))
            }
            Nemesis::Clock => {
                let i = pick(rng)?;
                let rate = [1.002, 0.998, 1.0005, 0.9995][rng.random_range(0..4)];
                let offset = [0i64, 3, -3, 60][rng.random_range(0..4)];
                let spec = format!("{offset:+} x{rate}");
                c.kill(i);
                c.nodes[i].faketime = Some(spec.clone());
                c.spawn(i).map_err(|e| e.to_string())?;
                Ok((
                    format!("restart n{} under faketime \"{spec}\"", c.nodes[i].id),
                    Undo::ClearClock(i),
                ))
            }
            Nemesis::Delay => {
                if self.delay_proxies.is_empty() {
                    return Err("no delaying proxies (the run did not start them)".into());
                }
                let delay_ms = [20, 50, 100, 200][rng.random_range(0..4)];
                let delay = Duration::from_millis(delay_ms);
                if rng.random_bool(0.5) {
                    let i = rng.random_range(0..self.delay_proxies.len());
                    self.delay_proxies[i].set_delay(delay);
                    Ok((
                        format!("delay: clients' requests to n{} {delay_ms} ms late", c.nodes[i].id),
                        Undo::Undelay,
                    ))
                } else {
                    for p in self.delay_proxies.iter() {
                        p.set_delay(delay);
                    }
                    Ok((
                        format!("delay: clients' requests to every node {delay_ms} ms late"),
                        Undo::Undelay,
                    ))
                }
            }
            Nemesis::SlowDisk => {
                let candidates: Vec<usize> = live
                    .iter()
                    .copied()
                    .filter(|&i| c.nodes[i].fsync_delay_file.is_some())
                    .collect();
                let i = *candidates
                    .choose(rng)
                    .ok_or("no running node with the slow-disk shim")?;
                let file = c.nodes[i].fsync_delay_file.clone().ok_or("no delay file")?;
                let delay_ms = [20u64, 50, 100, 250][rng.random_range(0..4)];
                crate::slowdisk::set_delay_us(&file, delay_ms * 1000).map_err(|e| e.to_string())?;
                Ok((
                    format!("slow-disk: every fsync of n{} takes {delay_ms} ms more", c.nodes[i].id),
                    Undo::FastDisk(i),
                ))
            }
            Nemesis::ClockLive => {
                let i = live_clock_node(&c, &live, rng)?;
                let clock = c.nodes[i].live_clock.clone().ok_or("no live clock")?;
                let stop = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(strobe(clock, stop.clone(), rng.random()));
                Ok((
                    format!(
                        "clock-live: n{} rate strobes among 1.002, 0.998, 1.0005, 0.9995 while it runs",
                        c.nodes[i].id
                    ),
                    Undo::StopStrobe(i, stop, task),
                ))
            }
            Nemesis::ClockBump => {
                let i = live_clock_node(&c, &live, rng)?;
                let clock = c.nodes[i].live_clock.clone().ok_or("no live clock")?;
                let step = [-2.0, -0.5, -0.1, 0.1, 0.5, 2.0][rng.random_range(0..6)];
                clock.bump(step).map_err(|e| e.to_string())?;
                Ok((
                    format!("clock-bump: n{} clocks stepped {step:+} s while it runs", c.nodes[i].id),
                    Undo::Unbump(i, step),
                ))
            }
            Nemesis::Transfer => {
                // The leader watcher cannot look while the cluster is held:
                // count the changes here.
                let mut done = 0;
                let mut changes = 0;
                let mut last = c.leader().await;
                for _ in 0..5 {
                    let Some(l) = last else { break };
                    let others: Vec<usize> = live.iter().copied().filter(|&i| i != l).collect();
                    if let Some(&to) = others.choose(rng) {
                        if c.transfer_leader(to).await.is_ok() {
                            done += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    let now = c.leader().await;
                    if let (Some(a), Some(b)) = (last, now) {
                        if a != b {
                            changes += 1;
                            record(
                                &self.history,
                                format!("leader n{} -> n{}", c.nodes[a].id, c.nodes[b].id),
                            );
                        }
                    }
                    if now.is_some() {
                        last = now;
                    }
                }
                self.stat(n, |s| s.leader_changes += changes);
                Ok((
                    format!("leader-transfer storm ({done}/5 transfers accepted, {changes} leader changes)"),
                    Undo::Nothing,
                ))
            }
            Nemesis::Snapshot => {
                let leader = c.leader().await.ok_or("no leader")?;
                let followers: Vec<usize> = live.iter().copied().filter(|&i| i != leader).collect();
                let f = *followers.choose(rng).ok_or("no follower to isolate")?;
                let (installed, last_index) = c
                    .status(f)
                    .await
                    .map(|s| (s.snapshots_installed, s.last_log_index))
                    .unwrap_or((0, 0));
                // Refused, not dropped: the leader's replication to it fails
                // at once instead of hanging, so no request to it stays in
                // flight and the leader may purge the log it would need.
                c.block_rejecting(&split(&[f], count)).map_err(|e| e.to_string())?;
                Ok((
                    format!("isolate n{} until it must catch up by snapshot", c.nodes[f].id),
                    Undo::CatchUpAndLead(f, installed, last_index),
                ))
            }
            Nemesis::HandoverCut => {
                let switches = self
                    .election_switches
                    .lock()
                    .map(|s| s.clone())
                    .map_err(|_| "switches poisoned".to_string())?;
                if switches.is_empty() {
                    return Err("needs the election workload".into());
                }
                for s in &switches {
                    s.cut.store(false, Ordering::SeqCst);
                    s.armed.store(true, Ordering::SeqCst);
                }
                // The election may have no master or no waiting candidate at
                // this moment, a handover may be under way already, or the
                // master may resign (it holds 0.2–1.5 s) before it sends its
                // state: ask again until one reaches the old master's last
                // chunk, for up to HANDOVER_CUT_TRIES × 250 ms (20 tries,
                // 5 s, were too few for a short run: the fault then never
                // took effect and the run was invalid).
                let mut last_error = None;
                let mut cut = false;
                for _ in 0..HANDOVER_CUT_TRIES {
                    if let Err(e) = c.handover(crate::workload::ELECTION_NAME).await {
                        last_error = Some(e.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if switches.iter().any(|s| s.cut.load(Ordering::SeqCst)) {
                        cut = true;
                        break;
                    }
                }
                if !cut {
                    // Not applied: disarm, so masters go back to their
                    // usual holds, and say why.
                    for s in &switches {
                        s.armed.store(false, Ordering::SeqCst);
                    }
                    return Err(match last_error {
                        Some(e) => format!("handover request: {e}"),
                        None => format!(
                            "no handover reached the old master's last state chunk in {HANDOVER_CUT_TRIES} requests"
                        ),
                    });
                }
                Ok((
                    format!(
                        "handover of {} with the old master cut off after its last state chunk",
                        crate::workload::ELECTION_NAME
                    ),
                    Undo::Uncut,
                ))
            }
            Nemesis::Membership => {
                let leader = c.leader().await.ok_or("no leader")?;
                let victims: Vec<usize> = live.iter().copied().filter(|&i| i != leader).collect();
                let v = *victims.choose(rng).ok_or("no follower to remove")?;
                let voters: Vec<usize> = (0..count).filter(|&i| i != v).collect();
                c.set_voters(&voters).await.map_err(|e| e.to_string())?;
                Ok((format!("remove n{} from the voters", c.nodes[v].id), Undo::Readd(v)))
            }
        }
    }

    /// Undoes a fault; returns what was done, or why it failed (also
    /// counted as an error of `n`), and whether the fault took effect: the
    /// snapshot fault only if the follower caught up by installing a
    /// snapshot, the handover cut only if an old master was cut off after
    /// its last state chunk; any other fault once it was applied.
    async fn heal(&self, n: Nemesis, undo: Undo) -> (Result<String, String>, bool) {
        let mut c = self.cluster.lock().await;
        let mut took_effect = true;
        let result: Result<String, String> = match undo {
            Undo::Nothing => Ok("heal: nothing to undo".into()),
            Undo::Restart(i) => c
                .spawn(i)
                .map(|_| format!("restart n{}", c.nodes[i].id))
                .map_err(|e| e.to_string()),
            Undo::Resume(i) => c
                .pause(i, false)
                .map(|_| format!("SIGCONT n{}", c.nodes[i].id))
                .map_err(|e| e.to_string()),
            Undo::ResumeWorker(pid) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                Ok(format!("SIGCONT lock client pid {pid}"))
            }
            Undo::HealPartition => {
                c.heal_partitions();
                Ok("heal partition".into())
            }
            Undo::HealNetem => {
                c.heal_netem();
                Ok("heal netem".into())
            }
            Undo::FastDisk(i) => match &c.nodes[i].fsync_delay_file {
                Some(file) => crate::slowdisk::set_delay_us(file, 0)
                    .map(|_| format!("n{} fsyncs at disk speed again", c.nodes[i].id))
                    .map_err(|e| e.to_string()),
                None => Err("no delay file".into()),
            },
            Undo::Undelay => {
                for p in self.delay_proxies.iter() {
                    p.set_delay(Duration::ZERO);
                }
                Ok("heal delay".into())
            }
            Undo::HealLoss => {
                c.heal_partitions();
                Ok("heal loss".into())
            }
            Undo::ClearClock(i) => {
                c.kill(i);
                c.nodes[i].faketime = None;
                c.spawn(i)
                    .map(|_| format!("restart n{} on the real clock", c.nodes[i].id))
                    .map_err(|e| e.to_string())
            }
            Undo::StopStrobe(i, stop, task) => {
                stop.store(true, Ordering::Relaxed);
                let id = c.nodes[i].id;
                match task.await {
                    Ok(Ok(changes)) => Ok(format!("n{id} back at the real rate after {changes} rate changes")),
                    Ok(Err(e)) => Err(format!("n{id} rate strobe: {e}")),
                    Err(e) => Err(format!("n{id} rate strobe task: {e}")),
                }
            }
            Undo::Unbump(i, step) => match c.nodes[i].live_clock.as_ref() {
                Some(clock) => clock
                    .bump(-step)
                    .map(|_| format!("n{} clocks stepped back {:+} s", c.nodes[i].id, -step))
                    .map_err(|e| e.to_string()),
                None => Err("no live clock".into()),
            },
            Undo::CatchUpAndLead(f, installed_before, follower_index) => {
                // Hold the isolation until the leader's log is past what
                // it keeps beyond the follower: a snapshot every 200
                // entries keeping a 20-entry tail purges the follower's
                // next entry once the log is 420 entries past it
                // (SNAPSHOT_NODE_ARGS).
                let want = follower_index + SNAPSHOT_LAG_ENTRIES;
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while std::time::Instant::now() < deadline {
                    let leader_index = match c.leader().await {
                        Some(l) => c.status(l).await.map_or(0, |s| s.last_log_index),
                        None => 0,
                    };
                    if leader_index >= want {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                c.heal_partitions();
                let id = c.nodes[f].id;
                // Caught up: applied as far as the leader had when healed
                // (the healed node's election attempts may unseat it for a
                // moment: wait for one).
                let mut target = 0;
                let settle = std::time::Instant::now() + Duration::from_secs(15);
                while target == 0 && std::time::Instant::now() < settle {
                    if let Ok(l) = c.wait_leader(Duration::from_secs(5)).await {
                        target = c.status(l).await.map(|s| s.applied_index).unwrap_or(0);
                    }
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                let mut status = c.status(f).await;
                while status.as_ref().is_none_or(|s| s.applied_index < target) && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    status = c.status(f).await;
                }
                let installed = status.as_ref().map_or(0, |s| s.snapshots_installed);
                took_effect = installed > installed_before;
                match status {
                    _ if target == 0 => Err("no leader after the isolation was healed".into()),
                    None => Err(format!("n{id} does not answer after the isolation")),
                    Some(s) if s.applied_index < target => {
                        Err(format!("n{id} did not catch up (applied {} of {target})", s.applied_index))
                    }
                    Some(s) if installed <= installed_before => Err(format!(
                        "n{id} caught up (applied {} of {target}) without installing a snapshot \
                         ({installed} installed since its start, {installed_before} before): the log still reached back to it",
                        s.applied_index
                    )),
                    Some(_) => match c.transfer_leader(f).await {
                        Ok(()) => Ok(format!(
                            "n{id} caught up by snapshot ({} installed) and is asked to lead",
                            installed - installed_before
                        )),
                        Err(e) => Err(format!("n{id} caught up by snapshot, but the transfer failed: {e}")),
                    },
                }
            }
            Undo::Uncut => {
                let switches = self.election_switches.lock().map(|s| s.clone()).unwrap_or_default();
                let cut = switches.iter().filter(|s| s.cut.load(Ordering::SeqCst)).count();
                took_effect = cut > 0;
                for s in &switches {
                    s.armed.store(false, Ordering::SeqCst);
                    s.cut.store(false, Ordering::SeqCst);
                }
                if cut > 0 {
                    Ok("reconnect the election candidates (the old master had been cut off after its state)".into())
                } else {
                    Err(
                        "no candidate sent its last state chunk while armed (the handover did not reach that point)"
                            .into(),
                    )
                }
            }
            Undo::Readd(i) => {
                let all: Vec<usize> = (0..c.nodes.len()).collect();
                match c.add_learner(i).await {
                    Ok(()) => c
                        .set_voters(&all)
                        .await
                        .map(|_| format!("n{} is a voter again", c.nodes[i].id))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match &result {
            Ok(what) => record(&self.history, what.clone()),
            Err(e) => {
                self.stat(n, |s| {
                    s.errors += 1;
                    s.last_error = Some(format!("heal: {e}"));
                });
            }
        }
        (result, took_effect)
    }

    /// Undoes every fault at the end of a run: resumes paused processes and
    /// workers, heals the network, restores clocks and membership, restarts
    /// dead nodes.
    pub async fn heal_all(&self) {
        for pid in &self.workers {
            let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGCONT);
        }
        for p in self.delay_proxies.iter() {
            p.set_delay(Duration::ZERO);
        }
        let mut c = self.cluster.lock().await;
        c.heal_partitions();
        c.heal_netem();
        for node in &c.nodes {
            if let Some(file) = &node.fsync_delay_file {
                let _ = crate::slowdisk::set_delay_us(file, 0);
            }
            if let Some(clock) = &node.live_clock {
                let _ = clock.set_rate(1.0);
            }
        }
        for i in 0..c.nodes.len() {
            if c.is_paused(i) {
                if let Err(e) = c.pause(i, false) {
                    self.progress
                        .line(&format!("heal: cannot resume n{}: {e}", c.nodes[i].id));
                }
            }
            if c.nodes[i].faketime.is_some() {
                c.kill(i);
                c.nodes[i].faketime = None;
            }
            if !c.is_running(i) {
                if let Err(e) = c.spawn(i) {
                    self.progress
                        .line(&format!("heal: cannot restart n{}: {e}", c.nodes[i].id));
                }
            }
        }
        let _ = c.wait_leader(Duration::from_secs(30)).await;
        if let Some(voters) = c.voters().await {
            let all: Vec<usize> = (0..c.nodes.len()).collect();
            for i in 0..c.nodes.len() {
                if !voters.contains(&c.nodes[i].id) {
                    let _ = c.add_learner(i).await;
                }
            }
            if voters.len() != c.nodes.len() {
                if let Err(e) = c.set_voters(&all).await {
                    self.progress.line(&format!("heal: cannot restore the voters: {e}"));
                }
            }
        }
        record(&self.history, "heal all".into());
    }
}

/// The gap before each fault and the time it is held, ms ranges: 1.5–3.5 s
/// and 3–7 s; 0.5–1.5 s and 2.5–5 s when `duration` leaves less than 12 s
/// for each of `nemeses`; 0.3–0.8 s and 1.5–3 s below 8 s (the 75 s
/// `--short` run with every nemesis).
pub fn schedule_ms(duration: Duration, nemeses: usize) -> (std::ops::Range<u64>, std::ops::Range<u64>) {
    let per_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX) / nemeses.max(1) as u64;
    if per_ms < 8_000 {
        (300..800, 1_500..3_000)
    } else if per_ms < 12_000 {
        (500..1_500, 2_500..5_000)
    } else {
        (1_500..3_500, 3_000..7_000)
    }
}

/// A running node whose clock the harness can change (not under the
/// restart-clock fault's fixed spec).
fn live_clock_node(c: &Cluster, live: &[usize], rng: &mut StdRng) -> Result<usize, String> {
    let candidates: Vec<usize> = live
        .iter()
        .copied()
        .filter(|&i| c.nodes[i].live_clock.is_some() && c.nodes[i].faketime.is_none())
        .collect();
    candidates
        .choose(rng)
        .copied()
        .ok_or_else(|| "no running node with a live clock".to_string())
}

/// Flips `clock`'s rate every 0.3–1 s until `stop`, then restores the real
/// rate; returns how many rate changes it made.
async fn strobe(clock: crate::cluster::LiveClock, stop: Arc<AtomicBool>, seed: u64) -> Result<u64, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut changes = 0;
    while !stop.load(Ordering::Relaxed) {
        let rate = [1.002, 0.998, 1.0005, 0.9995][rng.random_range(0..4)];
        clock.set_rate(rate).map_err(|e| e.to_string())?;
        changes += 1;
        sleep_unless(Duration::from_millis(rng.random_range(300..1_000)), &stop).await;
    }
    clock.set_rate(1.0).map_err(|e| e.to_string())?;
    Ok(changes)
}

fn ids(c: &Cluster, idx: &[usize]) -> Vec<u64> {
    idx.iter().map(|&i| c.nodes[i].id).collect()
}

/// All links between `side` and the other nodes.
fn split(side: &[usize], count: usize) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for &a in side {
        for b in 0..count {
            if !side.contains(&b) {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

async fn sleep_unless(d: Duration, stop: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
