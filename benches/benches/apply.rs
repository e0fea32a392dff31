//! State-machine apply throughput: acquire + release pairs per second on a
//! state that already holds 1 M locks, and the heap bytes per held lock.
//!
//! `cargo bench -p driftlock-benches --bench apply`

// A benchmark aborts on a failed setup step; unwrap and expect say which.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion's group and main macros generate undocumented public functions.
#![allow(missing_docs)]
// The counting allocator wraps the system allocator (an unsafe trait).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use driftlock_proto::{Config, LockMode, Principal, Reply, SessionOp, SessionSecret};
use driftlock_state_machine::{Command, EntryMeta, StateMachine};

/// Counts live heap bytes so the bench can report bytes per held lock.
/// Hand-written because it is a few lines and needs no dependency.
struct CountingAlloc;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const HELD_LOCKS: u64 = 1_000_000;
const SESSIONS: u64 = 1_000;
const TS_US: u64 = 1_000_000_000;

struct Leader {
    sm: StateMachine,
    index: u64,
}

impl Leader {
    fn apply(&mut self, cmd: Command) -> Reply {
        self.index += 1;
        match self
            .sm
            .apply(
                cmd,
                EntryMeta {
                    index: self.index,
                    ts_us: TS_US,
                },
            )
            .0
        {
            Ok(r) => r,
            Err(e) => panic!("bench command refused: {e}"),
        }
    }
}

fn acquire(session: u64, seq: u64, name: String) -> Command {
    Command::Session {
        session,
        seq,
        op: SessionOp::Acquire {
            name,
            mode: LockMode::Exclusive,
            wait_us: 0,
        },
        by: bench_client(),
    }
}

/// The principal the benchmark's commands come from: an ordinary client,
/// so each apply pays the default policy's check as in production.
fn bench_client() -> Principal {
    Principal::client("bench")
}

/// A state machine holding `HELD_LOCKS` locks across `SESSIONS` sessions.
fn loaded() -> (Leader, Vec<u64>, isize) {
    let mut config = Config::default();
    config.limits.max_locks_per_session = HELD_LOCKS;
    let mut leader = Leader {
        sm: StateMachine::new(config),
        index: 0,
    };
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let open = Command::OpenSession {
            nonce: u128::from(i),
            client_name: format!("bench-{i}"),
            requested_ttl_us: 300_000_000,
            owner: bench_client(),
            secret_sha256: SessionSecret([7; 32]).digest(),
        };
        match leader.apply(open) {
            Reply::SessionOpened { session, .. } => sessions.push(session),
            other => panic!("unexpected {other:?}"),
        }
    }
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for n in 0..HELD_LOCKS {
        let session = sessions[(n % SESSIONS) as usize];
        let seq = n / SESSIONS + 1;
        leader.apply(acquire(session, seq, format!("held/{n:08}")));
    }
    let bytes = LIVE_BYTES.load(Ordering::Relaxed) - before;
    (leader, sessions, bytes)
}

fn bench_apply(c: &mut Criterion) {
    let (mut leader, sessions, bytes) = loaded();
    println!(
        "state machine with {HELD_LOCKS} held locks: {} MiB heap for the locks, {} bytes per held lock \
         (including each session's dedupe cache of {} responses)",
        bytes / (1 << 20),
        bytes / HELD_LOCKS as isize,
        leader.sm.config().limits.dedupe_window
    );
    // A snapshot's cost on the apply path is its capture; the encoding
    // runs on another thread in the node (raft-store's snapshot builder).
    let started = std::time::Instant::now();
    let view = leader.sm.snapshot();
    let capture = started.elapsed();
    let started = std::time::Instant::now();
    let encoded = bincode::serialize(&view).expect("encode");
    let encode = started.elapsed();
    println!(
        "snapshot of {HELD_LOCKS} held locks: capture {:.3} ms, encode {:.0} ms, {} bytes ({} per held lock)",
        capture.as_secs_f64() * 1e3,
        encode.as_secs_f64() * 1e3,
        encoded.len(),
        encoded.len() as u64 / HELD_LOCKS
    );
    drop((view, encoded));
    let session = sessions[0];
    let mut seq = HELD_LOCKS / SESSIONS + 1;
    let mut n = 0u64;
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    group.bench_function("acquire+release pair, 1M locks held", |b| {
        b.iter(|| {
            n += 1;
            let name = format!("hot/{}", n % 1024);
            seq += 1;
            leader.apply(acquire(session, seq, name.clone()));
            seq += 1;
            leader.apply(Command::Session {
                session,
                seq,
                op: SessionOp::Release { name },
                by: bench_client(),
            });
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench_apply
}
criterion_main!(benches);
