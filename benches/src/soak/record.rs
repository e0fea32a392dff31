//! What a soak run records and how it is shown: the per-minute rows, the
//! totals, the lost sessions and skew events found, the JSON artifact
//! (`benches/results/soak.json`) and the Markdown table, and the verdict
//! that makes `driftlock-bench soak` a check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::workload::percentile;

/// Latencies and outcomes of the workers' lock → fenced put → unlock cycles
/// over some stretch of the run (one minute, or the whole run).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// Full cycles whose three operations all succeeded, each cycle's
    /// latency (from sending the acquire to the release's answer), µs.
    pub cycle_us: Vec<u64>,
    /// Latency of each successful lock call, µs.
    pub lock_us: Vec<u64>,
    /// Latency of each successful fenced put, µs.
    pub put_us: Vec<u64>,
    /// Latency of each successful unlock, µs.
    pub unlock_us: Vec<u64>,
    /// Failed operations by kind (`lock: unavailable`, `put: rejected
    /// NotHolder`, …).
    pub errors: BTreeMap<String, u64>,
    /// The first few failures in full, with when they happened (seconds
    /// since the run started).
    pub error_samples: Vec<(f64, String)>,
}

/// Failures kept in full per window.
pub const ERROR_SAMPLES: usize = 8;

impl Window {
    /// Records one failed operation: `kind` is counted, the message kept if
    /// fewer than [`ERROR_SAMPLES`] are.
    pub fn error(&mut self, at_s: f64, kind: String, message: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push((at_s, message));
        }
    }

    /// Failed operations of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other`'s figures to this window (for the whole-run totals).
    pub fn absorb(&mut self, other: &Window) {
        self.cycle_us.extend_from_slice(&other.cycle_us);
        self.lock_us.extend_from_slice(&other.lock_us);
        self.put_us.extend_from_slice(&other.put_us);
        self.unlock_us.extend_from_slice(&other.unlock_us);
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += n;
        }
        for s in &other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(s.clone());
            }
        }
    }

    /// Percentiles of the window's latencies (`elapsed_s` long).
    pub fn latencies(&self, elapsed_s: f64) -> Latencies {
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        let cycle = sorted(&self.cycle_us);
        let lock = sorted(&self.lock_us);
        let put = sorted(&self.put_us);
        let unlock = sorted(&self.unlock_us);
        Latencies {
            cycles: cycle.len() as u64,
            ops_per_sec: if elapsed_s > 0.0 {
                cycle.len() as f64 / elapsed_s
            } else {
                0.0
            },
            cycle_p50_us: percentile(&cycle, 50.0),
            cycle_p99_us: percentile(&cycle, 99.0),
            cycle_max_us: cycle.last().copied().unwrap_or(0),
            lock_p50_us: percentile(&lock, 50.0),
            lock_p99_us: percentile(&lock, 99.0),
            put_p99_us: percentile(&put, 99.0),
            unlock_p99_us: percentile(&unlock, 99.0),
            errors: self.error_count(),
        }
    }
}

/// Throughput and latency percentiles of a [`Window`]; 0 where there was
/// no sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Completed lock → fenced put → unlock cycles.
    pub cycles: u64,
    /// Cycles per second of the window.
    pub ops_per_sec: f64,
    /// Median cycle latency, µs.
    pub cycle_p50_us: u64,
    /// 99th percentile cycle latency, µs.
    pub cycle_p99_us: u64,
    /// Longest cycle, µs.
    pub cycle_max_us: u64,
    /// Median lock latency, µs.
    pub lock_p50_us: u64,
    /// 99th percentile lock latency, µs.
    pub lock_p99_us: u64,
    /// 99th percentile fenced-put latency, µs.
    pub put_p99_us: u64,
    /// 99th percentile unlock latency, µs.
    pub unlock_p99_us: u64,
    /// Failed operations (lock, put or unlock).
    pub errors: u64,
}

