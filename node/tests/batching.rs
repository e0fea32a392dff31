//! Batched proposals through a whole cluster (docs/design.md "Batched
//! proposals"): commands that arrive together share entries, and each
//! caller still gets its own answer — its own revision, token or session.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use driftlock_client::Client;
use driftlock_testkit::prom::{sample, scrape};
use driftlock_testkit::TestCluster;
use futures::future::join_all;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_share_entries_and_each_gets_its_own_answer() {
    let c = TestCluster::start(3).await;
    let leader = c.wait_leader(T).await;
    let client = Client::connect_with(c.client_config(c.endpoints())).await.unwrap();

    let sessions: Vec<_> = join_all((0..32).map(|_| client.open_session(Duration::from_secs(15))))
        .await
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    let ids: BTreeSet<u64> = sessions.iter().map(|s| s.id()).collect();
    assert_eq!(ids.len(), sessions.len(), "every session has its own id");

    // 64 puts and 32 acquires at once on the client's one connection (its
    // per-connection cap is 128 requests in flight).
    let puts = join_all((0..64u32).map(|i| {
        let client = &client;
        async move {
            (
                i,
                client.kv_put(&format!("batch/{i:03}"), i.to_le_bytes().to_vec()).await,
            )
        }
    }));
    let grants = join_all(
        sessions
            .iter()
            .enumerate()
            .map(|(i, s)| async move { s.lock(&format!("batch-lock/{i:02}")).await }),
    );
    let (puts, grants) = tokio::join!(puts, grants);

    let mut revisions = BTreeSet::new();
    for (i, put) in puts {
        let revision = put.unwrap_or_else(|e| panic!("put {i}: {e}"));
        assert!(revisions.insert(revision), "revision {revision} answered twice");
        let view = client
            .kv_get(&format!("batch/{i:03}"))
            .await
            .unwrap()
            .expect("the key exists");
        assert_eq!(view.value, i.to_le_bytes().to_vec(), "key {i} holds its own value");
        assert_eq!(
            view.mod_revision, revision,
            "key {i}'s revision is the one its put answered"
        );
    }
    let guards: Vec<_> = grants.into_iter().map(|g| g.unwrap()).collect();
    let tokens: BTreeSet<u64> = guards.iter().map(|g| g.fencing_token()).collect();
    assert_eq!(tokens.len(), guards.len(), "every grant has its own token");
    assert!(tokens.is_disjoint(&revisions) && tokens.is_disjoint(&ids));

    // The leader packed some of those commands together: its entries
    // carried more commands than there were entries.
    let body = scrape(c.metrics_addr(leader));
    let entries = sample(&body, "driftlock_proposal_batch_commands_count");
    let commands = sample(&body, "driftlock_proposal_batch_commands_sum");
    assert!(
        commands > entries,
        "{commands} commands in {entries} entries: nothing was batched"
    );
    // So revisions ran ahead of the log.
    let status = c.status(leader).await.expect("status");
    assert!(
        status.applied_revision > status.applied_index,
        "revision {} vs index {}",
        status.applied_revision,
        status.applied_index
    );
    for guard in guards {
        guard.release().await.unwrap();
    }
}
