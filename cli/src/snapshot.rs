//! `driftlock snapshot save|restore|inspect`: back a cluster up to a file
//! and seed a new cluster's data directories from it (docs/design.md
//! "Backup and restore"), and the backup file's format.
//!
//! A backup file is, all integers little-endian:
//!
//! ```text
//! magic "DLKSNAP\n" (8 bytes) | format version u32 (1)
//! | header length u32 | header (bincode of FileHeader) | header crc32 u32
//! | payload (header.payload_bytes bytes, crc32 header.payload_crc32)
//! ```
//!
//! The payload is the snapshot data exactly as the leader stores it (the
//! store's framed encoding of the state machine's snapshot, itself
//! checksummed); the header names the snapshot (its last log id) and the
//! membership it was taken under.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use driftlock_proto::{AdminReply, AdminRequest, SnapshotChunk, SnapshotId, SnapshotMembership};
use driftlock_raft_store::NodeAddr;
use serde::{Deserialize, Serialize};

use crate::{connect, CmdResult, Endpoints};

/// The `driftlock snapshot` subcommands.
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save a consistent snapshot of the cluster's state (every KV value,
    /// lock, session and election) from the leader into FILE. Admin only.
    Save {
        /// The cluster to talk to (an administrator's certificate).
        #[command(flatten)]
        endpoints: Endpoints,
        /// Replace FILE if it exists (otherwise an existing FILE is an
        /// error and is left alone).
        #[arg(long)]
        force: bool,
        /// The backup file to write.
        file: PathBuf,
    },
    /// Seed one node's data directory of a NEW cluster from a backup: run
    /// once per member, each with its own --data-dir and --node-id and the
    /// same --members, then start every node with `driftlock serve` on its
    /// directory (no `cluster init`).
    Restore {
        /// The backup file written by `snapshot save`.
        file: PathBuf,
        /// The node's data directory (`[node] data_dir`); must not exist or
        /// be empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// This node's Raft id; must be one of --members.
        #[arg(long)]
        node_id: u64,
        /// Every member of the new cluster as ID=RAFT_ADDR/CLIENT_ADDR,
        /// comma-separated, as `cluster init` takes them.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Check a backup file and print what it holds.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
}

/// The backup file's first bytes.
pub const MAGIC: [u8; 8] = *b"DLKSNAP\n";
/// The backup file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest header a reader accepts, bytes: a membership of a few nodes
/// takes well under a kilobyte.
const MAX_HEADER_BYTES: u32 = 1 << 20;

/// What a backup file says about its payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// The snapshot: the log id of the last entry it covers.
    pub snapshot: SnapshotId,
    /// The membership of the cluster it was saved from (restore replaces
    /// it; kept to say where the backup came from).
    pub membership: SnapshotMembership,
    /// Length of the payload, bytes.
    pub payload_bytes: u64,
    /// CRC-32 (crc32fast) of the payload.
    pub payload_crc32: u32,
}

/// Why a backup file was refused, naming the part that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file does not start with [`MAGIC`].
    #[error("not a driftlock snapshot file (bad magic)")]
    BadMagic,
    /// The file is in a format this build does not read.
    #[error("snapshot file format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// The file ends before the part named.
    #[error("the file is truncated: it ends inside the {0}")]
    Truncated(&'static str),
    /// The header's length field is implausible.
    #[error("the header length {0} is implausible (at most {MAX_HEADER_BYTES} bytes)")]
    HeaderTooLong(u32),
    /// The header fails its checksum.
    #[error("the header fails its crc32 check (stored {stored:08x}, computed {computed:08x})")]
    HeaderChecksum {
        /// The checksum the file holds.
        stored: u32,
        /// The checksum of the header bytes read.
        computed: u32,
    },
    /// The header passes its checksum but does not decode.
    #[error("the header does not decode: {0}")]
    HeaderUndecodable(String),
    /// The payload's length differs from the header's.
    #[error("the payload is {actual} bytes but the header says {expected}")]
    PayloadLength {
        /// What the header says.
        expected: u64,
        /// What follows the header.
        actual: u64,
    },
    /// The payload fails its checksum.
    #[error("the payload fails its crc32 check (header says {stored:08x}, computed {computed:08x})")]
    PayloadChecksum {
        /// What the header says.
        stored: u32,
        /// The checksum of the payload read.
        computed: u32,
    },
}

