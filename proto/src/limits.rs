//! Protocol limits, declared once for nodes and clients.
//!
//! Two kinds of bound live here. Hard protocol bounds (frame size, the
//! longest wait, batch sizes) are the same on every node and client of a
//! build. The replicated [`Limits`](crate::Limits) (name and value sizes,
//! counts) are set per cluster, but never above the ceilings below, so that
//! the largest request a limit admits, and the largest batch a node sends,
//! always fit in one frame. The `const` assertions at the end check that
//! arithmetic at compile time.

/// Largest reply frame a client accepts on the client API, bytes (8 MiB):
/// a batch of events or range entries ([`MAX_BATCH_BYTES`]) with room to
/// spare. A larger frame breaks the connection.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// Largest request frame a node accepts on the client port, bytes
/// (1 MiB + 12 KiB, [`MAX_ITEM_BYTES`]): the largest legitimate request
/// at the limits' ceilings — a fenced KV write or a handover chunk, i.e.
/// two names and a value at their ceilings plus the envelope. Every other
/// request is smaller (a range read or an observe filter names at most two
/// names; an admin `Init` lists member addresses). A larger frame breaks
/// the connection before any of it is decoded, and the node never holds
/// more than about twice what arrived of it (`codec::FrameCodec`).
pub const MAX_REQUEST_FRAME_BYTES: usize = MAX_ITEM_BYTES;

/// Largest Raft log entry a node proposes, bytes (1 MiB + 16 KiB): the
/// largest client request ([`MAX_REQUEST_FRAME_BYTES`]) with its cluster
/// time and principal. Node-made entries (ticks, health, clock estimates,
/// membership) are far smaller. A node refuses to propose a larger one
/// (`server::propose`), so this bounds every entry in the log.
pub const MAX_ENTRY_BYTES: usize = MAX_REQUEST_FRAME_BYTES + MESSAGE_OVERHEAD_BYTES;

/// Encoded bytes of log entries a leader puts in one AppendEntries, bytes
/// (1 MiB, as etcd's `MaxSizePerMsg`): the log reader stops before the
/// entry that would pass it, but always returns at least one, so one
/// message carries at most this plus one entry ([`MAX_ENTRY_BYTES`]). An
/// append must reach a follower and be flushed there within openraft's
/// replication timeout; a few MiB of large values on a slow or loaded
/// follower did not, and the follower never caught up.
pub const MAX_APPEND_BYTES: usize = 1 << 20;

/// Bytes of a snapshot a node sends in one Raft message (4 MiB); the
/// receiver reassembles the chunks in order and installs the snapshot once
/// the last one arrived and its checksum verified.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

/// Largest Raft frame between nodes, bytes (4.25 MiB): one snapshot chunk
/// or an AppendEntries at [`MAX_APPEND_BYTES`] plus one entry (the
/// smaller), with the envelope (vote, log ids, snapshot metadata). Only
/// nodes talk on the Raft port; a larger frame breaks the connection.
pub const MAX_RAFT_FRAME_BYTES: usize = SNAPSHOT_CHUNK_BYTES + RAFT_ENVELOPE_BYTES;

/// Generous bound on a Raft message besides its entries or snapshot bytes
/// (vote, log ids, per-entry headers of an append, a snapshot's metadata
/// with the membership), bytes (256 KiB).
pub const RAFT_ENVELOPE_BYTES: usize = 256 << 10;

/// Time a peer has to deliver a frame from its first byte, besides the
/// time its length takes at [`MIN_FRAME_BYTES_PER_S`], ms (10 s). A frame
/// still incomplete then closes the connection (`codec::DeadlineIo`): a
/// peer cannot hold a connection and its buffer by stalling mid-frame.
pub const FRAME_TIMEOUT_MS: u64 = 10_000;

/// Slowest transfer rate a frame is allowed, bytes per second (64 KiB/s):
/// a frame of `len` bytes has `FRAME_TIMEOUT_MS + len / this` to arrive.
pub const MIN_FRAME_BYTES_PER_S: u64 = 64 << 10;

/// Time a write may make no progress before the connection is closed, ms
/// (30 s): a peer that stops reading its replies does not keep them queued
/// here.
pub const WRITE_STALL_TIMEOUT_MS: u64 = 30_000;

