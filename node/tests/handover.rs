//! Warm handover and health-driven leader transfer on a real 3-node cluster
//! (docs/design.md "Elections and warm handover"). Health is forced with the documented
//! override (`health_override` / `--health-override`), off by default.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;

use driftlock_client::{
    Client, ClientConfig, ClientError, LeaderChange, LeaderWatch, Leadership, LeadershipLoss, Rejection,
};
use driftlock_proto::{AdminRequest, Consistency, DriftlockApiRequest, EventFilter, Query, QueryResult, SessionOp};
use driftlock_proto::{Event, HealthTier};
use driftlock_testkit::{prom, TestCluster};

fn fast_health(_: u64) -> Vec<String> {
    ["--health-interval-ms", "200", "--handover-ack-timeout-ms", "2000"]
        .map(String::from)
        .to_vec()
}

async fn client(cluster: &TestCluster, endpoints: &[String], name: &str, tier: HealthTier) -> Client {
    let config = ClientConfig {
        client_name: name.into(),
        health_override: Some(tier),
        health_report_interval_ms: 200,
        ..cluster.client_config(endpoints.to_vec())
    };
    Client::connect_with(config).await.expect("connect")
}

/// Every change the watch reports within `window`.
async fn changes_within(watch: &mut LeaderWatch, window: Duration) -> Vec<LeaderChange> {
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + window;
    while let Ok(Ok(c)) = tokio::time::timeout_at(end, watch.next()).await {
        seen.push(c);
    }
    seen
}

