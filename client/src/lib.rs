//! The library applications embed to use driftlock: leader discovery,
//! sessions with local validity, lock guards with fencing tokens, elections
//! and the KV API, over the tarpc protocol of `driftlock-proto` (re-exported
//! as [`proto`]).
//!
//! - [`Client`] finds the leader among the configured endpoints, keeps one
//!   connection per node and retries with backoff; sessionless KV writes
//!   and reads live here.
//! - [`Session`] is a lease kept alive in the background. Its local
//!   validity is measured from the moment each renewal was sent, shortened
//!   by this host's drift bound and a margin (docs/design.md "Time", rule 5), so
//!   it always ends before the cluster's; its [`SessionState`] goes
//!   `Valid` → `Jeopardy` → `Expired` as in Chubby.
//! - [`LockGuard`]s and [`Leadership`]s hang off a session and end with it;
//!   every grant carries a fencing token that fenced KV writes check. A
//!   `Leadership` can also end while its session lives (a resignation, a
//!   warm handover): act as master only until its
//!   [`lost`](Leadership::lost) signal.
//!
//! Every session operation carries `(session, seq)` and keeps it across
//! retries, so the cluster applies it once however often it is resent.
//!
//! ```no_run
//! # async fn demo() -> Result<(), driftlock_client::ClientError> {
//! use std::time::Duration;
//! use driftlock_client::Client;
//!
//! let client = Client::connect(vec!["127.0.0.1:7301".into()]).await?;
//! let session = client.open_session(Duration::from_secs(10)).await?;
//! let guard = session.lock("jobs/nightly").await?;
//! session.kv_put_fenced("jobs/nightly/state", b"running".to_vec(), &guard).await?;
//! guard.release().await?;
//! session.close().await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod client;
mod clock;
mod config;
mod election;
mod error;
mod handover;
mod lock;
pub mod probe;
mod session;
mod sync;
mod transport;

/// The wire protocol, re-exported so an application needs one dependency:
/// events, views, rejections and the request types.
pub use driftlock_proto as proto;

pub use client::Client;
pub use config::{endpoints_from_env, tls_from_env, ClientConfig, CA_ENV, CERT_ENV, ENDPOINTS_ENV, KEY_ENV};
pub use election::{Election, LeaderChange, LeaderWatch, Leadership, LeadershipLoss};
pub use error::{ClientError, Result};
pub use lock::{LockGuard, LockOptions};
pub use session::{Session, SessionState};

pub use driftlock_proto::{Event, Fence, KvView, LockMode, Rejection, SessionId};