/// Longest an acquire may ask to wait in the queue (`wait_us`), µs (one
/// hour). The client library refuses a longer wait before sending; a node
/// answers `ApiError::InvalidRequest`.
pub const MAX_WAIT_US: u64 = 3_600_000_000;

/// Longest `observe` long-poll a node honours, ms (30 s); a request asking
/// for longer waits this long and returns an empty batch if nothing
/// happened.
pub const MAX_OBSERVE_WAIT_MS: u64 = 30_000;

/// Events after which an `observe` batch stops. A batch never splits one
/// entry's events, so a batch whose first entry produced more returns them
/// all (its size is still bounded by [`MAX_BATCH_BYTES`]).
pub const MAX_BATCH_EVENTS: usize = 1_000;

/// Most sessions one `observe` filter may list (`EventFilter::sessions`):
/// 65 536, 512 KiB of ids, so that the request with a key prefix and an
/// election name of the longest allowed fits a request frame. A client
/// library with more live sessions splits them over several long-polls.
pub const MAX_OBSERVE_SESSIONS: usize = 65_536;

/// Most keys in one page of a range read; a larger `limit` is cut to this.
/// The reply's `more` flag and `start_after` page through the rest.
pub const MAX_RANGE_KEYS: u32 = 10_000;

/// Encoded bytes of events (or of range entries) a node puts in one reply
/// (4 MiB). A batch stops before the entry (or key) that would pass it, but
/// always holds at least one: a range page its first key, an event batch its
/// first entry. A batch never splits an entry's events: an entry whose
/// events alone pass the budget keeps those that fit and reports the rest
/// as dropped (`EventBatch::truncated`).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Ceiling of the replicated `limits.max_name_bytes` and
/// `limits.max_client_name_bytes`, bytes (4 KiB); `Config::validate`
/// refuses more.
pub const MAX_NAME_BYTES_CEILING: usize = 4 << 10;

/// Ceiling of the replicated `limits.max_value_bytes`, bytes (1 MiB), and
/// the hard limit of one handover chunk; `Config::validate` refuses more.
pub const MAX_VALUE_BYTES_CEILING: usize = 1 << 20;

/// Ceiling of the replicated `limits.max_handover_bytes` (all chunks of one
/// handover together), bytes (64 MiB). Chunks travel one per entry, so the
/// total is bounded by the log, not by a frame.
pub const MAX_HANDOVER_BYTES_CEILING: usize = 64 << 20;

/// Bytes of state the client library puts in one handover chunk (32 KiB).
pub const HANDOVER_CHUNK_BYTES: usize = 32 << 10;

/// Default of the replicated `limits.max_name_bytes`, bytes.
pub const DEFAULT_MAX_NAME_BYTES: usize = 512;

/// Default of the replicated `limits.max_value_bytes`, bytes (64 KiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 64 << 10;

/// Default of the replicated `limits.max_handover_bytes`, bytes (4 MiB).
pub const DEFAULT_MAX_HANDOVER_BYTES: usize = 4 << 20;

/// Default of the replicated `limits.max_client_name_bytes`, bytes; the
/// client library refuses a longer name before sending it (it checks this
/// default, not the cluster's configured value).
pub const DEFAULT_MAX_CLIENT_NAME_BYTES: usize = 128;

/// Bound on the encoded bytes of a range entry besides its key and value
/// (two length prefixes and three revisions: 40 bytes in bincode); a node
/// counts each entry as key + value + this against [`MAX_BATCH_BYTES`].
pub const KV_ENTRY_OVERHEAD_BYTES: usize = 64;

/// Generous bound on everything in an encoded message besides its names
/// and values (enum tags, integers, length prefixes, tarpc's envelope),
/// bytes (4 KiB).
pub const MESSAGE_OVERHEAD_BYTES: usize = 4 << 10;

/// The largest single message a cluster at the ceilings can produce, bytes
/// (1 MiB + 12 KiB): a fenced KV write names a key and a lock and carries a
/// value; an event names an election or lock and carries a value or a
/// handover chunk.
pub const MAX_ITEM_BYTES: usize = 2 * MAX_NAME_BYTES_CEILING + MAX_VALUE_BYTES_CEILING + MESSAGE_OVERHEAD_BYTES;

/// Longest principal name a policy can name (a grant's principal or an
/// admin), bytes. Certificate names longer than this can be given rights
/// only through `*`.
pub const MAX_PRINCIPAL_BYTES: usize = 256;