/// Asserts that no epoch had two masters and that epochs never decrease.
fn assert_one_master_per_epoch(changes: &[LeaderChange]) {
    let mut by_epoch: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_epoch = 0;
    for c in changes {
        assert!(c.epoch >= last_epoch, "epoch went back: {changes:?}");
        last_epoch = c.epoch;
        if let Some(m) = c.master {
            let first = *by_epoch.entry(c.epoch).or_insert(m);
            assert_eq!(first, m, "two masters in epoch {}: {changes:?}", c.epoch);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_master_hands_over_to_the_healthiest_candidate_with_its_state() {
    let cluster = TestCluster::start_with(3, fast_health).await;
    let endpoints = cluster.endpoints();
    let observer = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("observer");
    let mut watch = observer.watch_election("scheduler");

    let master_client = client(&cluster, &endpoints, "master", HealthTier::Critical).await;
    let master = master_client
        .open_session(Duration::from_secs(3))
        .await
        .expect("session");
    let election = master.election("scheduler");
    election.on_handover(|| b"cursor=1234;jobs=7".to_vec());
    let first = election.campaign(b"m".to_vec()).await.expect("first master");
    // The watch's first answer is the state now: the first master.
    let initial = watch.next().await.expect("initial state");
    assert_eq!((initial.master, initial.epoch), (Some(master.id()), first.epoch()));

    let good_client = client(&cluster, &endpoints, "good", HealthTier::Good).await;
    let good = good_client.open_session(Duration::from_secs(3)).await.expect("session");
    let excellent_client = client(&cluster, &endpoints, "excellent", HealthTier::Excellent).await;
    let excellent = excellent_client
        .open_session(Duration::from_secs(3))
        .await
        .expect("session");
    let good_election = good.election("scheduler");
    let good_campaign = tokio::spawn(async move { good_election.campaign(b"g".to_vec()).await });
    let (won, won_at) = tokio::time::timeout(
        Duration::from_secs(30),
        campaign_in_background(excellent.election("scheduler"), b"e"),
    )
    .await
    .expect("the handover happens within 30 s")
    .expect("task");
    let won = won.expect("campaign");

    assert!(won.epoch() > first.epoch(), "epochs must rise");
    // The old master's library ended its mastership before it relinquished.
    assert_eq!(first.loss(), Some(LeadershipLoss::HandedOver { to: excellent.id() }));
    assert!(first.lost_at().expect("lost") <= won_at);
    assert_eq!(
        won.handover_state(),
        Some(&b"cursor=1234;jobs=7"[..]),
        "the new master holds the old master's state"
    );
    assert!(!good_campaign.is_finished(), "the less healthy candidate must not win");

    // Observers: the epoch rose exactly once, one master per epoch.
    let mut changes = vec![initial];
    changes.extend(changes_within(&mut watch, Duration::from_secs(3)).await);
    assert_one_master_per_epoch(&changes);
    let epochs: Vec<u64> = changes.iter().map(|c| c.epoch).collect();
    let mut distinct = epochs.clone();
    distinct.dedup();
    assert_eq!(distinct, vec![first.epoch(), won.epoch()], "changes seen: {changes:?}");
    assert_eq!(changes.last().and_then(|c| c.master), Some(excellent.id()));
    good_campaign.abort();
}

/// Starts `driftlock elect` as a child process and returns it with its session id.
fn spawn_elect(cluster: &TestCluster, endpoints: &[String], election: &str, value: &str) -> (std::process::Child, u64) {
    let mut child = Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"))
        .args(["elect", election, "--value", value, "--ttl", "2s"])
        .env("DRIFTLOCK_ENDPOINTS", endpoints.join(","))
        .envs(cluster.cli_env())
        .env("DRIFTLOCK_HEALTH_OVERRIDE", "excellent")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn driftlock elect");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("first line");
    // "campaigning in 'E' as session N with value 'V'"
    let session = line
        .split("as session ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (child, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_candidate_killed_mid_handover_aborts_it_and_the_election_goes_on() {
    let cluster = TestCluster::start_with(3, |id| {
        let mut a = fast_health(id);
        a.extend(["--auto-handover", "false"].map(String::from));
        a
    })
    .await;
    let endpoints = cluster.endpoints();
    let observer = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("observer");
    let mut watch = observer.watch_election("db");

    let master_client = client(&cluster, &endpoints, "master", HealthTier::Good).await;
    let master = master_client
        .open_session(Duration::from_secs(3))
        .await
        .expect("session");
    let master_election = master.election("db");
    let first = master_election.campaign(b"m".to_vec()).await.expect("master");

    // The doomed candidate is first in line, a healthy one second.
    let (mut doomed, doomed_session) = spawn_elect(&cluster, &endpoints, "db", "doomed");
    let backup_client = client(&cluster, &endpoints, "backup", HealthTier::Good).await;
    let backup = backup_client
        .open_session(Duration::from_secs(3))
        .await
        .expect("session");
    let backup_election = backup.election("db");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = observer
            .read(Query::Election { name: "db".into() }, Consistency::Linearizable)
            .await
            .expect("read");
        if let QueryResult::Election(Some(v)) = view.result {
            if v.candidates.contains(&doomed_session) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the doomed candidate never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backup_campaign = tokio::spawn(async move { backup_election.campaign(b"b".to_vec()).await });

    // Freeze the candidate, start the handover to it, then kill it.
    let pid = nix::unistd::Pid::from_raw(doomed.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let after_index = observer
        .status_of(&endpoints[0])
        .await
        .expect("status")
        .applied_revision;
    observer
        .admin(AdminRequest::Handover {
            election: "db".into(),
            to: Some(doomed_session),
        })
        .await
        .expect("operator handover");
    let _ = doomed.kill();
    let _ = doomed.wait();

    // The handover aborts (deadline or the candidate's expiry); nothing transfers.
    let filter = EventFilter {
        election: Some("db".into()),
        ..EventFilter::default()
    };
    let mut after = after_index;
    let mut begun = false;
    let mut aborted = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !aborted {
        assert!(Instant::now() < deadline, "the handover was not aborted");
        let batch = observer
            .observe(after, filter.clone(), Duration::from_secs(1))
            .await
            .expect("observe");
        for (_, e) in &batch.events {
            match e {
                Event::HandoverBegun { to, .. } => {
                    assert_eq!(*to, doomed_session);
                    begun = true;
                }
                Event::HandoverAborted { .. } => aborted = true,
                Event::LeaseTransferred { .. } => panic!("a frozen candidate cannot acknowledge: {e:?}"),
                _ => {}
            }
        }
        after = batch.next_after_index;
    }
    assert!(begun);
    assert_eq!(
        master_election.leader().await.expect("leader").map(|(s, _, e)| (s, e)),
        Some((master.id(), first.epoch())),
        "after the abort the master keeps its mastership and epoch"
    );

    // The standard election goes on: the master steps down, the backup wins.
    master_election.resign().await.expect("resign");
    let won = tokio::time::timeout(Duration::from_secs(20), backup_campaign)
        .await
        .expect("the backup is elected")
        .expect("task")
        .expect("campaign");
    assert!(won.epoch() > first.epoch());
    assert_eq!(won.handover_state(), None, "no state from an aborted handover");

    let changes = changes_within(&mut watch, Duration::from_secs(2)).await;
    assert_one_master_per_epoch(&changes);
    assert_eq!(changes.last().and_then(|c| c.master), Some(backup.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_critical_raft_leader_hands_leadership_to_a_healthy_voter_while_clients_lock() {
    let cluster = TestCluster::start_with(3, |id| {
        let mut a = fast_health(id);
        a.extend(["--handover-min-interval-ms", "60000"].map(String::from));
        if id == 2 {
            a.extend(["--health-override", "critical"].map(String::from));
        }
        a
    })
    .await;
    let endpoints = cluster.endpoints();
    let sick = 1; // index of node id 2

    // Wait until node 2's critical health is committed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.status(sick).await.and_then(|s| s.health_tier) != Some(HealthTier::Critical) {
        assert!(Instant::now() < deadline, "node 2's health was never committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A client keeps locking throughout.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let locker = {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        let config = cluster.client_config(endpoints.clone());
        tokio::spawn(async move {
            let c = Client::connect_with(config).await.expect("connect");
            let s = c.open_session(Duration::from_secs(5)).await.expect("session");
            while !stop.load(Ordering::SeqCst) {
                match s.lock("work").await {
                    Ok(g) => match g.release().await {
                        Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    },
                    Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Hand leadership to the sick node; it must give it away again.
    cluster.transfer_leader(sick, Duration::from_secs(10)).await;
    let ok_when_sick_led = ok.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_leader = loop {
        let l = cluster.wait_leader(Duration::from_secs(10)).await;
        if l != sick {
            break l;
        }
        assert!(Instant::now() < deadline, "the critical leader kept leadership");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new_leader, sick);
    // It moved because of health, not by chance.
    let metrics = prom::scrape(cluster.metrics_addr(sick));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("driftlock_health_leader_transfers_total 1")),
        "node 2 did not count a health transfer:\n{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    locker.await.expect("locker");
    let ok = ok.load(Ordering::SeqCst);
    assert!(ok > ok_when_sick_led, "locking did not go on after the transfer");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "lock operations failed during the transfer"
    );
    // Hysteresis: the sick node does not get leadership back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(cluster.wait_leader(Duration::from_secs(10)).await, sick);
}

/// Waits until `session` is a waiting candidate of `election`.
async fn wait_candidate(observer: &Client, election: &str, session: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = observer
            .read(Query::Election { name: election.into() }, Consistency::Linearizable)
            .await
            .expect("read");
        if let QueryResult::Election(Some(v)) = view.result {
            if v.candidates.contains(&session) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "session {session} never became a candidate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Campaigns in the background; the task returns the outcome with the
/// instant the campaign returned (when the new master starts to act).
fn campaign_in_background(
    election: driftlock_client::Election,
    value: &[u8],
) -> tokio::task::JoinHandle<(Result<Leadership, ClientError>, Instant)> {
    let value = value.to_vec();
    tokio::spawn(async move {
        let r = election.campaign(value).await;
        (r, Instant::now())
    })
}

/// Issue 14, item 2: the old master sends its state and is cut off right
/// after (a proxy swallows everything it sends from then on, so it never
/// hears of the acknowledgement). The candidate must not be told it is
/// master while the old master may still believe it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_master_cut_off_after_sending_its_state_is_never_master_alongside_the_candidate() {
    let cluster = TestCluster::start_with(1, |_| {
        ["--auto-handover", "false", "--handover-ack-timeout-ms", "2000"]
            .map(String::from)
            .to_vec()
    })
    .await;
    let endpoints = cluster.endpoints();
    let proxy = cluster.proxy(0).await;
    let cut = Arc::new(AtomicBool::new(false));
    {
        let cut = cut.clone();
        proxy.block(move |r| {
            if cut.load(Ordering::SeqCst) {
                return true;
            }
            let last_chunk = matches!(
                r,
                DriftlockApiRequest::SessionOp {
                    op: SessionOp::HandoverState { last: true, .. },
                    ..
                }
            );
            if last_chunk {
                // This one still reaches the node; nothing after it does.
                cut.store(true, Ordering::SeqCst);
            }
            false
        });
    }
    let observer = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("observer");
    let old_client = Client::connect_with(cluster.client_config(vec![proxy.addr()]))
        .await
        .expect("old master's client");
    let old = old_client.open_session(Duration::from_secs(3)).await.expect("session");
    let old_election = old.election("cut");
    old_election.on_handover(|| b"the old master's state".to_vec());
    let first = old_election.campaign(b"old".to_vec()).await.expect("old master");

    let new_client = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("candidate's client");
    let new = new_client.open_session(Duration::from_secs(3)).await.expect("session");
    let campaign = campaign_in_background(new.election("cut"), b"new");
    wait_candidate(&observer, "cut", new.id()).await;

    observer
        .admin(AdminRequest::Handover {
            election: "cut".into(),
            to: Some(new.id()),
        })
        .await
        .expect("operator handover");
    let (won, won_at) = tokio::time::timeout(Duration::from_secs(30), campaign)
        .await
        .expect("the candidate becomes master within 30 s")
        .expect("task");
    let won = won.expect("campaign");
    assert!(cut.load(Ordering::SeqCst), "the old master never sent its last chunk");
    assert!(won.epoch() > first.epoch());
    assert!(
        !first.is_master(),
        "the candidate was made master at epoch {} while the old master (epoch {}) still believes it leads",
        won.epoch(),
        first.epoch()
    );
    let lost_at = first.lost_at().expect("the old master's leadership ended");
    assert!(
        lost_at <= won_at,
        "the old master believed it led until {:?} after the candidate became master",
        lost_at - won_at
    );
    // Cut off, it could not relinquish: the handover was aborted and the
    // candidate won by ordinary succession, after the old master's session
    // ended, without the aborted handover's state.
    assert_eq!(first.loss(), Some(LeadershipLoss::ValidityEnded));
    assert_eq!(won.handover_state(), None);
}

/// Issue 14, item 2: after a warm handover the old master is out of the
/// election: when the new master resigns it is not made master again
/// behind its code's back, and it can campaign anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_handover_the_old_master_can_campaign_again_and_is_not_silently_made_master() {
    let cluster = TestCluster::start_with(1, |_| ["--auto-handover", "false"].map(String::from).to_vec()).await;
    let endpoints = cluster.endpoints();
    let observer = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("observer");
    let client = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("client");
    let old = client.open_session(Duration::from_secs(3)).await.expect("session");
    let new = client.open_session(Duration::from_secs(3)).await.expect("session");
    let old_election = old.election("again");
    old_election.on_handover(|| b"s".to_vec());
    let first = old_election.campaign(b"old".to_vec()).await.expect("old master");
    let new_election = new.election("again");
    let campaign = campaign_in_background(new_election.clone(), b"new");
    wait_candidate(&observer, "again", new.id()).await;
    observer
        .admin(AdminRequest::Handover {
            election: "again".into(),
            to: Some(new.id()),
        })
        .await
        .expect("operator handover");
    let (won, won_at) = tokio::time::timeout(Duration::from_secs(30), campaign)
        .await
        .expect("handover within 30 s")
        .expect("task");
    let won = won.expect("campaign");
    assert!(won.epoch() > first.epoch());
    assert_eq!(won.handover_state(), Some(&b"s"[..]));
    // The old master was told first, while its session lives on.
    assert_eq!(first.loss(), Some(LeadershipLoss::HandedOver { to: new.id() }));
    assert!(first.lost_at().expect("lost") <= won_at);
    assert!(old.is_valid());

    new_election.resign().await.expect("the new master resigns");
    let view = observer
        .read(Query::Election { name: "again".into() }, Consistency::Linearizable)
        .await
        .expect("read");
    if let QueryResult::Election(Some(v)) = &view.result {
        assert_ne!(
            v.master.as_ref().map(|m| m.0),
            Some(old.id()),
            "the old master was made master again without being told"
        );
    }
    let again = tokio::time::timeout(Duration::from_secs(10), old_election.campaign(b"old-again".to_vec()))
        .await
        .expect("campaign answered");
    assert!(
        !matches!(again, Err(ClientError::Rejected(Rejection::AlreadyCandidate))),
        "the old master is still a (silent) candidate: {again:?}"
    );
    let again = again.expect("the old master campaigns anew");
    assert!(again.epoch() > won.epoch());
}

/// `driftlock elect` prints the loss of its mastership the moment the
/// library signals it, stops reporting "master", and campaigns again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elect_prints_the_loss_at_a_handover_and_campaigns_again() {
    let cluster = TestCluster::start_with(1, |_| ["--auto-handover", "false"].map(String::from).to_vec()).await;
    let endpoints = cluster.endpoints();
    let mut child = Command::new(driftlock_testkit::driftlock_exe().expect("driftlock binary"))
        .args([
            "elect",
            "cli",
            "--value",
            "from-cli",
            "--ttl",
            "3s",
            "--state",
            "cli-state",
        ])
        .env("DRIFTLOCK_ENDPOINTS", endpoints.join(","))
        .envs(cluster.cli_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn driftlock elect");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("elect printed no {what}"))
    };
    let first = next_line("first line");
    let cli_session: u64 = first
        .split("as session ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));
    let master_line = next_line("mastership");
    assert!(master_line.starts_with("master of 'cli' at epoch "), "{master_line}");

    let observer = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("observer");
    let client = Client::connect_with(cluster.client_config(endpoints.clone()))
        .await
        .expect("client");
    let candidate = client.open_session(Duration::from_secs(3)).await.expect("session");
    let election = candidate.election("cli");
    let campaign = campaign_in_background(election.clone(), b"lib");
    wait_candidate(&observer, "cli", candidate.id()).await;
    observer
        .admin(AdminRequest::Handover {
            election: "cli".into(),
            to: Some(candidate.id()),
        })
        .await
        .expect("operator handover");
    let (won, _) = tokio::time::timeout(Duration::from_secs(30), campaign)
        .await
        .expect("handover within 30 s")
        .expect("task");
    let won = won.expect("campaign");
    assert_eq!(won.handover_state(), Some(&b"cli-state"[..]));

    let lost = next_line("loss");
    assert!(
        lost.starts_with("no longer master of 'cli'")
            && lost.ends_with(&format!("handed over to session {}", candidate.id())),
        "{lost}"
    );
    assert_eq!(next_line("new campaign"), "campaigning again in 'cli'");
    // The CLI's session is a candidate again, behind the new master: it
    // leads again once that one resigns, and says so.
    wait_candidate(&observer, "cli", cli_session).await;
    election.resign().await.expect("resign");
    let again = next_line("second mastership");
    let epoch: u64 = again
        .strip_prefix("master of 'cli' at epoch ")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line: {again}"));
    assert!(epoch > won.epoch());
    let _ = child.kill();
    let _ = child.wait();
}