/// One minute of the run, as printed and stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinuteRow {
    /// 1-based minute since the load started; the row covers the minute
    /// that ends at `minute × 60 s`.
    pub minute: u32,
    /// Exact length of the window the figures are over, s.
    pub window_s: f64,
    /// The workers' cycles in this minute.
    #[serde(flatten)]
    pub latencies: Latencies,
    /// RSS of each node at the end of the minute (`/proc/<pid>/status`
    /// VmRSS), bytes, node 1 first; `None` while a node is down.
    pub rss_bytes: Vec<Option<u64>>,
    /// Disk allocated under each node's data directory (as `du` counts),
    /// bytes, node 1 first; `None` if it could not be read.
    pub disk_bytes: Vec<Option<u64>>,
    /// Owned sessions lost since the start (cumulative).
    pub sessions_lost: u64,
    /// `ClockSkewDetected` events since the start (cumulative).
    pub skew_events: u64,
    /// `Probe` events (a session suspected of failing) for sessions of the
    /// run since the start (cumulative).
    pub probes: u64,
    /// Moves of owned sessions into `Jeopardy` (a failed keepalive) in
    /// this minute.
    pub jeopardy: u64,
    /// Raft id of the leader at the end of the minute; `None` if no node
    /// said it leads within the sampling timeout.
    pub leader: Option<u64>,
    /// The leader's Raft term at the end of the minute.
    #[serde(default)]
    pub term: Option<u64>,
    /// Open sessions in the leader's state (`Stats::sessions`).
    pub cluster_sessions: Option<u64>,
    /// The leader's applied log index at the end of the minute.
    pub applied_index: Option<u64>,
    /// 1-minute load average of the machine at the end of the minute.
    pub load1: f64,
    /// What else happened in the minute (the failover), empty if nothing.
    pub note: String,
}

/// The leader failover in the middle of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    /// Raft id of the leader that was SIGKILLed.
    pub killed_node: u64,
    /// When it was killed, seconds since the run started.
    pub killed_at_s: f64,
    /// UTC time of the kill, to read the node logs by.
    pub killed_utc: String,
    /// Raft id of the next leader, if one was found within 30 s.
    pub new_leader: Option<u64>,
    /// From the kill until another node answered status as leader, ms.
    pub new_leader_after_ms: Option<u64>,
    /// When the killed node was started again on its data, seconds since
    /// the run started.
    pub restarted_at_s: f64,
}

/// A session of the run that ended without the run closing it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LostSession {
    /// The session id.
    pub session: u64,
    /// `idle <k>` or `worker <i>`.
    pub role: String,
    /// When it was opened, seconds since the run started.
    pub opened_at_s: f64,
    /// When the loss was first noticed, seconds since the run started.
    pub detected_at_s: f64,
    /// UTC time of that, to read the node logs by.
    pub detected_utc: String,
    /// Who noticed, in the order they did: `event` (`SessionEnded` from
    /// the observer), `library` (the session turned `Expired` or
    /// `is_valid()` false), `read` (a session read found it absent).
    pub sources: Vec<String>,
    /// The cluster's cause (`Expired`, `Revoked: <reason>`, …) when an
    /// event said it.
    pub cause: Option<String>,
    /// Log index of the `SessionEnded` entry, when an event said it.
    pub event_index: Option<u64>,
    /// The session's last state changes in the library: seconds since the
    /// run started, the state, and how much local validity it had left
    /// then, ms (negative: already over).
    pub state_changes: Vec<(f64, String, i64)>,
}

/// A `ClockSkewDetected` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkewEvent {
    /// Log index of the entry that raised it.
    pub index: u64,
    /// When the observer saw it, seconds since the run started.
    pub seen_at_s: f64,
    /// The session whose client clock was found slow.
    pub session: u64,
    /// Whether that session is one of the run's.
    pub owned: bool,
    /// How much slower than cluster time its clock was shown to run, ppm.
    pub slow_ppm: u64,
    /// The drift bound its client must now apply, ppm.
    pub client_rho_ppm: u64,
    /// Whether the client was flagged as broken.
    pub alert: bool,
}

/// A session of the run that got `Probe` events (suspected of failing by
/// the cluster's failure predictor; a healthy client answers them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbedSession {
    /// The session id.
    pub session: u64,
    /// `idle <k>` or `worker <i>`; empty if not one of the run's.
    pub role: String,
    /// Probe events it got.
    pub probes: u64,
}

