//! What driftlock's tests, the jepsen suite and the benchmarks share to run
//! real nodes:
//!
//! - the launcher (`driftlock-launcher`, re-exported: node specs, wrappers,
//!   process control, bring-up);
//! - [`driftlock_exe`]: the one way to find (and, under cargo, build) the
//!   `driftlock` binary;
//! - [`free_addr`]: loopback addresses no other process takes;
//! - [`TestCluster`]: nodes in a temporary directory, killed on drop, with
//!   panicking short forms for tests;
//! - [`FaultProxy`]: a tarpc-aware TCP proxy that hangs, delays, drops and
//!   counts requests between a client and a node;
//! - [`counter`]: the fenced-counter workload; [`eventually`]: polling
//!   waits;
//! - [`cluster_time`]: a node's cluster time against the caller's raw
//!   clock (does it run ahead of real time, at what rate);
//! - [`prom`]: a node's Prometheus metrics; [`cli`]: the `driftlock`
//!   command run with a certificate, as a user runs it.
//!
//! It starts nodes as processes and never links the server
//! (`driftlock-node`, `driftlock-raft-store`, sled): the client library's
//! tests use it against the real thing.

#![forbid(unsafe_code)]

mod addr;
pub mod cli;
mod cluster;
pub mod cluster_time;
pub mod counter;
mod exe;
pub mod prom;
pub mod proxy;
mod wait;

pub use addr::{free_addr, free_port_on, try_free_addr};
pub use cluster::{TestCluster, TestkitError, START_TIMEOUT, TERMINATE_GRACE, TEST_TIMING_ARGS, UP_TIMEOUT};
pub use driftlock_launcher as launcher;
pub use driftlock_launcher::{libfaketime, BringUp, Cluster, LaunchError, NodeProcess, NodeSpec, Wrapper};
pub use exe::{driftlock_exe, ExeError};
pub use proxy::{DropMode, FaultProxy, ProxyTls, RuleId};
pub use wait::{eventually, eventually_async};
