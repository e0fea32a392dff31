//! The fenced-counter workload: lock, read, fenced write of value + 1,
//! release. Exact when the service is safe: the final counter is at least
//! the acknowledged increments and at most those plus the indeterminate
//! ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftlock_client::{Client, ClientConfig, ClientError, LockOptions, Session};
use driftlock_proto::{LockMode, Rejection};

/// KV key of the counter (a little-endian `u64`).
pub const COUNTER: &str = "counter";
/// Lock every increment holds.
pub const LOCK: &str = "counter-lock";

/// What one increment attempt did to the counter.
#[derive(Debug)]
pub enum Outcome {
    /// The fenced write was acknowledged.
    Acked,
    /// Nothing was written (lock or read failed, or the fence refused the
    /// write because the lease ended under us — exactly as it should).
    NotWritten(Option<ClientError>),
    /// The write may or may not have happened.
    Unknown,
}

/// The counter's value in a KV value (0 for a missing or malformed one).
pub fn decode(value: &[u8]) -> u64 {
    value.try_into().map_or(0, u64::from_le_bytes)
}

/// One increment: lock, read, fenced write of value + 1, release.
pub async fn increment(client: &Client, session: &Session) -> Outcome {
    let opts = LockOptions {
        mode: LockMode::Exclusive,
        wait: Duration::from_secs(20),
    };
    let guard = match session.lock_with(LOCK, opts).await {
        Ok(g) => g,
        Err(e) => return Outcome::NotWritten(Some(e)),
    };
    let n = match client.kv_get(COUNTER).await {
        Ok(current) => current.map_or(0, |v| decode(&v.value)),
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

/// One counter client until `stop_at`: its own connection (with `config`,
/// e.g. [`TestCluster::client_config`](crate::TestCluster::client_config))
/// and session (reopened when it expires), counting acknowledged and
/// indeterminate increments. Panics if it cannot connect; a session that
/// cannot be opened yet (a cluster still electing, a loaded host) is asked
/// for again until `stop_at`, each failure printed — the caller's check
/// that the counter made progress catches a worker that never got one.
pub async fn run_worker(
    config: ClientConfig,
    name: String,
    stop_at: Instant,
    acked: Arc<AtomicU64>,
    indeterminate: Arc<AtomicU64>,
) {
    let config = ClientConfig {
        client_name: name.clone(),
        ..config
    };
    let client = Client::connect_with(config)
        .await
        .unwrap_or_else(|e| panic!("counter worker {name}: connect: {e}"));
    let mut session = loop {
        match client.open_session(Duration::from_secs(5)).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < stop_at => {
                eprintln!("counter worker {name}: open session: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                eprintln!("counter worker {name}: no session before the end: {e}");
                return;
            }
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_is_a_little_endian_u64_and_garbage_reads_as_zero() {
        assert_eq!(decode(&41u64.to_le_bytes()), 41);
        assert_eq!(decode(b""), 0);
        assert_eq!(decode(b"abc"), 0);
    }
}
