//! The library applications embed to use driftlock: leader discovery,
//! sessions with local validity, lock guards with fencing tokens, elections
//! and the KV API.
//!
//! Not yet built: this crate currently only fixes its place in the workspace.
