//! The cluster-time anchor (docs/design.md "Time", rule 1), the event
//! subscription and read access to the state.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use driftlock_sensors::clock::RawInstant;

use common::{apply, blank, lid, stamped, ts_of};
use driftlock_proto::Event;
use driftlock_raft_store::{AppliedEvents, Entry, SmNotice, StampedRequest, StoreError};
use driftlock_state_machine::{Command, StampedCommand};
use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::Membership;

fn membership(index: u64) -> Entry {
    Entry::new_membership(lid(index), Membership::new_with_defaults(vec![[1u64].into()], []))
}

#[tokio::test]
async fn last_stamp_follows_the_newest_stamped_entry() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = driftlock_raft_store::open(dir.path()).unwrap();
        let mut log = store.log_store;
        let stamps = log.stamp_handle();
        assert_eq!(stamps.last_stamp(), None, "a new store knows no cluster time");

        // Blank and membership entries carry no time.
        log.blocking_append([blank(1), membership(2)]).await.unwrap();
        assert_eq!(stamps.last_stamp(), None);

        let before = RawInstant::now();
        log.blocking_append([stamped(3), stamped(4), blank(5)]).await.unwrap();
        let after = RawInstant::now();
        let (ts, at_append) = stamps.last_stamp().unwrap();
        assert_eq!(ts, ts_of(4), "newest stamped entry by index, skipping the blank one");
        assert!(before <= at_append && at_append <= after, "instant taken at the append");

        // An append of only blank entries changes nothing: entry 4 is still
        // the newest stamped one, and its instant still follows its stamping.
        log.blocking_append([blank(6)]).await.unwrap();
        let (ts, at_blank) = stamps.last_stamp().unwrap();
        assert_eq!(ts, ts_of(4));
        assert_eq!(at_blank, at_append);

        // Truncation back below entry 4: entry 3 is the newest stamped one.
        log.truncate_after(Some(lid(3))).await.unwrap();
        let (ts, at_truncate) = stamps.last_stamp().unwrap();
        assert_eq!(ts, ts_of(3));
        assert!(at_truncate >= at_blank, "instant taken after the truncation");

        // Truncating every stamped entry keeps the last known time.
        log.truncate_after(Some(lid(2))).await.unwrap();
        let (ts, at_second_truncate) = stamps.last_stamp().unwrap();
        assert_eq!(ts, ts_of(3));
        assert!(at_second_truncate >= at_truncate);

        log.blocking_append((3..=9).map(stamped)).await.unwrap();
        assert_eq!(stamps.last_stamp().unwrap().0, ts_of(9));
        // Purging does not move the anchor.
        let anchored = stamps.last_stamp();
        log.purge(lid(9)).await.unwrap();
        assert_eq!(stamps.last_stamp(), anchored);
        log.blocking_append([blank(10), blank(11)]).await.unwrap();
    }

    // Reopened with no stamped entry left in the log and no snapshot,
    // nothing is known. (openraft purges only what a snapshot covers, so a
    // node would fall back to the snapshot's time: next case.)
    {
        let store = driftlock_raft_store::open(dir.path()).unwrap();
        assert_eq!(store.log_store.stamp_handle().last_stamp(), None);
    }

    // With a snapshot, its cluster time anchors a log without stamped
    // entries; with stamped entries, the newest one does.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = driftlock_raft_store::open(dir.path()).unwrap();
        let mut sm = store.state_machine;
        apply(&mut sm, (1..=4).map(stamped).collect()).await.unwrap();
        openraft::storage::RaftSnapshotBuilder::build_snapshot(
            &mut sm.try_create_snapshot_builder(true).await.unwrap(),
        )
        .await
        .unwrap();
    }
    {
        let before = RawInstant::now();
        let store = driftlock_raft_store::open(dir.path()).unwrap();
        let (ts, at) = store.log_store.stamp_handle().last_stamp().unwrap();
        assert_eq!(ts, ts_of(4), "the snapshot's cluster time");
        assert!(at >= before, "instant taken at opening");
        let mut log = store.log_store;
        log.blocking_append([stamped(5), blank(6)]).await.unwrap();
    }
    let before = RawInstant::now();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let (ts, at) = store.log_store.stamp_handle().last_stamp().unwrap();
    assert_eq!(ts, ts_of(5));
    assert!(at >= before);
}

