//! The fenced-counter workload: lock, read, fenced write of value + 1,
//! release.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig, ClientError, LockOptions};
use driftlock_proto::{LockMode, Rejection};

pub const COUNTER: &str = "counter";
pub const LOCK: &str = "counter-lock";

/// What one increment attempt did to the counter.
pub enum Outcome {
    /// The fenced write was acknowledged.
    Acked,
    /// Nothing was written (lock or read failed, or the fence refused the
    /// write because the lease ended under us — exactly as it should).
    NotWritten(Option<ClientError>),
    /// The write may or may not have happened.
    Unknown,
}

/// One increment: lock, read, fenced write of value + 1, release.
pub async fn increment(client: &Client, session: &driftlock_client::Session) -> Outcome {
    let opts = LockOptions {
        mode: LockMode::Exclusive,
        wait: Duration::from_secs(20),
    };
    let guard = match session.lock_with(LOCK, opts).await {
        Ok(g) => g,
        Err(e) => return Outcome::NotWritten(Some(e)),
    };
    let n = match client.kv_get(COUNTER).await {
        Ok(current) => current.map_or(0, |v| u64::from_le_bytes(v.value.try_into().unwrap_or([0; 8]))),
        Err(e) => return Outcome::NotWritten(Some(e)),
    };
    let written = session
        .kv_put_fenced(COUNTER, (n + 1).to_le_bytes().to_vec(), &guard)
        .await;
    let _ = guard.release().await;
    match written {
        Ok(_) => Outcome::Acked,
        Err(ClientError::Rejected(Rejection::StaleFencingToken { .. } | Rejection::FenceNotHeld { .. })) => {
            Outcome::NotWritten(None)
        }
        Err(ClientError::Rejected(_)) => Outcome::NotWritten(None),
        Err(_) => Outcome::Unknown,
    }
}

/// One counter client until `stop_at`: its own connection and session
/// (reopened when it expires), counting acknowledged and indeterminate
/// increments.
pub async fn run_worker(
    endpoints: Vec<String>,
    name: String,
    stop_at: Instant,
    acked: Arc<AtomicU64>,
    indeterminate: Arc<AtomicU64>,
) {
    let config = ClientConfig {
        client_name: name,
        ..ClientConfig::new(endpoints)
    };
    let client = Client::connect_with(config).await.expect("connect");
    let mut session = client.open_session(Duration::from_secs(5)).await.expect("session");
    while Instant::now() < stop_at {
        match increment(&client, &session).await {
            Outcome::Acked => {
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Outcome::Unknown => {
                indeterminate.fetch_add(1, Ordering::SeqCst);
            }
            Outcome::NotWritten(Some(ClientError::SessionExpired)) => {
                if let Ok(s) = client.open_session(Duration::from_secs(5)).await {
                    session = s;
                }
            }
            Outcome::NotWritten(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let _ = session.close().await;
}
