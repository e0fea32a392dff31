//! driftlock's Jepsen-style suite: runs real node processes under faults
//! (kill, pause, partition, clock skew), records operation histories and
//! checks them for linearizability and lock safety.
//!
//! Not yet built: this crate currently only fixes its place in the workspace.