/// A gap in the observer's event stream (`truncated` batch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObserveGap {
    /// When, seconds since the run started.
    pub at_s: f64,
    /// The observer's position before the batch.
    pub after_index: u64,
    /// The batch's `next_after_index`.
    pub next_after_index: u64,
}

/// The whole run's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Length of the loaded part of the run, s.
    pub duration_s: f64,
    /// The workers' cycles over the whole run.
    #[serde(flatten)]
    pub latencies: Latencies,
    /// Failed operations by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first failures in full: seconds since the run started, message.
    pub error_samples: Vec<(f64, String)>,
    /// Sessions the run opened (idle, workers, and worker sessions opened
    /// again after a loss).
    pub sessions_opened: u64,
    /// Sessions lost (ended without the run closing them).
    pub sessions_lost: u64,
    /// Of those, how many each source noticed (`event`, `library`,
    /// `read`).
    pub lost_by_source: BTreeMap<String, u64>,
    /// `ClockSkewDetected` events, for any session.
    pub skew_events: u64,
    /// `Probe` events for the run's sessions.
    pub probes: u64,
    /// `NodeClockAlert` events.
    pub node_clock_alerts: u64,
    /// Moves of the run's sessions into `Jeopardy`.
    pub jeopardy: u64,
    /// Gaps (truncated batches) in the observer's stream; each was followed
    /// by a read of every owned session.
    pub observe_gaps: u64,
    /// Observe calls that failed (retried).
    pub observe_errors: u64,
    /// Session reads done to cross-check the events (each minute, after a
    /// gap and at the end).
    pub session_reads: u64,
    /// Sessions the run failed to close at the end.
    pub close_errors: u64,
    /// Raft terms begun during the load: the leader's term at the last
    /// sample minus its term when the load started (`None` if either was
    /// not read). Every election, spurious or caused by the failover,
    /// begins one; with no failover it should stay 0.
    #[serde(default)]
    pub term_changes: Option<u64>,
}

/// What the run was asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Minutes of load.
    pub minutes: u32,
    /// Worker sessions looping lock → fenced put → unlock, each on its own
    /// lock `soak/w<i>`.
    pub workers: usize,
    /// Sessions that only keep themselves alive.
    pub idle_sessions: usize,
    /// `Client`s the idle sessions are spread over.
    pub idle_clients: usize,
    /// TTL every session asks for, ms.
    pub ttl_ms: u64,
    /// Minute at whose end the leader is SIGKILLed; `None`: no failover.
    pub failover_at_minute: Option<u32>,
    /// How long the killed leader stays down, ms.
    pub restart_after_ms: u64,
    /// Extra `driftlock serve` flags of every node (empty: defaults).
    pub serve_args: Vec<String>,
}

/// The machine and its load.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineLoad {
    /// Logical CPUs.
    pub cores: usize,
    /// Median latency of a 4 KiB write + fdatasync in the temporary
    /// directory's file system before the run, µs.
    pub fdatasync_p50_us: u64,
    /// 99th percentile of the same, µs.
    pub fdatasync_p99_us: u64,
    /// 1, 5 and 15-minute load averages before the cluster started.
    pub load_before: [f64; 3],
    /// The same after the run.
    pub load_after: [f64; 3],
}

/// Lost session ids a verdict lists (the report has them all).
const LOST_IDS_LISTED: usize = 20;

