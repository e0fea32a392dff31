//! The driftlock server node and command line: wires openraft to
//! [`driftlock_raft_store`], serves the client API
//! ([`driftlock_client::proto`]) and node-to-node Raft traffic over tarpc,
//! stamps cluster time, ticks when idle, exports Prometheus metrics, and
//! runs a local development cluster (`driftlock dev`).

pub mod app;
pub mod clock;
pub mod clocksync;
pub mod config;
pub mod dev;
pub use driftlock_client::drift;
pub mod events;
pub mod handover;
pub mod health;
pub mod metrics;
pub mod network;
pub mod predict;
pub mod rpc;
pub mod server;
