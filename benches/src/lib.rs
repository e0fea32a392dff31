//! driftlock's benchmarks. Criterion micro-benchmarks live in `benches/`
//! (`cargo bench -p driftlock-benches`); the cluster load generator that
//! compares driftlock with etcd will live here as the `driftlock-bench`
//! binary.
