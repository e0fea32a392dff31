//! driftlock's protocol: every type that crosses the wire between clients
//! and nodes, and the tarpc service that carries them.
//!
//! - [`types`]: identifiers, lock modes, fences, health and clock samples;
//! - [`ops`], [`reply`], [`event`]: what a session asks, what the state
//!   machine answers, what applying an entry announces;
//! - [`views`] and [`api`]: reads, status, administration, errors;
//! - [`config`]: the replicated configuration, with its validation, and
//!   [`health`]: the Node Health Index both sides compute;
//! - [`auth`]: principals, the replicated access policy, refusals and
//!   the per-session secret;
//! - [`limits`]: frame, wait and size bounds, declared once;
//! - `service` and `tls` (feature `rpc`): the tarpc service, one-shot
//!   calls and mutual TLS; `pki` (feature `pki`): making certificates.
//!
//! The state machine depends on this crate without the `rpc` feature, so it
//! links no network code. Applications get it through the client library,
//! which re-exports it as `driftlock_client::proto`.

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
#[cfg(feature = "rpc")]
pub mod codec;
pub mod config;
pub mod event;
pub mod health;
pub mod limits;
pub mod ops;
#[cfg(feature = "pki")]
pub mod pki;
pub mod reply;
#[cfg(feature = "rpc")]
pub mod service;
#[cfg(feature = "rpc")]
pub mod tls;
pub mod types;
pub mod views;

pub use api::*;
pub use auth::{AccessPolicy, Action, Denied, Grant, PolicyView, Principal, Right, Rights, SessionSecret};
pub use config::{Config, ConfigChange, ConfigKeyError, ConfigView, LeaseConfig, Limits, TimeConfig};
pub use event::*;
pub use ops::SessionOp;
pub use reply::*;
#[cfg(feature = "rpc")]
pub use service::*;
pub use types::*;
pub use views::*;