#[tokio::test]
async fn events_reach_subscribers_and_state_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    let reader = sm.reader();
    let mut notices = reader.subscribe();

    let put = |index: u64, key: &str| {
        Entry::new_normal(
            lid(index),
            StampedRequest(StampedCommand {
                ts_us: ts_of(index),
                command: Command::KvPut {
                    key: key.to_string(),
                    value: vec![index as u8],
                    by: driftlock_proto::Principal::Anonymous,
                },
            }),
        )
    };
    let tick = Entry::new_normal(
        lid(3),
        StampedRequest(StampedCommand {
            ts_us: ts_of(3),
            command: Command::Tick,
        }),
    );
    apply(&mut sm, vec![blank(1), put(2, "a"), tick, membership(4), put(5, "b")])
        .await
        .unwrap();

    assert_eq!(
        notices.try_recv().unwrap(),
        SmNotice::Applied(AppliedEvents {
            index: 2,
            events: vec![(
                2,
                Event::KvChanged {
                    key: "a".into(),
                    revision: 2
                }
            )],
        })
    );
    assert_eq!(
        notices.try_recv().unwrap(),
        SmNotice::Applied(AppliedEvents {
            index: 5,
            events: vec![(
                5,
                Event::KvChanged {
                    key: "b".into(),
                    revision: 5
                }
            )],
        })
    );
    assert!(notices.try_recv().is_err(), "entries without events publish nothing");

    assert_eq!(reader.last_applied(), Some(lid(5)));
    let (a, ts_eff, last_index) = reader.with_state(|state| {
        (
            state.kv_get("a").map(|kv| kv.value.clone()),
            state.ts_eff_us(),
            state.last_index(),
        )
    });
    assert_eq!(a, Some(vec![2]));
    assert_eq!(ts_eff, ts_of(5));
    assert_eq!(last_index, 5);
    let (applied, stored_membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(5)));
    assert_eq!(stored_membership.log_id(), &Some(lid(4)));
}

/// A batch entry publishes its commands' events under their own
/// revisions, and the entry after it continues from the batch's last
/// revision, not from its own index.
#[tokio::test]
async fn a_batch_entry_publishes_events_under_each_commands_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    let reader = sm.reader();
    let mut notices = reader.subscribe();
    let put = |key: &str| Command::KvPut {
        key: key.to_string(),
        value: vec![1],
        by: driftlock_proto::Principal::Anonymous,
    };
    let entry = |index: u64, command: Command| {
        Entry::new_normal(
            lid(index),
            StampedRequest(StampedCommand {
                ts_us: ts_of(index),
                command,
            }),
        )
    };
    apply(
        &mut sm,
        vec![
            entry(1, Command::Batch(vec![put("a"), put("b"), put("c")])),
            entry(2, put("d")),
        ],
    )
    .await
    .unwrap();
    let changed = |key: &str, revision: u64| {
        (
            revision,
            Event::KvChanged {
                key: key.into(),
                revision,
            },
        )
    };
    assert_eq!(
        notices.try_recv().unwrap(),
        SmNotice::Applied(AppliedEvents {
            index: 1,
            events: vec![changed("a", 1), changed("b", 2), changed("c", 3)],
        })
    );
    assert_eq!(
        notices.try_recv().unwrap(),
        SmNotice::Applied(AppliedEvents {
            index: 2,
            events: vec![changed("d", 4)],
        })
    );
    let (revision, mod_revision) = reader.with_state(|s| (s.last_revision(), s.kv_get("d").map(|kv| kv.mod_revision)));
    assert_eq!((revision, mod_revision), (4, Some(4)));
}

#[tokio::test]
async fn an_entry_at_or_below_the_applied_one_is_refused_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    apply(&mut sm, (1..=3).map(stamped).collect()).await.unwrap();
    let before = common::state_bytes(&sm);
    let err = apply(&mut sm, vec![stamped(3)]).await.unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<StoreError>());
    assert!(matches!(inner, Some(StoreError::Apply(_))), "{err}");
    assert_eq!(common::state_bytes(&sm), before);
}

/// The leader's side of an install: a snapshot of entries 1..=30, whose
/// cluster time is `ts_of(30)`.
async fn leader_snapshot() -> (tempfile::TempDir, driftlock_raft_store::Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut sm = store.state_machine;
    apply(&mut sm, (1..=30).map(stamped).collect()).await.unwrap();
    let snapshot = common::build_snapshot(&mut sm).await;
    (dir, snapshot)
}