/// Most grants an access policy may hold (`AccessPolicy::validate`); every
/// request is checked against each, so the bound is also a cost bound.
pub const MAX_POLICY_GRANTS: usize = 256;

/// Most named administrators an access policy may hold.
pub const MAX_POLICY_ADMINS: usize = 256;

const _: () = {
    assert!(DEFAULT_MAX_NAME_BYTES <= MAX_NAME_BYTES_CEILING);
    assert!(DEFAULT_MAX_VALUE_BYTES <= MAX_VALUE_BYTES_CEILING);
    assert!(DEFAULT_MAX_HANDOVER_BYTES <= MAX_HANDOVER_BYTES_CEILING);
    assert!(DEFAULT_MAX_CLIENT_NAME_BYTES <= MAX_NAME_BYTES_CEILING);
    // The state machine refuses a handover chunk above the value ceiling.
    assert!(HANDOVER_CHUNK_BYTES <= MAX_VALUE_BYTES_CEILING);
    // Any one request fits in a request frame, any one event in a reply.
    assert!(MAX_ITEM_BYTES <= MAX_REQUEST_FRAME_BYTES);
    assert!(MAX_ITEM_BYTES <= MAX_FRAME_BYTES);
    // Far less than a reply frame: an attacker's frame costs little.
    assert!(MAX_REQUEST_FRAME_BYTES <= MAX_FRAME_BYTES / 4);
    // A batch fits, and so does any one item (a range page always holds at
    // least one entry, an event batch at least one event).
    assert!(MAX_BATCH_BYTES + MESSAGE_OVERHEAD_BYTES <= MAX_FRAME_BYTES);
    // A backup's snapshot chunk (`AdminReply::SnapshotChunk`: at most
    // MAX_BATCH_BYTES of data) with its membership, bounded like a Raft
    // envelope, fits one reply.
    assert!(MAX_BATCH_BYTES + RAFT_ENVELOPE_BYTES + MESSAGE_OVERHEAD_BYTES <= MAX_FRAME_BYTES);
    assert!(MAX_ITEM_BYTES <= MAX_BATCH_BYTES);
    assert!(MAX_BATCH_EVENTS > 0 && MAX_RANGE_KEYS > 0);
    // The largest `observe` filter (every session id a u64, a prefix and
    // an election of the longest names) fits a request frame.
    assert!(MAX_OBSERVE_SESSIONS * 8 + 2 * MAX_NAME_BYTES_CEILING + MESSAGE_OVERHEAD_BYTES <= MAX_REQUEST_FRAME_BYTES);
    // Any one entry and any one snapshot chunk fit a Raft frame.
    assert!(MAX_ITEM_BYTES + MESSAGE_OVERHEAD_BYTES <= MAX_ENTRY_BYTES);
    assert!(SNAPSHOT_CHUNK_BYTES + RAFT_ENVELOPE_BYTES <= MAX_RAFT_FRAME_BYTES);
    assert!(MAX_APPEND_BYTES + MAX_ENTRY_BYTES + RAFT_ENVELOPE_BYTES <= MAX_RAFT_FRAME_BYTES);
    assert!(SNAPSHOT_CHUNK_BYTES > 0 && MAX_APPEND_BYTES > 0);
    // The longest wait fits the µs arithmetic of cluster time with room for
    // centuries of uptime.
    assert!(MAX_WAIT_US < u64::MAX / 1_000_000);
    // The largest valid access policy fits one reply (and one entry).
    assert!(
        MAX_POLICY_GRANTS * (MAX_PRINCIPAL_BYTES + MAX_NAME_BYTES_CEILING + 64)
            + MAX_POLICY_ADMINS * (MAX_PRINCIPAL_BYTES + 8)
            + MESSAGE_OVERHEAD_BYTES
            <= MAX_BATCH_BYTES
    );
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvView;

    #[test]
    fn a_range_entry_encodes_within_its_estimate() {
        let view = KvView {
            value: vec![7; 1000],
            create_revision: u64::MAX,
            mod_revision: u64::MAX,
            version: u64::MAX,
        };
        let entry = ("k".repeat(100), view);
        let bytes = bincode::serialized_size(&entry).unwrap() as usize;
        assert!(bytes <= 100 + 1000 + KV_ENTRY_OVERHEAD_BYTES, "{bytes}");
    }
}
