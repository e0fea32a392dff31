//! The library applications embed to use driftlock: leader discovery,
//! sessions with local validity, lock guards with fencing tokens, elections
//! and the KV API, over the tarpc protocol in [`proto`].

pub mod proto;
