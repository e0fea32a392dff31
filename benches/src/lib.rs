//! driftlock's benchmarks. Criterion micro-benchmarks live in `benches/`
//! (`cargo bench -p driftlock-benches`); the `driftlock-bench` binary runs the
//! same workloads against a 3-node driftlock cluster and a 3-node etcd cluster
//! and writes `benches/results/latest.json`, the table in BENCHMARKS.md and PNG
//! plots; the `predict-eval` binary measures the predictive failure analysis on
//! a real cluster for BENCHMARKS.md. This library holds what the
//! `driftlock-bench` binary runs: the clusters, the etcd client, the workloads,
//! the held-locks measurement (memory, fill rate, restart), the lock latency
//! while snapshots of a large state are taken, the cluster-time rate
//! measurement, the report, and the soak run (a long steady load with a
//! leader failover that must lose no session).

pub mod cluster;
pub mod etcd;
pub mod memory;
pub mod rate;
pub mod report;
pub mod snapshot_latency;
pub mod soak;
pub mod workload;