/// Encodes a backup file: header and payload.
pub fn encode_file(snapshot: SnapshotId, membership: SnapshotMembership, payload: &[u8]) -> Result<Vec<u8>, String> {
    let header = FileHeader {
        snapshot,
        membership,
        payload_bytes: payload.len() as u64,
        payload_crc32: crc32fast::hash(payload),
    };
    let header = bincode::serialize(&header).map_err(|e| format!("cannot encode the file header: {e}"))?;
    let header_len = u32::try_from(header.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER_BYTES)
        .ok_or_else(|| format!("the file header is {} bytes, too long", header.len()))?;
    let mut out = Vec::with_capacity(24 + header.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Splits `n` bytes off the front of `rest`, or says which part is cut.
fn take<'a>(rest: &mut &'a [u8], n: usize, part: &'static str) -> Result<&'a [u8], FileError> {
    let (head, tail) = rest.split_at_checked(n).ok_or(FileError::Truncated(part))?;
    *rest = tail;
    Ok(head)
}

fn u32_le(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(bytes);
    u32::from_le_bytes(b)
}

/// Checks a backup file (magic, version, header checksum, payload length
/// and checksum) and returns its header and payload. The payload's own
/// content is checked by restoring it
/// (`driftlock_raft_store::state_machine::decode_snapshot`).
pub fn decode_file(file: &[u8]) -> Result<(FileHeader, &[u8]), FileError> {
    let mut rest = file;
    if take(&mut rest, MAGIC.len(), "magic").map_err(|_| FileError::BadMagic)? != MAGIC {
        return Err(FileError::BadMagic);
    }
    let version = u32_le(take(&mut rest, 4, "format version")?);
    if version != FORMAT_VERSION {
        return Err(FileError::UnsupportedVersion(version));
    }
    let header_len = u32_le(take(&mut rest, 4, "header length")?);
    if header_len > MAX_HEADER_BYTES {
        return Err(FileError::HeaderTooLong(header_len));
    }
    let header = take(&mut rest, header_len as usize, "header")?;
    let stored = u32_le(take(&mut rest, 4, "header checksum")?);
    let computed = crc32fast::hash(header);
    if stored != computed {
        return Err(FileError::HeaderChecksum { stored, computed });
    }
    let header: FileHeader = bincode::deserialize(header).map_err(|e| FileError::HeaderUndecodable(e.to_string()))?;
    if rest.len() as u64 != header.payload_bytes {
        return Err(FileError::PayloadLength {
            expected: header.payload_bytes,
            actual: rest.len() as u64,
        });
    }
    let computed = crc32fast::hash(rest);
    if computed != header.payload_crc32 {
        return Err(FileError::PayloadChecksum {
            stored: header.payload_crc32,
            computed,
        });
    }
    Ok((header, rest))
}

/// Reads and checks a backup file, and restores its payload to make sure
/// the state machine takes it; returns the header, the payload and the
/// state's counts.
fn read_checked(path: &Path) -> Result<(FileHeader, Vec<u8>, driftlock_proto::Stats), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (header, payload) = decode_file(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let stats = verify_payload(&header.snapshot, payload).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((header, payload.to_vec(), stats))
}

/// Restores a snapshot's data to check it (frame, format version, the
/// state machine's invariants, and that it covers nothing beyond its log
/// id); returns the state's counts.
fn verify_payload(snapshot: &SnapshotId, payload: &[u8]) -> Result<driftlock_proto::Stats, String> {
    let machine = driftlock_raft_store::state_machine::decode_snapshot(payload)
        .map_err(|e| format!("the snapshot data does not restore: {e}"))?;
    if machine.last_index() > snapshot.index {
        return Err(format!(
            "the snapshot data has applied entry {} but is named as ending at {}",
            machine.last_index(),
            snapshot.index
        ));
    }
    Ok(machine.stats())
}

/// Runs one `driftlock snapshot` subcommand.
pub(crate) async fn snapshot(cmd: SnapshotCmd) -> CmdResult {
    match cmd {
        SnapshotCmd::Save { endpoints, force, file } => save(&endpoints, force, &file).await,
        SnapshotCmd::Restore {
            file,
            data_dir,
            node_id,
            members,
        } => restore(&file, &data_dir, node_id, &members),
        SnapshotCmd::Inspect { file } => {
            let (header, payload, stats) = read_checked(&file)?;
            println!(
                "{}: snapshot at {}, {} bytes, {}; saved from voters {:?}",
                file.display(),
                header.snapshot,
                payload.len(),
                counts(&stats),
                header.membership.voters
            );
            Ok(())
        }
    }
}

fn counts(stats: &driftlock_proto::Stats) -> String {
    format!(
        "{} keys, {} held locks, {} sessions, {} elections",
        stats.keys, stats.held_locks, stats.sessions, stats.elections
    )
}

async fn save(endpoints: &Endpoints, force: bool, file: &Path) -> CmdResult {
    if !force && file.exists() {
        return Err(format!("{} exists; give --force to replace it", file.display()));
    }
    let client = connect(endpoints).await?;
    let first = read_chunk(&client, None, 0).await?;
    let (id, membership, total) = (first.snapshot, first.membership.clone(), first.total_bytes);
    let mut data = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut chunk = first;
    loop {
        if chunk.snapshot != id || chunk.total_bytes != total || chunk.offset != data.len() as u64 {
            return Err(format!(
                "the leader answered a chunk of another snapshot or place ({} at offset {} of {} bytes, expected {id} \
                 at {} of {total}); save again",
                chunk.snapshot,
                chunk.offset,
                chunk.total_bytes,
                data.len()
            ));
        }
        data.extend_from_slice(&chunk.data);
        if data.len() as u64 >= total {
            break;
        }
        if chunk.data.is_empty() {
            return Err(format!(
                "the leader sent an empty chunk at offset {} of {total}",
                data.len()
            ));
        }
        chunk = read_chunk(&client, Some(id), data.len() as u64).await?;
    }
    if data.len() as u64 != total {
        return Err(format!("received {} bytes of a {total}-byte snapshot", data.len()));
    }
    verify_payload(&id, &data)?;
    let encoded = encode_file(id, membership, &data)?;
    write_atomically(file, &encoded, force)?;
    // What is on disk now must read back whole.
    let (_, payload, stats) = read_checked(file)?;
    println!(
        "saved snapshot at {id} to {}: {} bytes of state; {}",
        file.display(),
        payload.len(),
        counts(&stats)
    );
    Ok(())
}

/// One chunk of the leader's snapshot (a fresh one when `snapshot` is
/// `None`).
async fn read_chunk(
    client: &driftlock_client::Client,
    snapshot: Option<SnapshotId>,
    offset: u64,
) -> Result<SnapshotChunk, String> {
    match client
        .admin(AdminRequest::ReadSnapshot { snapshot, offset })
        .await
        .map_err(|e| e.to_string())?
    {
        AdminReply::SnapshotChunk(chunk) => Ok(chunk),
        other => Err(format!("unexpected reply {other:?} to a snapshot read")),
    }
}

/// Writes `bytes` to a temporary file beside `file`, syncs it, and moves it
/// into place: with `replace`, over whatever is there; without, only if
/// nothing is (a hard link, which fails on an existing name).
fn write_atomically(file: &Path, bytes: &[u8], replace: bool) -> CmdResult {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| format!("{} names no file", file.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        // Owner-only: the file holds every value of the cluster.
        let mut f =
            std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600)
                .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if replace {
            std::fs::rename(&tmp, file)?;
        } else {
            std::fs::hard_link(&tmp, file)?;
            std::fs::remove_file(&tmp)?;
        }
        // The new name is durable once the directory is.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} exists; give --force to replace it", file.display())
        } else {
            format!("cannot write {}: {e}", file.display())
        });
    }
    Ok(())
}

