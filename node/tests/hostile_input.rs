//! Hostile input on many connections costs a node bounded memory, and the
//! cluster keeps serving through it (issue 15, "Done when").
//!
//! Every node of a TLS cluster gets, on both ports: plain garbage before
//! the handshake; after a handshake with a valid client certificate,
//! frame headers above the cap, garbage frames, and truncated frames
//! (a header announcing the largest frame the port accepts, 64 KiB of its
//! body, then silence) held open; on the Raft port the same after a
//! handshake with a valid node certificate of a non-member (id 9), whose
//! frames are read before its messages are refused. The node's RSS is
//! sampled throughout; a real client locks and writes during the attack
//! and after it.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use driftlock_proto::limits::{MAX_RAFT_FRAME_BYTES, MAX_REQUEST_FRAME_BYTES};
use driftlock_proto::pki::{self, Subject};
use driftlock_proto::service::BoxedIo;
use driftlock_proto::tls::{self, TlsFiles};
use driftlock_proto::{KvWrite, LockMode, Reply, Security, SessionOp, SessionSecret};
use driftlock_testkit::{prom, TestCluster};
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(20);

/// Truncated frames held open per port and principal: above the client
/// port's per-principal cap (256), so some are refused for it.
const HELD_CLIENT: usize = 300;
/// Truncated frames held open on a Raft port by the non-member node: its
/// per-principal cap (16).
const HELD_RAFT: usize = 16;
/// Connections of each short-lived kind per port.
const SHORT: usize = 50;
/// Body bytes sent of each truncated frame.
const BODY_BYTES: usize = 64 << 10;

/// The bound on a node's RSS growth under the attack, bytes (96 MiB). A
/// held connection costs its frame buffer (at most twice the 64 KiB that
/// arrived: the buffer doubles as it grows), rustls's buffers and the
/// task, under 256 KiB together; 256 + 16 held connections are at most
/// 68 MiB. A codec that reserved the announced length would need
/// 256 × 1 MiB on the client port and 16 × 1 GiB on the Raft port.
const RSS_GROWTH_BOUND: u64 = 96 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

fn garbage(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(167).wrapping_add(seed))
        .collect()
}

/// One attacker: a TLS identity and the port it attacks.
#[derive(Clone)]
struct Attacker {
    security: Security,
    addr: String,
    server_name: String,
}

impl Attacker {
    async fn open(&self) -> Option<BoxedIo> {
        self.security.open(&self.addr, &self.server_name, T).await.ok()
    }

    /// Sends `bytes` on a fresh connection and leaves it to the node.
    async fn send_and_drop(&self, bytes: Vec<u8>) {
        if let Some(mut io) = self.open().await {
            let _ = io.write_all(&bytes).await;
            let _ = io.flush().await;
        }
    }

    /// Opens a connection, announces a frame of `len` bytes, sends
    /// [`BODY_BYTES`] of it and returns the connection, to be held open.
    async fn truncated(&self, len: usize) -> Option<BoxedIo> {
        let mut io = self.open().await?;
        let mut bytes = (len as u32).to_be_bytes().to_vec();
        bytes.extend(garbage(BODY_BYTES, 3));
        io.write_all(&bytes).await.ok()?;
        io.flush().await.ok()?;
        Some(io)
    }
}

async fn plain_garbage(addr: &str) {
    if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
        let _ = s.write_all(&[0xff, 0xff, 0xff, 0x7f]).await;
        let _ = s.write_all(&garbage(4096, 13)).await;
    }
}

