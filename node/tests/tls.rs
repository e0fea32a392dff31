//! Who gets through each port of a node that runs mutual TLS
//! (docs/security.md "Threat model"): on the client port only a
//! certificate of the cluster's CA; on the Raft port only a node
//! certificate that names a current member, speaking as itself.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use driftlock_node::network::RaftRpcClient;
use driftlock_node::tls::{NodeSecurity, NodeTls};
use driftlock_proto::pki::{self, Subject};
use driftlock_proto::tls::rustls::pki_types::pem::PemObject;
use driftlock_proto::tls::rustls::pki_types::CertificateDer;
use driftlock_proto::tls::{self, rustls, TlsFiles};
use driftlock_proto::Security;
use driftlock_raft_store::Vote;
use driftlock_testkit::{prom, TestCluster};
use openraft::raft::VoteRequest;

const T: Duration = Duration::from_secs(10);

/// TLS that trusts the cluster CA but presents no certificate.
fn without_client_certificate(ca: &Path) -> Security {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Security::Tls(Arc::new(config))
}

/// A client certificate of the administrator role, issued by a CA of its
/// own; the files trust the cluster CA, so only the node's check of the
/// client certificate stands in the way.
fn foreign_admin(dir: &Path, cluster_ca: &Path) -> Security {
    pki::create_ca(dir, "another", 30).expect("other ca");
    let subject = Subject::Client {
        name: "admin".into(),
        admin: true,
    };
    pki::issue(dir, dir, &subject, 30).expect("issue");
    let files = TlsFiles {
        ca: cluster_ca.to_path_buf(),
        ..TlsFiles::in_dir(dir, "admin")
    };
    Security::from_files(Some(&files)).expect("foreign files")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_admits_only_certificates_of_the_cluster_ca() {
    let c = TestCluster::start(1).await;
    let addr = c.client_addr(0).to_string();
    let ca = c.admin_tls().expect("a TLS cluster").ca;
    let other = tempfile::tempdir().expect("tempdir");
    let metrics = c.metrics_addr(0).to_string();
    let failures = || {
        prom::sample(
            &prom::scrape(&metrics),
            "driftlock_tls_handshake_failures_total{port=\"client\"}",
        )
    };
    let before = failures();

    // A connection closed before its first byte (a peer's check that the
    // port lives, `failover.rs`; a load balancer's TCP check) is not a
    // handshake, and is not counted as a failed one.
    assert_eq!(
        driftlock_node::failover::probe(&addr).await,
        driftlock_node::failover::Probe::Alive
    );

    let refused = [
        ("plain TCP", Security::Insecure),
        ("TLS without a client certificate", without_client_certificate(&ca)),
        ("a certificate of another CA", foreign_admin(other.path(), &ca)),
    ];
    for (who, security) in &refused {
        let answer = driftlock_proto::status(&addr, T, security).await;
        assert!(answer.is_err(), "{who} got an answer: {answer:?}");
    }
    assert!(
        driftlock_testkit::eventually(T, || failures() >= before + 3).await,
        "the refused handshakes were not counted: {} → {}",
        before,
        failures()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(failures(), before + 3, "the probe counted as a failed handshake");

    // The cluster's own certificates still get through, an ordinary
    // client's included.
    driftlock_proto::status(&addr, T, &c.security())
        .await
        .expect("the admin certificate is admitted");
    let alice = Security::from_files(Some(&c.client_tls("alice", false))).expect("alice");
    driftlock_proto::status(&addr, T, &alice)
        .await
        .expect("a client certificate is admitted");
}

/// A Raft-port client for node 1's `addr`, dialing with `security` and
/// verifying the server as node 1.
async fn raft_client(addr: &str, security: &Security) -> Result<RaftRpcClient, String> {
    let io = security
        .open(addr, &tls::node_server_name(1), T)
        .await
        .map_err(|e| e.to_string())?;
    let transport = driftlock_proto::service::bincode_transport(io, driftlock_proto::codec::FrameCodec::raft());
    Ok(RaftRpcClient::new(tarpc::client::Config::default(), transport).spawn())
}

/// How `security` dials a Raft port as node `id` of the cluster in `dir`
/// (its certificate made if missing).
fn as_node(dir: &Path, id: u64) -> Security {
    let subject = Subject::Node { id, hosts: Vec::new() };
    pki::ensure(dir, "driftlock", std::slice::from_ref(&subject), 30).expect("node certificate");
    let node = NodeTls::load(id, TlsFiles::in_dir(dir, &subject.file_stem())).expect("load");
    NodeSecurity::Tls(Arc::new(node)).dialer()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_port_admits_only_members_speaking_as_themselves() {
    let c = TestCluster::start(1).await;
    c.wait_leader(T).await;
    let raft_addr = c.raft_addr(0).to_string();
    let certs = c.launcher().certs_dir().expect("a TLS cluster").to_path_buf();
    let metrics = c.metrics_addr(0).to_string();
    let refused = || prom::sample(&prom::scrape(&metrics), "driftlock_raft_refused_requests_total");
    let ctx = || {
        let mut ctx = tarpc::context::current();
        ctx.deadline = std::time::Instant::now() + T;
        ctx
    };

    // A member, as itself: answered.
    let member = raft_client(&raft_addr, &as_node(&certs, 1))
        .await
        .expect("dial as node 1");
    member
        .clock_probe(ctx())
        .await
        .expect("transport")
        .expect("node 1 may probe its own clock");

    // A member claiming to be another node: refused.
    let before = refused();
    let forged = VoteRequest::new(Vote::new(1_000, 3), None);
    let answer = member.vote(ctx(), forged).await.expect("transport");
    let refusal = answer.expect_err("a vote as node 3 from node 1's certificate");
    assert!(refusal.contains("as node 3"), "{refusal}");
    assert!(refused() > before, "the refusal is counted");
    let status = c.status(0).await.expect("status");
    assert!(status.term < 1_000, "the forged vote moved the term to {}", status.term);

    // A node certificate of the cluster CA whose node is not a member.
    let stranger = raft_client(&raft_addr, &as_node(&certs, 9))
        .await
        .expect("dial as node 9");
    let refusal = stranger
        .clock_gossip(ctx(), Vec::new())
        .await
        .expect("transport")
        .expect_err("node 9 is not a member");
    assert!(refusal.contains("not a member"), "{refusal}");

    // A client certificate, even an administrator's, is not a node.
    let admin = raft_client(&raft_addr, &c.security()).await;
    let answered = match admin {
        Ok(client) => matches!(client.clock_probe(ctx()).await, Ok(Ok(_))),
        Err(_) => false,
    };
    assert!(!answered, "a client certificate was answered on the Raft port");

    // The node goes on serving.
    driftlock_proto::status(c.client_addr(0), T, &c.security())
        .await
        .expect("still serving");
}