/// The JSON artifact of one soak run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    /// The command line, as someone would type it.
    pub command: String,
    /// `git rev-parse HEAD` of the source tree when the run started
    /// (`-dirty` when tracked files had uncommitted changes), `unknown`
    /// outside git.
    pub git_revision: String,
    /// UTC start of the load.
    pub started_utc: String,
    /// When the load started, seconds since the run started (the
    /// observer's start; every `*_at_s` counts from there). The sessions
    /// were opened in between.
    pub load_started_s: f64,
    /// What was asked.
    pub settings: Settings,
    /// The machine and its load.
    pub machine: MachineLoad,
    /// One row per minute.
    pub minutes: Vec<MinuteRow>,
    /// The whole run.
    pub totals: Totals,
    /// The failover, if one was done.
    pub failover: Option<Failover>,
    /// Every session lost, in the order noticed.
    pub lost_sessions: Vec<LostSession>,
    /// Every skew event seen.
    pub skew_events: Vec<SkewEvent>,
    /// Every session that got probes, most probed first.
    pub probed_sessions: Vec<ProbedSession>,
    /// Every gap in the observer's stream.
    pub observe_gaps: Vec<ObserveGap>,
    /// Where the node and client logs of the run were kept.
    pub logs_dir: String,
    /// Whether the run passed: no session lost, no skew event.
    pub passed: bool,
}

impl SoakReport {
    /// Why the run fails as a check: lost sessions and skew events (empty:
    /// it passes).
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.totals.sessions_lost > 0 {
            let mut ids: Vec<String> = self
                .lost_sessions
                .iter()
                .take(LOST_IDS_LISTED)
                .map(|l| l.session.to_string())
                .collect();
            if self.lost_sessions.len() > LOST_IDS_LISTED {
                ids.push("…".into());
            }
            why.push(format!(
                "{} session(s) lost: {}",
                self.totals.sessions_lost,
                ids.join(", ")
            ));
        }
        if self.totals.skew_events > 0 {
            why.push(format!("{} clock-skew event(s) raised", self.totals.skew_events));
        }
        if let (None, Some(n @ 1..)) = (self.settings.failover_at_minute, self.totals.term_changes) {
            why.push(format!(
                "{n} Raft term change(s) with no fault injected (spurious elections)"
            ));
        }
        why
    }

    /// The artifact as pretty JSON with a final newline.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }

    /// The Markdown section: a header line, the per-minute table, the
    /// totals and the verdict.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let st = &self.settings;
        s.push_str(&format!(
            "Run: `{}` at {} (revision `{}`). {} workers (lock → fenced put → unlock on `soak/w<i>`), \
             {} idle sessions over {} clients, TTL {} s, {} min{}. Machine: {} logical cores; \
             4 KiB write + fdatasync p50 {} µs, p99 {} µs; load average {} before, {} after.\n\n",
            self.command,
            self.started_utc,
            self.git_revision,
            st.workers,
            st.idle_sessions,
            st.idle_clients,
            fmt_s(st.ttl_ms),
            st.minutes,
            match (&self.failover, st.failover_at_minute) {
                (Some(f), _) => format!(
                    "; leader (node {}) SIGKILLed {} into the load and restarted at {} (its data kept)",
                    f.killed_node,
                    fmt_clock(f.killed_at_s - self.load_started_s),
                    fmt_clock(f.restarted_at_s - self.load_started_s)
                ),
                (None, Some(m)) => format!("; failover planned after minute {m} but not done"),
                (None, None) => ", no failover".into(),
            },
            self.machine.cores,
            self.machine.fdatasync_p50_us,
            self.machine.fdatasync_p99_us,
            fmt_load(&self.machine.load_before),
            fmt_load(&self.machine.load_after),
        ));
        s.push_str(
            "| min | cycles/s | cycle p50 ms | cycle p99 ms | lock p50 ms | lock p99 ms | errors \
             | RSS MB (n1/n2/n3) | disk MB (n1/n2/n3) | lost | skew | probes | leader | load | note |\n",
        );
        s.push_str("|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|\n");
        for r in &self.minutes {
            let l = &r.latencies;
            s.push_str(&format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
                r.minute,
                l.ops_per_sec,
                fmt_ms(l.cycle_p50_us),
                fmt_ms(l.cycle_p99_us),
                fmt_ms(l.lock_p50_us),
                fmt_ms(l.lock_p99_us),
                l.errors,
                fmt_mb_list(&r.rss_bytes),
                fmt_mb_list(&r.disk_bytes),
                r.sessions_lost,
                r.skew_events,
                r.probes,
                r.leader.map(|l| l.to_string()).unwrap_or_else(|| "–".into()),
                r.load1,
                r.note,
            ));
        }
        let l = &t.latencies;
        s.push_str(&format!(
            "\nTotals over {:.0} s: {} cycles, {:.0} cycles/s; cycle p50 {} ms, p99 {} ms, max {} ms; \
             lock p50 {} ms, p99 {} ms; fenced put p99 {} ms; unlock p99 {} ms; {} failed operations{}. \
             Sessions: {} opened, **{} lost**{}; **{} skew events**; {} probes (to {} sessions); {} node clock alerts; \
             {} moves to Jeopardy; {} gaps in the event stream; {} session reads cross-checked; \
             **{} Raft term changes**.\n",
            t.duration_s,
            l.cycles,
            l.ops_per_sec,
            fmt_ms(l.cycle_p50_us),
            fmt_ms(l.cycle_p99_us),
            fmt_ms(l.cycle_max_us),
            fmt_ms(l.lock_p50_us),
            fmt_ms(l.lock_p99_us),
            fmt_ms(l.put_p99_us),
            fmt_ms(l.unlock_p99_us),
            l.errors,
            if t.errors_by_kind.is_empty() {
                String::new()
            } else {
                let kinds: Vec<String> = t.errors_by_kind.iter().map(|(k, n)| format!("{k} × {n}")).collect();
                format!(" ({})", kinds.join("; "))
            },
            t.sessions_opened,
            t.sessions_lost,
            if t.lost_by_source.is_empty() {
                String::new()
            } else {
                let by: Vec<String> = t.lost_by_source.iter().map(|(k, n)| format!("{k} {n}")).collect();
                format!(" (noticed by {})", by.join(", "))
            },
            t.skew_events,
            t.probes,
            self.probed_sessions.len(),
            t.node_clock_alerts,
            t.jeopardy,
            t.observe_gaps,
            t.session_reads,
            t.term_changes.map_or_else(|| "–".to_string(), |n| n.to_string()),
        ));
        let failures = self.failures();
        if failures.is_empty() {
            s.push_str(&format!(
                "\nVerdict: **pass** — no session lost, no skew event{}.\n",
                if self.settings.failover_at_minute.is_none() {
                    ", no election"
                } else {
                    ""
                }
            ));
        } else {
            s.push_str(&format!("\nVerdict: **fail** — {}.\n", failures.join("; ")));
        }
        s
    }
}

