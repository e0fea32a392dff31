//! Fuzz targets for every decoder that takes bytes from the network or the
//! disk, run for a bounded number of cases (stable Rust: proptest, no
//! cargo-fuzz): client frames (the frame codec, then bincode of
//! `tarpc::ClientMessage<DriftlockApiRequest>` as a node reads it, and of
//! the responses a client reads), Raft frames (both directions), snapshots
//! (`decode_snapshot`, which restores the state machine and checks its
//! invariants) and store frames (log entries, votes). Config files are
//! fuzzed in node/src/config/serve.rs's unit tests (the parser is
//! private).
//!
//! Inputs are random bytes and mutations of valid encodings (bytes
//! overwritten, inserted, removed, runs of 0xff over length prefixes,
//! truncation); for the store's crc-protected frames the mutated payload
//! is re-framed with a correct checksum so the decoder behind the check is
//! reached. A decoder may refuse; it must not panic (a panic fails the
//! case) or allocate without bound (which would abort the run).
//! `DRIFTLOCK_FUZZ_CASES` raises the number of cases per target (default
//! 512) for a longer run.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bincode::Options;
use driftlock_node::network::{RaftRpcRequest, RaftRpcResponse};
use driftlock_proto::codec::FrameCodec;
use driftlock_proto::{
    AdminRequest, Consistency, DriftlockApiRequest, DriftlockApiResponse, EventFilter, Fence, KvWrite, LockMode,
    MemberAddr, Principal, Query, Reply, SessionOp, SessionSecret,
};
use driftlock_raft_store::{frame, Entry, StampedRequest, TypeConfig, Vote};
use driftlock_state_machine::{Command, EntryMeta, StampedCommand, StateMachine};
use openraft::entry::RaftEntry;
use proptest::prelude::*;
use proptest::sample::Index;
use tarpc::tokio_util::bytes::BytesMut;
use tarpc::tokio_util::codec::Decoder;

fn cases() -> u32 {
    std::env::var("DRIFTLOCK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// What the wire carries: bincode with the options tokio-serde's `Bincode`
/// uses (varint integers, no limit).
fn wire() -> impl Options {
    bincode::DefaultOptions::new()
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    wire().serialize(value).unwrap()
}

#[derive(Clone, Debug)]
enum Edit {
    Overwrite(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    /// Eight bytes of 0xff: a length prefix claiming the most.
    Huge(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Remove),
        any::<Index>().prop_map(Edit::Huge),
    ]
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[Edit], cut: Option<Index>) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            bytes.push(0);
        }
        match e {
            Edit::Overwrite(i, b) => {
                let p = i.index(bytes.len());
                bytes[p] = *b;
            }
            Edit::Insert(i, b) => {
                let p = i.index(bytes.len() + 1);
                bytes.insert(p, *b);
            }
            Edit::Remove(i) => {
                let p = i.index(bytes.len());
                bytes.remove(p);
            }
            Edit::Huge(i) => {
                let p = i.index(bytes.len());
                for b in bytes.iter_mut().skip(p).take(8) {
                    *b = 0xff;
                }
            }
        }
    }
    if let Some(cut) = cut {
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
    }
    bytes
}

/// Random bytes, or a mutation of one of `valid`.
fn inputs(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        (
            0..n,
            proptest::collection::vec(edit(), 0..6),
            proptest::option::of(any::<Index>())
        )
            .prop_map(move |(i, edits, cut)| apply_edits(valid[i].clone(), &edits, cut)),
    ]
}

fn context() -> tarpc::context::Context {
    tarpc::context::current()
}

fn request<T>(id: u64, message: T) -> tarpc::ClientMessage<T> {
    tarpc::ClientMessage::Request(tarpc::Request {
        context: context(),
        id,
        message,
    })
}

