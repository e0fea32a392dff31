//! driftlock's benchmarks. Criterion micro-benchmarks live in `benches/`
//! (`cargo bench -p driftlock-benches`); the `driftlock-bench` binary runs
//! the same workloads against a 3-node driftlock cluster and a 3-node etcd
//! cluster and writes `benches/results/latest.json`, the table in
//! BENCHMARKS.md and PNG plots.

#![warn(missing_docs)]

pub mod cluster;
pub mod etcd;
pub mod memory;
pub mod report;
pub mod workload;
