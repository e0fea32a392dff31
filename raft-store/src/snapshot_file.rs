//! The stored snapshot's data as a file beside sled's own, not as a sled
//! value (docs/design.md "Raft storage", snapshots without stalls).
//!
//! A snapshot of a million held locks is about 100 MB. Written into sled,
//! it went through sled's log and its flush, which the Raft log's appends
//! share: every append waited behind the snapshot's write and fsync, and
//! the clients saw a pause of up to seconds at each snapshot. A file of
//! its own is written and fsynced on the snapshot's blocking thread while
//! the log keeps flushing.
//!
//! Layout: `<data_dir>/snapshots/snapshot-<term>-<node>-<index>.bin` holds
//! the framed snapshot data (`[len][crc32][bincode]`, the same bytes that
//! are sent to followers and saved by backups); sled's `snapshot` tree
//! holds only the metadata, which names the file by its last log id. A
//! new snapshot is written to a `.tmp` file, fsynced, renamed to its name
//! and the directory fsynced, and only then does the metadata point to it
//! (one sled batch, flushed); the files the metadata no longer names are
//! removed after that. A crash at any point leaves the metadata naming a
//! complete file: at worst an unreferenced file or `.tmp` is left, and
//! opening the store removes it.
//!
//! Stores written before this layout keep the data in the `snapshot`
//! tree's `data` key; they open as before, and the next snapshot moves the
//! data to a file and removes the key.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::frame::{self, StoreError};
use crate::type_config::LogId;

/// Directory, inside the store's directory, holding snapshot files.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// A snapshot file is written and synced this many bytes at a time, so the
/// disk never holds more of it unsynced: one fsync of 100 MB at the end
/// made the Raft log's own fsyncs on the same disk wait for all of it
/// (RocksDB's `bytes_per_sync` does the same).
pub const SYNC_EVERY_BYTES: usize = 4 << 20;

/// The file name of the snapshot whose last entry is `last` (`None`: a
/// snapshot of the empty state).
pub fn file_name(last: Option<&LogId>) -> String {
    match last {
        Some(l) => format!("snapshot-{}-{}-{}.bin", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "snapshot-empty.bin".to_string(),
    }
}

/// The directory of snapshot files of the store at `store_dir`.
pub fn dir(store_dir: &Path) -> PathBuf {
    store_dir.join(SNAPSHOT_DIR)
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` as the file for snapshot `last` durably: a temporary
/// file, fsynced, renamed into place, the directory fsynced. Blocking.
pub fn write(store_dir: &Path, last: Option<&LogId>, data: &[u8]) -> Result<PathBuf, StoreError> {
    let dir = dir(store_dir);
    fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let path = dir.join(file_name(last));
    let tmp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        for chunk in data.chunks(SYNC_EVERY_BYTES) {
            file.write_all(chunk).map_err(|e| io_error(&tmp, e))?;
            file.sync_data().map_err(|e| io_error(&tmp, e))?;
        }
        file.sync_all().map_err(|e| io_error(&tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| io_error(&path, e))?;
    sync_dir(&dir)?;
    Ok(path)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Reads the file of snapshot `last` and checks its frame; a missing file
/// or a frame that does not match is an error naming the file.
pub fn read(store_dir: &Path, last: Option<&LogId>) -> Result<Vec<u8>, StoreError> {
    let path = dir(store_dir).join(file_name(last));
    let data = fs::read(&path).map_err(|e| io_error(&path, e))?;
    frame::check(&data).map_err(|detail| StoreError::CorruptFile {
        path: path.clone(),
        detail,
    })?;
    Ok(data)
}

/// Removes every file in the snapshot directory but the one of snapshot
/// `keep` (leftovers of older snapshots and of interrupted writes).
/// Blocking; a file that cannot be removed is logged and left.
pub fn remove_others(store_dir: &Path, keep: Option<&LogId>) -> Result<(), StoreError> {
    let dir = dir(store_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&dir, e)),
    };
    let keep = file_name(keep);
    for entry in entries {
        let entry = entry.map_err(|e| io_error(&dir, e))?;
        if entry.file_name().to_string_lossy() == keep {
            continue;
        }
        if let Err(e) = fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), "cannot remove an old snapshot file: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::type_config::log_id;

    #[test]
    fn a_written_file_reads_back_and_others_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let data = frame::encode(b"the state").unwrap();
        let old = log_id(1, 1, 5);
        let new = log_id(2, 3, 9);
        write(dir.path(), Some(&old), b"older").unwrap();
        write(dir.path(), Some(&new), &data).unwrap();
        fs::write(super::dir(dir.path()).join("snapshot-2-3-10.tmp"), b"torn").unwrap();
        assert_eq!(read(dir.path(), Some(&new)).unwrap(), data);
        remove_others(dir.path(), Some(&new)).unwrap();
        let left: Vec<String> = fs::read_dir(super::dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![file_name(Some(&new))]);
    }

    #[test]
    fn a_damaged_or_missing_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let last = log_id(1, 1, 7);
        let mut data = frame::encode(b"the state").unwrap();
        let mid = data.len() - 2;
        data[mid] ^= 0x10;
        write(dir.path(), Some(&last), &data).unwrap();
        match read(dir.path(), Some(&last)) {
            Err(StoreError::CorruptFile { path, .. }) => assert!(path.ends_with(file_name(Some(&last)))),
            other => panic!("expected CorruptFile, got {other:?}"),
        }
        match read(dir.path(), Some(&log_id(1, 1, 8))) {
            Err(StoreError::File { path, source }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert!(path.ends_with("snapshot-1-1-8.bin"));
            }
            other => panic!("expected File, got {other:?}"),
        }
    }
}