fn restore(file: &Path, data_dir: &Path, node_id: u64, members: &[String]) -> CmdResult {
    let (header, payload, stats) = read_checked(file)?;
    let mut nodes = BTreeMap::new();
    for spec in members {
        let m = crate::cluster::parse_member(spec)?;
        for addr in [&m.raft_addr, &m.client_addr] {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|_| format!("'{addr}' (in '{spec}') is not an ip:port address"))?;
        }
        let addr = NodeAddr {
            raft_addr: m.raft_addr,
            client_addr: m.client_addr,
        };
        if nodes.insert(m.id, addr).is_some() {
            return Err(format!("node id {} is listed twice in --members", m.id));
        }
    }
    let s = header.snapshot;
    driftlock_raft_store::seed_from_snapshot(
        data_dir,
        node_id,
        &payload,
        driftlock_raft_store::log_id(s.term, s.leader, s.index),
        nodes.clone(),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "restored snapshot at {s} ({}) into {} as node {node_id} of {:?}; start it with `driftlock serve`",
        counts(&stats),
        data_dir.display(),
        nodes.keys().collect::<Vec<_>>()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlock_proto::MemberAddr;

    fn sample() -> (SnapshotId, SnapshotMembership, Vec<u8>) {
        let id = SnapshotId {
            index: 4_321,
            term: 7,
            leader: 2,
        };
        let membership = SnapshotMembership {
            voters: vec![1, 2, 3],
            members: (1..=3)
                .map(|i| MemberAddr {
                    id: i,
                    raft_addr: format!("10.0.0.{i}:7400"),
                    client_addr: format!("10.0.0.{i}:7300"),
                })
                .collect(),
        };
        let payload = (0..5_000u32).map(|i| (i * 7 % 251) as u8).collect();
        (id, membership, payload)
    }

    #[test]
    fn a_file_round_trips() {
        let (id, membership, payload) = sample();
        let file = encode_file(id, membership.clone(), &payload).unwrap();
        let (header, read) = decode_file(&file).unwrap();
        assert_eq!(read, payload.as_slice());
        assert_eq!(header.snapshot, id);
        assert_eq!(header.membership, membership);
        assert_eq!(header.payload_bytes, 5_000);
        assert_eq!(&file[..8], b"DLKSNAP\n");
        // An empty payload is a well-formed file too.
        let empty = encode_file(id, SnapshotMembership::default(), &[]).unwrap();
        assert_eq!(decode_file(&empty).unwrap().1, b"");
    }

    #[test]
    fn every_corrupted_byte_is_refused_and_named() {
        let (id, membership, payload) = sample();
        let file = encode_file(id, membership, &payload).unwrap();
        let header_len = u32_le(&file[12..16]) as usize;
        let payload_start = 16 + header_len + 4;
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            let err = decode_file(&bad).unwrap_err();
            let expected_part = match at {
                0..8 => matches!(err, FileError::BadMagic),
                8..12 => matches!(err, FileError::UnsupportedVersion(_)),
                // A changed length cuts the header elsewhere: its checksum
                // (or the length bound, or the end of the file) catches it.
                12..16 => matches!(
                    err,
                    FileError::HeaderChecksum { .. } | FileError::HeaderTooLong(_) | FileError::Truncated(_)
                ),
                _ if at < payload_start => matches!(err, FileError::HeaderChecksum { .. }),
                _ => matches!(err, FileError::PayloadChecksum { .. }),
            };
            assert!(expected_part, "byte {at}: {err}");
        }
    }

    #[test]
    fn truncated_and_extended_files_are_refused() {
        let (id, membership, payload) = sample();
        let file = encode_file(id, membership, &payload).unwrap();
        for cut in [0, 5, 10, 14, 20, file.len() - payload.len() - 2, file.len() - 1] {
            let err = decode_file(&file[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    FileError::BadMagic | FileError::Truncated(_) | FileError::PayloadLength { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(decode_file(&longer), Err(FileError::PayloadLength { .. })));
    }

    #[test]
    fn an_existing_file_is_replaced_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.snap");
        write_atomically(&path, b"first", false).unwrap();
        let err = write_atomically(&path, b"second", false).unwrap_err();
        assert!(err.contains("exists"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_atomically(&path, b"second", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("backup.snap")]);
        // Only its owner may read it: it holds every value.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
}