/// µs as ms with one decimal.
fn fmt_ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// ms as seconds, without a needless decimal.
fn fmt_s(ms: u64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

/// A time into the load as `10m02s` (negative: `0m00s`).
pub(crate) fn fmt_clock(s: f64) -> String {
    let whole = s.max(0.0).round() as u64;
    format!("{}m{:02}s", whole / 60, whole % 60)
}

fn fmt_load(l: &[f64; 3]) -> String {
    format!("{:.2}/{:.2}/{:.2}", l[0], l[1], l[2])
}

/// Per-node byte counts as `a/b/c` MB, `–` for a node with none.
fn fmt_mb_list(v: &[Option<u64>]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|b| match b {
            Some(b) => format!("{:.0}", *b as f64 / (1024.0 * 1024.0)),
            None => "–".into(),
        })
        .collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    fn row(minute: u32, lost: u64, note: &str) -> MinuteRow {
        let mut w = Window::default();
        // 600 cycles of 2..=601 ms... scaled to µs: 2 000 + 1 000 k.
        for k in 0..600u64 {
            w.cycle_us.push(2_000 + 1_000 * k);
            w.lock_us.push(1_000 + k);
            w.put_us.push(500);
            w.unlock_us.push(700);
        }
        w.error(1.0, "lock: unavailable".into(), "cluster unavailable: x".into());
        MinuteRow {
            minute,
            window_s: 60.0,
            latencies: w.latencies(60.0),
            rss_bytes: vec![Some(40 * MB), None, Some(42 * MB)],
            disk_bytes: vec![Some(100 * MB), Some(101 * MB), Some(99 * MB)],
            sessions_lost: lost,
            skew_events: 0,
            probes: 5,
            jeopardy: 3,
            leader: Some(2),
            term: Some(3),
            cluster_sessions: Some(1016),
            applied_index: Some(123_456),
            load1: 4.31,
            note: note.into(),
        }
    }

    fn report(lost: Vec<LostSession>, skew: Vec<SkewEvent>) -> SoakReport {
        let mut totals = Totals {
            duration_s: 120.0,
            sessions_opened: 1016,
            sessions_lost: lost.len() as u64,
            skew_events: skew.len() as u64,
            ..Totals::default()
        };
        totals.latencies.cycles = 1200;
        totals.latencies.ops_per_sec = 10.0;
        SoakReport {
            command: "driftlock-bench soak --quick".into(),
            git_revision: "abc123".into(),
            started_utc: "2026-12-01 10:00 UTC".into(),
            load_started_s: 3.0,
            settings: Settings {
                minutes: 2,
                workers: 16,
                idle_sessions: 1000,
                idle_clients: 8,
                ttl_ms: 10_000,
                failover_at_minute: Some(1),
                restart_after_ms: 5_000,
                serve_args: Vec::new(),
            },
            machine: MachineLoad {
                cores: 2,
                load_before: [1.0, 2.0, 3.0],
                ..MachineLoad::default()
            },
            minutes: vec![row(1, 0, ""), row(2, lost.len() as u64, "leader 2 killed")],
            totals,
            failover: Some(Failover {
                killed_node: 2,
                killed_at_s: 64.4,
                killed_utc: "2026-12-01T10:01:01Z".into(),
                new_leader: Some(1),
                new_leader_after_ms: Some(900),
                restarted_at_s: 69.5,
            }),
            lost_sessions: lost,
            skew_events: skew,
            probed_sessions: Vec::new(),
            observe_gaps: Vec::new(),
            logs_dir: "/tmp/x".into(),
            passed: true,
        }
    }

    #[test]
    fn a_window_reports_percentiles_rate_and_errors() {
        let r = row(1, 0, "");
        let l = &r.latencies;
        assert_eq!(l.cycles, 600);
        assert!((l.ops_per_sec - 10.0).abs() < 1e-9);
        // Sorted cycles are 2 000 + 1 000 k; rank round(0.5 × 599) = 300.
        assert_eq!(l.cycle_p50_us, 302_000);
        // rank round(0.99 × 599) = 593.
        assert_eq!(l.cycle_p99_us, 595_000);
        assert_eq!(l.cycle_max_us, 601_000);
        assert_eq!(l.lock_p50_us, 1_300);
        assert_eq!(l.put_p99_us, 500);
        assert_eq!(l.errors, 1);
        assert_eq!(Window::default().latencies(0.0), Latencies::default());
    }

    #[test]
    fn absorbing_windows_adds_samples_and_error_counts_but_caps_the_samples() {
        let mut total = Window::default();
        let mut w = Window {
            cycle_us: vec![5, 6],
            ..Window::default()
        };
        for k in 0..ERROR_SAMPLES + 2 {
            w.error(k as f64, "put: session expired".into(), format!("e{k}"));
        }
        total.absorb(&w);
        total.absorb(&w);
        assert_eq!(total.cycle_us, vec![5, 6, 5, 6]);
        assert_eq!(
            total.errors.get("put: session expired"),
            Some(&(2 * (ERROR_SAMPLES as u64 + 2)))
        );
        assert_eq!(total.error_count(), 2 * (ERROR_SAMPLES as u64 + 2));
        assert_eq!(total.error_samples.len(), ERROR_SAMPLES);
        assert_eq!(total.error_samples[0], (0.0, "e0".to_string()));
    }

    #[test]
    fn the_markdown_table_has_one_row_per_minute_with_per_node_columns() {
        let md = report(Vec::new(), Vec::new()).markdown();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        // Header and two minutes.
        assert_eq!(rows.len(), 3, "{md}");
        let cells: Vec<&str> = rows[2].split('|').map(str::trim).collect();
        // Leading and trailing empty cells around 15 columns.
        assert_eq!(cells.len(), 17, "{}", rows[2]);
        assert_eq!(cells[1], "2");
        assert_eq!(cells[2], "10");
        assert_eq!(cells[3], "302.0");
        assert_eq!(cells[4], "595.0");
        assert_eq!(cells[7], "1");
        assert_eq!(cells[8], "40/–/42");
        assert_eq!(cells[9], "100/101/99");
        assert_eq!(cells[12], "5");
        assert_eq!(cells[13], "2");
        assert_eq!(cells[14], "4.3");
        assert_eq!(cells[15], "leader 2 killed");
        assert!(
            md.contains("SIGKILLed 1m01s into the load and restarted at 1m07s"),
            "{md}"
        );
        assert!(md.contains("load average 1.00/2.00/3.00 before"), "{md}");
        assert!(md.contains("Verdict: **pass**"), "{md}");
    }

    #[test]
    fn lost_sessions_and_skew_events_fail_the_check() {
        let lost = LostSession {
            session: 77,
            role: "idle 3".into(),
            opened_at_s: -2.0,
            detected_at_s: 30.5,
            detected_utc: "2026-12-01T10:00:30Z".into(),
            sources: vec!["event".into(), "library".into()],
            cause: Some("Expired".into()),
            event_index: Some(9_000),
            state_changes: vec![(29.0, "Jeopardy".into(), 1_500), (30.5, "Expired".into(), -3)],
        };
        let skew = SkewEvent {
            index: 9_001,
            seen_at_s: 31.0,
            session: 78,
            owned: true,
            slow_ppm: 289_272,
            client_rho_ppm: 100_000,
            alert: true,
        };
        assert!(report(Vec::new(), Vec::new()).failures().is_empty());
        let r = report(vec![lost.clone()], Vec::new());
        assert_eq!(r.failures(), vec!["1 session(s) lost: 77".to_string()]);
        assert!(r.markdown().contains("Verdict: **fail** — 1 session(s) lost: 77."));
        let r = report(Vec::new(), vec![skew.clone()]);
        assert_eq!(r.failures(), vec!["1 clock-skew event(s) raised".to_string()]);
        let r = report(vec![lost.clone()], vec![skew]);
        assert_eq!(r.failures().len(), 2);
        // A long list is cut in the verdict, not in the report.
        let many: Vec<LostSession> = (0..LOST_IDS_LISTED as u64 + 5)
            .map(|k| LostSession {
                session: 100 + k,
                ..lost.clone()
            })
            .collect();
        let r = report(many, Vec::new());
        let why = &r.failures()[0];
        assert!(why.starts_with("25 session(s) lost: 100, 101,"), "{why}");
        assert!(why.ends_with(&format!("{}, …", 100 + LOST_IDS_LISTED - 1)), "{why}");
        assert_eq!(r.lost_sessions.len(), 25);
    }

    #[test]
    fn term_changes_fail_the_check_only_when_no_failover_was_injected() {
        let mut r = report(Vec::new(), Vec::new());
        r.totals.term_changes = Some(1);
        assert!(r.failures().is_empty(), "the failover's election is expected");
        r.settings.failover_at_minute = None;
        r.failover = None;
        assert_eq!(
            r.failures(),
            vec!["1 Raft term change(s) with no fault injected (spurious elections)".to_string()]
        );
        assert!(r.markdown().contains("**1 Raft term changes**"));
        r.totals.term_changes = Some(0);
        assert!(r.failures().is_empty());
        assert!(r.markdown().contains("no skew event, no election."));
    }

    #[test]
    fn the_json_artifact_round_trips_and_flattens_the_latencies() {
        let r = report(Vec::new(), Vec::new());
        let json = r.to_json().unwrap();
        assert!(json.ends_with("}\n"));
        let back: SoakReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        // Row figures sit at the row's top level, as in latest.json.
        assert_eq!(v["minutes"][0]["cycle_p99_us"], 595_000);
        assert_eq!(v["minutes"][0]["rss_bytes"][1], serde_json::Value::Null);
        assert_eq!(v["totals"]["cycles"], 1200);
        assert_eq!(v["git_revision"], "abc123");
    }
}
