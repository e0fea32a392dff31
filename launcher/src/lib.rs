//! Starting and controlling real `driftlock serve` processes.
//!
//! - [`NodeSpec`]: everything one node process is started with (id,
//!   addresses, data directory, log file, extra `serve` flags and
//!   environment), and the [`Wrapper`] it may run under (a command prefix
//!   such as `ip netns exec NS` or `faketime …`, and/or `LD_PRELOAD` of
//!   libfaketime);
//! - [`NodeProcess`]: one node's process: spawn, SIGKILL, SIGTERM with a
//!   grace period, SIGSTOP/SIGCONT, restart on the same data directory,
//!   waiting until it answers status, the tail of its log;
//! - [`Cluster`]: the nodes together: certificates ([`Cluster::secure`]:
//!   a CA, one per node and an administrator's, for mutual TLS),
//!   bring-up (spawn, wait, `Init` when new, wait for a leader that has
//!   applied its first entry), leader lookups, stopping all.
//!
//! `driftlock dev`, the process tests (through `driftlock-testkit`), the
//! jepsen suite and the benchmarks all start nodes through this crate. It
//! talks to nodes only through `driftlock_proto`'s one-shot calls, so it
//! links neither the server nor the client library. Every failure is a
//! typed [`LaunchError`] that names the node and carries the end of its log
//! where that explains it; nothing here panics.

#![forbid(unsafe_code)]

mod cluster;
mod error;
mod log;
mod process;
mod spec;

pub use cluster::{BringUp, Cluster, ADMIN_CERT};
pub use error::LaunchError;
pub use log::tail;
pub use process::NodeProcess;
pub use spec::{libfaketime, NodeSpec, Wrapper};

/// How long one status call may take while waiting for a node or a leader.
pub const STATUS_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// How long the `Init` call of a new cluster may take.
pub const INIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
