//! What a driftlock node or client measures of its own host, shared by both
//! so neither links the other:
//!
//! - [`clock`]: the raw monotonic clock ([`clock::RawInstant`]) every
//!   safety margin measures elapsed time with, unslewed by NTP;
//! - [`drift`]: the two-state Kalman filter that turns clock-offset samples
//!   (NTP, peers, keepalive replies) into an offset and drift estimate;
//! - [`health`]: the health sampler behind the adaptive lease (CPU, memory,
//!   I/O wait, round trips, recent failures), with the documented override
//!   for drills and tests.
//!
//! Judgement happens elsewhere: these produce samples, and only committed
//! samples reach the state machine.

#![forbid(unsafe_code)]

pub mod clock;
pub mod drift;
pub mod health;
