//! driftlock's Jepsen-style suite: runs real node processes under faults
//! (kill, pause, partitions, packet loss, slow client links and disks,
//! clock skew and rate changes, leader transfers, membership changes,
//! snapshot installs, cut-off handovers), records operation histories and
//! checks them for linearizability and lock safety; a run counts only if
//! its checkers saw enough ([`verdict`]).
//!
//! The pure half needs no process and no network:
//!
//! - [`history`]: the operation history ([`Op`]: invoke, then `ok`, `fail`
//!   or `info`), a [`History`] recorder shared by the workload tasks that
//!   writes `history.jsonl` into a run directory, its loader (to re-check an
//!   old run), and the pairing of invocations with completions.
//! - [`porcupine`]: the export of the register workload to Porcupine's
//!   format, for a cross-check with that Go checker.
//! - [`linearizability`]: a Wing–Gong–Lowe linearizability checker for the
//!   KV register, partitioned per key.
//! - [`checkers`]: lock safety, fencing-token order, the fenced counter,
//!   elections and durability, and the [`VerdictTable`] that sums a run up.
//!
//! Times in a history are nanoseconds of the harness's monotonic clock
//! (`*_ns`), never a node's clock: the nodes may run under skewed clocks.
//! An indeterminate outcome (a timeout) is recorded as `info`, never as
//! `fail`: the operation may or may not have taken effect, and every checker
//! treats it as either.
//!
//! On top of them, the half that runs things:
//!
//! - [`cluster`]: real `driftlock serve` processes, in network namespaces
//!   when possible;
//! - [`nemesis`]: the faults and their seeded schedule ([`slowdisk`]: the
//!   fsync shim of the slow-disk fault);
//! - [`workload`]: register, election and lock/counter clients;
//! - [`run`]: one whole run (used by the `driftlock-jepsen` binary and the
//!   broken-mode test), shown as it runs by [`progress`];
//! - [`verdict`]: whether the run is valid — every requested checker
//!   passed on enough data, every requested nemesis ran, the final restart
//!   and reads completed;
//! - [`plots`]: each run's latency and throughput pictures;
//! - [`campaign`]: the table of a campaign of seeds. See docs/jepsen.md.

#![forbid(unsafe_code)]

pub mod campaign;
pub mod checkers;
pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod plots;
pub mod porcupine;
pub mod progress;
pub mod run;
pub mod slowdisk;
pub mod verdict;
pub mod workload;

pub use checkers::{check_all, CheckConfig, Status, Verdict, VerdictTable};
pub use history::{
    load_jsonl, pair, Completion, Function, History, HistoryError, LockHold, MasterView, Mastership, Op, OpKind,
    PairedOp, Value,
};
pub use linearizability::{check_register, Budget, Linearizability, LinearizabilityReport};
