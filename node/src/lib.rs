//! The driftlock server node: wires openraft to [`driftlock_raft_store`],
//! serves the client API, runs the health, clock and client-profiling sensors,
//! exports metrics, and provides the `driftlock` command line.
//!
//! Not yet built: this crate currently only fixes its place in the workspace.
