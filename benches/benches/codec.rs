//! Client request encode/decode: the bincode bytes of the tarpc messages a
//! lock acquire and its grant travel as (the client protocol's wire format).
//!
//! `cargo bench -p driftlock-benches --bench codec`

// A benchmark aborts on a failed setup step; unwrap and expect say which.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion's group and main macros generate undocumented public functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use driftlock_proto::{DriftlockApiRequest, DriftlockApiResponse, LockMode, Reply, SessionOp, SessionSecret};

fn acquire_request() -> DriftlockApiRequest {
    DriftlockApiRequest::SessionOp {
        session: 42,
        secret: SessionSecret([0x5a; 32]),
        seq: 1_000,
        op: SessionOp::Acquire {
            name: "jobs/nightly-compaction/shard-0017".into(),
            mode: LockMode::Exclusive,
            wait_us: 60_000_000,
        },
    }
}

fn granted_response() -> DriftlockApiResponse {
    DriftlockApiResponse::SessionOp(Ok(Reply::Granted {
        token: 987_654,
        validity_us: 9_500_000,
    }))
}

fn bench_codec(c: &mut Criterion) {
    let request = acquire_request();
    let response = granted_response();
    let request_bytes = bincode::serialize(&request).unwrap_or_default();
    let response_bytes = bincode::serialize(&response).unwrap_or_default();
    assert!(
        !request_bytes.is_empty() && !response_bytes.is_empty(),
        "the messages encode"
    );

    let mut g = c.benchmark_group("client_codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_acquire_request", |b| {
        b.iter(|| bincode::serialize(std::hint::black_box(&request)).map(|v| v.len()))
    });
    g.bench_function("decode_acquire_request", |b| {
        b.iter(|| bincode::deserialize::<DriftlockApiRequest>(std::hint::black_box(&request_bytes)).is_ok())
    });
    g.bench_function("encode_granted_response", |b| {
        b.iter(|| bincode::serialize(std::hint::black_box(&response)).map(|v| v.len()))
    });
    g.bench_function("decode_granted_response", |b| {
        b.iter(|| bincode::deserialize::<DriftlockApiResponse>(std::hint::black_box(&response_bytes)).is_ok())
    });
    g.finish();
    println!(
        "client_codec: acquire request {} bytes, granted response {} bytes",
        request_bytes.len(),
        response_bytes.len()
    );
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