/// Locks, writes and releases as a real client: the cluster serves.
async fn serve_a_client(c: &TestCluster, round: u128) {
    let leader = c.wait_leader(T).await;
    let api = driftlock_proto::connect(c.client_addr(leader), T, &c.security())
        .await
        .expect("a real client connects");
    let ctx = || driftlock_proto::context(T);
    let session = match api
        .open_session(ctx(), round, "real".into(), 10_000_000, SessionSecret([9; 32]))
        .await
        .expect("rpc")
    {
        Ok(Reply::SessionOpened { session, .. }) => session,
        other => panic!("open: {other:?}"),
    };
    let acquire = SessionOp::Acquire {
        name: format!("lock-{round}"),
        mode: LockMode::Exclusive,
        wait_us: 0,
    };
    let r = api
        .session_op(ctx(), session, SessionSecret([9; 32]), 1, acquire)
        .await
        .expect("rpc");
    assert!(matches!(r, Ok(Reply::Granted { .. })), "acquire: {r:?}");
    let put = KvWrite::Put {
        key: format!("key-{round}"),
        value: vec![1; 1000],
    };
    let r = api.kv_write(ctx(), put).await.expect("rpc");
    assert!(matches!(r, Ok(Reply::KvWritten { .. })), "put: {r:?}");
    let r = api
        .session_op(ctx(), session, SessionSecret([9; 32]), 2, SessionOp::Close)
        .await
        .expect("rpc");
    assert!(r.is_ok(), "close: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_cost_bounded_memory_and_the_cluster_keeps_serving() {
    let c = TestCluster::start(3).await;
    serve_a_client(&c, 1).await;
    let certs = c.launcher().certs_dir().expect("a TLS cluster").to_path_buf();
    let mallory = tls::client_config(&c.client_tls("mallory", false)).expect("client config");
    let stranger = Subject::Node { id: 9, hosts: vec![] };
    pki::ensure(&certs, "driftlock", std::slice::from_ref(&stranger), 30).expect("node 9's certificate");
    let node9 = tls::client_config(&TlsFiles::in_dir(&certs, &stranger.file_stem())).expect("node config");

    let pids: Vec<u32> = (0..c.len())
        .map(|i| c.launcher().nodes[i].pid().expect("running"))
        .collect();
    let baseline: Vec<u64> = pids.iter().map(|p| rss_bytes(*p)).collect();
    let mut peak = baseline.clone();
    let sample = |peak: &mut Vec<u64>| {
        for (i, pid) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_bytes(*pid));
        }
    };

    let mut held = Vec::new();
    for i in 0..c.len() {
        let client = Attacker {
            security: Security::Tls(mallory.clone()),
            addr: c.client_addr(i).into(),
            server_name: tls::NODE_SERVER_NAME.into(),
        };
        let raft_as_client = Attacker {
            addr: c.raft_addr(i).into(),
            server_name: tls::node_server_name(c.id(i)),
            ..client.clone()
        };
        let raft_as_node = Attacker {
            security: Security::Tls(node9.clone()),
            ..raft_as_client.clone()
        };
        let mut short = Vec::new();
        for k in 0..SHORT {
            for addr in [c.client_addr(i), c.raft_addr(i)] {
                short.push(tokio::spawn({
                    let addr = addr.to_string();
                    async move { plain_garbage(&addr).await }
                }));
            }
            for a in [&client, &raft_as_client, &raft_as_node] {
                let a = a.clone();
                // A header above any cap, then a frame of garbage.
                let bytes = if k % 2 == 0 {
                    let mut b = vec![0xff, 0xff, 0xff, 0xff];
                    b.extend(garbage(1024, 7));
                    b
                } else {
                    let mut b = 1000u32.to_be_bytes().to_vec();
                    b.extend(garbage(1000, k as u8));
                    b
                };
                short.push(tokio::spawn(async move { a.send_and_drop(bytes).await }));
            }
        }
        for s in short {
            s.await.expect("attack task");
        }
        sample(&mut peak);
        for _ in 0..HELD_CLIENT {
            held.extend(client.truncated(MAX_REQUEST_FRAME_BYTES).await);
        }
        sample(&mut peak);
        for _ in 0..HELD_RAFT {
            held.extend(raft_as_node.truncated(MAX_RAFT_FRAME_BYTES).await);
        }
        sample(&mut peak);
        // The node serves while its attackers hold their connections.
        serve_a_client(&c, 10 + i as u128).await;
    }
    // Give every node a moment to read what was sent, then sample again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sample(&mut peak);

    for i in 0..c.len() {
        let growth = peak[i].saturating_sub(baseline[i]);
        println!(
            "node {}: RSS {} MiB before, peak {} MiB, growth {} MiB (bound {} MiB)",
            c.id(i),
            baseline[i] >> 20,
            peak[i] >> 20,
            growth >> 20,
            RSS_GROWTH_BOUND >> 20
        );
        assert!(
            growth <= RSS_GROWTH_BOUND,
            "node {} grew by {growth} bytes under the attack",
            c.id(i)
        );
        let metrics = prom::scrape(c.metrics_addr(i));
        let refused = prom::sample(
            &metrics,
            "driftlock_connections_refused_total{port=\"client\",reason=\"principal_full\"}",
        );
        assert!(
            refused >= (HELD_CLIENT - 256) as u64,
            "node {}: only {refused} connections refused for mallory's cap",
            c.id(i)
        );
    }

    drop(held);
    serve_a_client(&c, 100).await;
    for i in 0..c.len() {
        assert!(c.status(i).await.is_some(), "node {} stopped serving", c.id(i));
    }
}