fn valid_client_requests() -> Vec<Vec<u8>> {
    let fence = Some(Fence {
        lock: "l".into(),
        token: 7,
    });
    let messages = vec![
        DriftlockApiRequest::OpenSession {
            nonce: u128::MAX,
            client_name: "app".into(),
            requested_ttl_us: 10_000_000,
            secret: SessionSecret([4; 32]),
        },
        DriftlockApiRequest::SessionOp {
            session: 3,
            secret: SessionSecret([4; 32]),
            seq: 1,
            op: SessionOp::Acquire {
                name: "lock".into(),
                mode: LockMode::Shared,
                wait_us: 1000,
            },
        },
        DriftlockApiRequest::SessionOp {
            session: 3,
            secret: SessionSecret([4; 32]),
            seq: 2,
            op: SessionOp::KvPut {
                key: "k".into(),
                value: vec![1; 40],
                fence,
            },
        },
        DriftlockApiRequest::SessionOp {
            session: 3,
            secret: SessionSecret([4; 32]),
            seq: 3,
            op: SessionOp::HandoverState {
                election: "e".into(),
                epoch: 9,
                chunk_seq: 0,
                data: vec![2; 30],
                crc32: 5,
                last: true,
            },
        },
        DriftlockApiRequest::KvWrite {
            write: KvWrite::Cas {
                key: "k".into(),
                expected_revision: 4,
                value: vec![3; 10],
            },
        },
        DriftlockApiRequest::Read {
            query: Query::KvRange {
                prefix: "p".into(),
                start_after: Some("q".into()),
                limit: 10,
            },
            consistency: Consistency::Serializable,
        },
        DriftlockApiRequest::Observe {
            after_index: 5,
            filter: EventFilter {
                session: Some(1),
                key_prefix: Some("k".into()),
                election: None,
                sessions: vec![1, 2],
            },
            timeout_ms: 100,
        },
        DriftlockApiRequest::Status {},
        DriftlockApiRequest::Admin {
            request: AdminRequest::Init {
                members: vec![MemberAddr {
                    id: 1,
                    raft_addr: "127.0.0.1:1".into(),
                    client_addr: "127.0.0.1:2".into(),
                }],
            },
        },
    ];
    let mut out: Vec<Vec<u8>> = messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| encode(&request(i as u64, m)))
        .collect();
    out.push(encode(&tarpc::ClientMessage::<DriftlockApiRequest>::Cancel {
        trace_context: context().trace_context,
        request_id: 4,
    }));
    out
}

fn valid_client_responses() -> Vec<Vec<u8>> {
    let messages = vec![
        DriftlockApiResponse::SessionOp(Ok(Reply::Done)),
        DriftlockApiResponse::KvWrite(Err(driftlock_proto::ApiError::InvalidRequest("x".into()))),
        DriftlockApiResponse::Observe(Ok(driftlock_proto::EventBatch {
            events: vec![(3, driftlock_proto::Event::SessionOpened { session: 3 })],
            next_after_index: 3,
            truncated: false,
        })),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            encode(&tarpc::Response {
                request_id: i as u64,
                message: Ok(m),
            })
        })
        .collect()
}

fn lid(index: u64) -> driftlock_raft_store::LogId {
    openraft::testing::log_id::<TypeConfig>(1, 1, index)
}

fn entry(index: u64) -> Entry {
    Entry::new_normal(
        lid(index),
        StampedRequest(StampedCommand {
            ts_us: index,
            command: Command::KvPut {
                key: "k".into(),
                value: vec![9; 20],
                by: Principal::client("app"),
            },
        }),
    )
}

fn vote() -> Vote {
    Vote::new(2, 1)
}

fn valid_raft_requests() -> Vec<Vec<u8>> {
    let messages = vec![
        RaftRpcRequest::AppendEntries {
            req: openraft::raft::AppendEntriesRequest {
                vote: vote(),
                prev_log_id: Some(lid(3)),
                entries: vec![entry(4), entry(5)],
                leader_commit: Some(lid(3)),
            },
        },
        RaftRpcRequest::Vote {
            req: openraft::raft::VoteRequest::new(vote(), Some(lid(5))),
        },
        RaftRpcRequest::ClockProbe {},
        RaftRpcRequest::SnapshotChunk {
            vote: vote(),
            meta: openraft::storage::SnapshotMeta {
                last_log_id: Some(lid(5)),
                last_membership: Default::default(),
            },
            total_bytes: 6,
            offset: 3,
            data: vec![1, 2, 3],
        },
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| encode(&request(i as u64, m)))
        .collect()
}

fn valid_raft_responses() -> Vec<Vec<u8>> {
    let messages = vec![
        RaftRpcResponse::AppendEntries(Ok(openraft::raft::AppendEntriesResponse::Success)),
        RaftRpcResponse::Vote(Ok(openraft::raft::VoteResponse::new(vote(), Some(lid(2)), true))),
        RaftRpcResponse::ClockProbe(Err("no".into())),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            encode(&tarpc::Response {
                request_id: i as u64,
                message: Ok(m),
            })
        })
        .collect()
}