async fn install(sm: &mut driftlock_raft_store::SledStateMachine, snapshot: &driftlock_raft_store::Snapshot) {
    sm.install_snapshot(
        &snapshot.meta,
        driftlock_raft_store::SnapshotData::new(snapshot.snapshot.get_ref().clone()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_installed_snapshot_becomes_the_anchor_with_the_instant_of_the_install() {
    let (_leader, snapshot) = leader_snapshot().await;

    // A follower that appended entries 1..=3 and then fell behind: its
    // anchor is entry 3 with an old instant.
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let (mut log, mut sm) = (store.log_store, store.state_machine);
    let stamps = log.stamp_handle();
    log.blocking_append((1..=3).map(stamped)).await.unwrap();
    assert_eq!(stamps.last_stamp().unwrap().0, ts_of(3));
    std::thread::sleep(std::time::Duration::from_millis(20));

    let before = RawInstant::now();
    install(&mut sm, &snapshot).await;
    let (ts, at) = stamps.last_stamp().expect("an anchor");
    assert_eq!(ts, ts_of(30), "the snapshot's cluster time, not entry 3's");
    assert!(at >= before, "the instant of the install, not of entry 3's append");

    // openraft then purges the log the snapshot covers: the anchor stays.
    log.purge(lid(30)).await.unwrap();
    assert_eq!(stamps.last_stamp(), Some((ts, at)));
    // And the next appended entry takes over.
    log.blocking_append([stamped(31)]).await.unwrap();
    assert_eq!(stamps.last_stamp().unwrap().0, ts_of(31));
}

#[tokio::test]
async fn a_new_node_gets_its_first_anchor_from_an_installed_snapshot() {
    let (_leader, snapshot) = leader_snapshot().await;
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let stamps = store.log_store.stamp_handle();
    let mut sm = store.state_machine;
    assert_eq!(stamps.last_stamp(), None);
    let before = RawInstant::now();
    install(&mut sm, &snapshot).await;
    let (ts, at) = stamps.last_stamp().expect("an anchor after the install");
    assert_eq!(ts, ts_of(30));
    assert!(at >= before);
}

#[tokio::test]
async fn entries_above_an_installed_snapshot_stay_the_anchor_with_a_fresh_instant() {
    let (_leader, snapshot) = leader_snapshot().await;
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let (mut log, mut sm) = (store.log_store, store.state_machine);
    let stamps = log.stamp_handle();
    log.blocking_append((1..=33).map(stamped)).await.unwrap();
    let before = RawInstant::now();
    install(&mut sm, &snapshot).await;
    let (ts, at) = stamps.last_stamp().unwrap();
    assert_eq!(ts, ts_of(33), "the newest stamped entry by index is above the snapshot");
    assert!(at >= before);
}

#[tokio::test]
async fn the_anchor_is_published_when_the_entry_is_appended_not_after_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut log = store.log_store;
    let stamps = log.stamp_handle();
    let before = RawInstant::now();
    let (tx, rx) = <driftlock_raft_store::TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
    log.append([stamped(1)], openraft::storage::IOFlushed::signal(tx))
        .await
        .unwrap();
    let appended = RawInstant::now();
    // Read before the flush is reported: the anchor does not wait for it,
    // so a flush-bound cycle does not slow cluster time down.
    let (ts, at) = stamps.last_stamp().expect("published by the append itself");
    assert_eq!(ts, ts_of(1));
    assert!(before <= at && at <= appended, "the instant of the append");
    rx.await.unwrap().unwrap();
    assert_eq!(stamps.last_stamp(), Some((ts, at)), "the flush does not move it");
}

#[tokio::test]
async fn an_entry_this_node_stamped_anchors_at_the_instant_of_its_stamping() {
    let dir = tempfile::tempdir().unwrap();
    let store = driftlock_raft_store::open(dir.path()).unwrap();
    let mut log = store.log_store;
    let stamps = log.stamp_handle();
    let by = |leader: u64, index: u64| {
        Entry::new_normal(
            openraft::testing::log_id::<driftlock_raft_store::TypeConfig>(1, leader, index),
            StampedRequest(StampedCommand {
                ts_us: ts_of(index),
                command: Command::Tick,
            }),
        )
    };

    // Node 1 stamps entries 1 and 2 (pipelined), then they are appended.
    let stamped_1 = RawInstant::now();
    stamps.stamped(1, ts_of(1), stamped_1);
    let stamped_2 = RawInstant::now();
    stamps.stamped(1, ts_of(2), stamped_2);
    std::thread::sleep(std::time::Duration::from_millis(5));
    log.blocking_append([by(1, 1)]).await.unwrap();
    assert_eq!(stamps.last_stamp(), Some((ts_of(1), stamped_1)), "the stamping instant");
    log.blocking_append([by(1, 2)]).await.unwrap();
    assert_eq!(stamps.last_stamp(), Some((ts_of(2), stamped_2)));

    // The same ts stamped by node 1, but the entry was created by leader 2:
    // not this node's stamp, so the instant of the append.
    stamps.stamped(1, ts_of(3), RawInstant::now());
    std::thread::sleep(std::time::Duration::from_millis(5));
    let before = RawInstant::now();
    log.blocking_append([by(2, 3)]).await.unwrap();
    let (ts, at) = stamps.last_stamp().unwrap();
    assert_eq!(ts, ts_of(3));
    assert!(at >= before, "another leader's entry anchors at its append");

    // A stamp nobody recorded (a follower's view) anchors at the append.
    let before = RawInstant::now();
    log.blocking_append([by(1, 4)]).await.unwrap();
    assert!(stamps.last_stamp().unwrap().1 >= before);
}
