//! Log append throughput: 256-byte entries in batches of 1, 16 and 256, each
//! batch flushed (the append callback waited for) before the next, through
//! the `RaftLogStorage` API. Beside it, the machine's fdatasync latency
//! (256-byte write + `File::sync_data`, median of 200) in the same
//! directory, the floor under a flushed batch.
//!
//! `cargo bench -p driftlock-raft-store --bench append -- --warm-up-time 1 --measurement-time 3`

// A benchmark aborts on a failed setup step; unwrap and expect say which.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion's group and main macros generate undocumented public functions.
#![allow(missing_docs)]

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use driftlock_raft_store::{Entry, StampedRequest, TypeConfig};
use driftlock_state_machine::{Command, StampedCommand};
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorageExt;

/// Payload bytes per entry.
const ENTRY_BYTES: usize = 256;
const FSYNC_SAMPLES: usize = 200;

fn entry(index: u64) -> Entry {
    Entry::new_normal(
        openraft::testing::log_id::<TypeConfig>(1, 1, index),
        StampedRequest(StampedCommand {
            ts_us: index,
            command: Command::KvPut {
                key: "k".to_string(),
                value: vec![(index % 251) as u8; ENTRY_BYTES],
                by: driftlock_proto::Principal::Anonymous,
            },
        }),
    )
}

/// Median latency of a 256-byte write followed by `sync_data`.
fn fdatasync_median(dir: &Path) -> Duration {
    let path = dir.join("fdatasync-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("probe file");
    let block = [0x5au8; ENTRY_BYTES];
    let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
    for i in 0..FSYNC_SAMPLES {
        file.seek(SeekFrom::Start((i * ENTRY_BYTES) as u64)).expect("seek");
        let started = Instant::now();
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(started.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let fsync = fdatasync_median(dir.path());
    println!(
        "fdatasync (write {ENTRY_BYTES} B + sync_data), median of {FSYNC_SAMPLES}: {:.1} µs",
        fsync.as_secs_f64() * 1e6
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = driftlock_raft_store::open(dir.path().join("store")).expect("open the store");
    let mut log = store.log_store;
    let mut next: u64 = 1;

    let mut group = c.benchmark_group("append_256B_flushed");
    for batch in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let entries: Vec<Entry> = (next..next + batch).map(entry).collect();
                    let started = Instant::now();
                    runtime.block_on(log.blocking_append(entries)).expect("append");
                    elapsed += started.elapsed();
                    next += batch;
                }
                elapsed
            })
        });
    }
    group.finish();
    println!(
        "(a batch-1 append costs one flush; compare its time per iteration with the fdatasync median {:.1} µs)",
        fsync.as_secs_f64() * 1e6
    );
}

criterion_group!(benches, append);
criterion_main!(benches);