/// A state with sessions, locks, keys and an election, as a snapshot's
/// payload (without the store frame).
fn valid_snapshot_payload() -> Vec<u8> {
    let mut sm = StateMachine::new(driftlock_proto::Config::default());
    let mut index = 0;
    let mut apply = |sm: &mut StateMachine, command: Command| {
        index += 1;
        let meta = EntryMeta {
            index,
            ts_us: index * 1000,
        };
        let (response, _events) = sm.apply(command, meta);
        response.expect("the sample state's commands apply");
    };
    apply(
        &mut sm,
        Command::OpenSession {
            nonce: 1,
            client_name: "a".into(),
            requested_ttl_us: 10_000_000,
            owner: Principal::client("app"),
            secret_sha256: SessionSecret([4; 32]).digest(),
        },
    );
    let session = 1;
    for (seq, op) in [
        SessionOp::Acquire {
            name: "l".into(),
            mode: LockMode::Exclusive,
            wait_us: 0,
        },
        SessionOp::KvPut {
            key: "k".into(),
            value: vec![1; 10],
            fence: None,
        },
        SessionOp::Campaign {
            election: "e".into(),
            value: b"me".to_vec(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        apply(
            &mut sm,
            Command::Session {
                session,
                seq: seq as u64 + 1,
                op,
                by: Principal::client("app"),
            },
        );
    }
    let framed = driftlock_raft_store::state_machine::encode_snapshot(&sm.snapshot()).unwrap();
    frame::check(&framed).unwrap().to_vec()
}

proptest! {
    #![proptest_config(config())]

    /// A node's client port: the frame codec over an arbitrary stream cut
    /// at arbitrary points, then each frame as a request.
    #[test]
    fn client_frames_as_a_node_reads_them(
        bodies in proptest::collection::vec(inputs(valid_client_requests()), 1..4),
        header in proptest::option::of(any::<u32>()),
        cuts in proptest::collection::vec(1usize..600, 1..8),
    ) {
        let mut stream = Vec::new();
        for body in &bodies {
            stream.extend((body.len() as u32).to_be_bytes());
            stream.extend(body);
        }
        if let Some(h) = header {
            stream.extend(h.to_be_bytes());
        }
        let mut codec = FrameCodec::node();
        let mut buf = BytesMut::new();
        let mut rest = &stream[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let (now, later) = rest.split_at((*cut.next().unwrap()).min(rest.len()));
            rest = later;
            buf.extend_from_slice(now);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        let _ = wire().deserialize::<tarpc::ClientMessage<DriftlockApiRequest>>(&frame);
                    }
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
            // Never more held than what arrived (plus the 4-byte header).
            prop_assert!(buf.len() <= stream.len());
        }
    }

    /// A client's end: replies from a node (or an impostor).
    #[test]
    fn client_replies_as_a_client_reads_them(bytes in inputs(valid_client_responses())) {
        let _ = wire().deserialize::<tarpc::Response<DriftlockApiResponse>>(&bytes);
    }

    /// The Raft port, both directions.
    #[test]
    fn raft_frames(request in inputs(valid_raft_requests()), response in inputs(valid_raft_responses())) {
        let _ = wire().deserialize::<tarpc::ClientMessage<RaftRpcRequest>>(&request);
        let _ = wire().deserialize::<tarpc::Response<RaftRpcResponse>>(&response);
    }

    /// A snapshot as a follower installs it or a node reopens it: the
    /// store frame with a correct checksum around a mutated payload, so
    /// the decode and the restore's invariant checks are what is tested.
    #[test]
    fn snapshots(payload in inputs(vec![valid_snapshot_payload()]), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let framed = frame::encode(&payload).unwrap();
        let _ = driftlock_raft_store::state_machine::decode_snapshot(&framed);
        let _ = driftlock_raft_store::state_machine::decode_snapshot(&raw);
    }

    /// The store's frames as it reads them back: log entries and votes,
    /// with a correct checksum around mutated payloads and as raw bytes.
    #[test]
    fn store_frames(payload in inputs(vec![
        bincode::serialize(&entry(7)).unwrap(),
        bincode::serialize(&vote()).unwrap(),
    ])) {
        let framed = frame::encode(&payload).unwrap();
        let _ = frame::decode_value::<Entry>("log", "7", &framed);
        let _ = frame::decode_value::<Vote>("meta", "vote", &framed);
        let _ = frame::decode_value::<Entry>("log", "7", &payload);
    }
}

/// The valid samples decode (so the mutations start from real messages).
#[test]
fn the_valid_samples_decode() {
    for bytes in valid_client_requests() {
        wire()
            .deserialize::<tarpc::ClientMessage<DriftlockApiRequest>>(&bytes)
            .unwrap();
    }
    for bytes in valid_raft_requests() {
        wire()
            .deserialize::<tarpc::ClientMessage<RaftRpcRequest>>(&bytes)
            .unwrap();
    }
    let payload = valid_snapshot_payload();
    driftlock_raft_store::state_machine::decode_snapshot(&frame::encode(&payload).unwrap()).unwrap();
}
