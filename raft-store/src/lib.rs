//! driftlock's Raft storage: openraft's `RaftLogStorage` and
//! `RaftStateMachine` over sled, every value crc32-framed, applying committed
//! entries to [`driftlock_state_machine`].
