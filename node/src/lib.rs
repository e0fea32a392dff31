//! The driftlock server node: wires openraft to [`driftlock_raft_store`],
//! serves the client API ([`driftlock_proto`]'s service) and node-to-node
//! Raft traffic over tarpc, stamps cluster time, ticks when idle, measures
//! its host and clock, exports Prometheus metrics and health probes
//! (`/metrics`, `/healthz`, `/readyz`), and runs a local
//! development cluster (`driftlock dev`). The `driftlock` binary adds the
//! user commands of `driftlock-cli`.

#![forbid(unsafe_code)]

pub mod app;
pub mod authz;
pub mod batch;
pub mod check;
pub mod clock;
pub mod clocksync;
pub mod config;
pub mod dev;
pub mod events;
pub mod failover;
pub mod handover;
pub mod health;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod network;
pub mod predict;
pub mod server;
pub mod tasks;
pub mod tls;
pub mod transfer;
