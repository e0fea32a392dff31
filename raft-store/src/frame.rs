//! The frame every stored value wears, and the store's error type.
//!
//! A frame is `[len: u32 LE][crc32: u32 LE][payload]`, where `len` is the
//! payload's length and `crc32` its CRC-32 (crc32fast). The payload is the
//! bincode 1.3 encoding of the value. A frame whose length or checksum does
//! not match is reported as [`StoreError::Corruption`] naming the tree and
//! key; nothing is ever skipped.

use std::io;

use driftlock_state_machine::RestoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes before the payload: length and checksum.
pub const HEADER_BYTES: usize = 8;

/// Everything that can go wrong opening, reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A stored value failed its frame check. The node must not start on
    /// this store: restore the node from a healthy replica instead.
    #[error("corrupted value in sled tree `{tree}` at key {key}: {detail}")]
    Corruption {
        /// The sled tree holding the value.
        tree: String,
        /// The value's key, readable (a log index, or a key name).
        key: String,
        /// What did not match.
        detail: &'static str,
    },
    /// A value passed its frame check but its payload does not decode: the
    /// store was written by an incompatible build.
    #[error("value in sled tree `{tree}` at key {key} does not decode: {source}")]
    Undecodable {
        /// The sled tree holding the value.
        tree: String,
        /// The value's key, readable.
        key: String,
        /// The decoder's complaint.
        source: bincode::Error,
    },
    /// A snapshot file failed its frame check. The node must not start on
    /// this store: restore the node from a healthy replica instead.
    #[error("corrupted snapshot file {}: {detail}", path.display())]
    CorruptFile {
        /// The file.
        path: std::path::PathBuf,
        /// What did not match.
        detail: &'static str,
    },
    /// A snapshot file could not be read, written, renamed or synced (or
    /// is missing while the metadata names it).
    #[error("snapshot file {}: {source}", path.display())]
    File {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The stored values are individually sound but contradict each other
    /// (e.g. a hole in the log).
    #[error("inconsistent store: {0}")]
    Inconsistent(String),
    /// A snapshot's state was refused by the state machine (version or
    /// invariants).
    #[error("snapshot refused by the state machine: {0}")]
    Restore(#[from] RestoreError),
    /// A value could not be encoded.
    #[error("cannot encode a value: {0}")]
    Encode(bincode::Error),
    /// A value is too large for a frame (4 GiB or more).
    #[error("a value of {bytes} bytes is too large for a frame")]
    TooLarge {
        /// The payload's size.
        bytes: usize,
    },
    /// sled itself failed (I/O, or its own corruption check), opening, reading,
    /// writing or flushing.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// An entry could not be applied (e.g. its index does not follow the
    /// state machine's).
    #[error("cannot apply: {0}")]
    Apply(String),
    /// The log's flusher thread could not be started.
    #[error("cannot start the log flusher thread: {0}")]
    Thread(io::Error),
    /// The background flusher has stopped (the store is shutting down or a
    /// previous flush failed).
    #[error("the log flusher has stopped")]
    FlusherGone,
}

impl From<StoreError> for io::Error {
    /// openraft 0.10.0-alpha.37's storage traits return `io::Error`; the
    /// [`StoreError`] travels inside it (`io::Error::get_ref` +
    /// `downcast_ref::<StoreError>()` recovers it). Corruption and
    /// undecodable values map to `InvalidData`.
    fn from(err: StoreError) -> io::Error {
        let kind = match &err {
            StoreError::Corruption { .. }
            | StoreError::CorruptFile { .. }
            | StoreError::Undecodable { .. }
            | StoreError::Inconsistent(_) => io::ErrorKind::InvalidData,
            StoreError::Restore(_) => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

/// Frames `payload`: `[len u32 LE][crc32 u32 LE][payload]`. Fails only for
/// a payload of 4 GiB or more, which the length field cannot express.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = u32::try_from(payload.len()).map_err(|_| StoreError::TooLarge { bytes: payload.len() })?;
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks a frame and returns its payload, or what did not match.
pub fn check(frame: &[u8]) -> Result<&[u8], &'static str> {
    let Some((header, payload)) = frame.split_at_checked(HEADER_BYTES) else {
        return Err("shorter than the frame header");
    };
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[..4]);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&header[4..]);
    if u32::from_le_bytes(len_bytes) as usize != payload.len() {
        return Err("frame length does not match the value's length");
    }
    if u32::from_le_bytes(crc_bytes) != crc32fast::hash(payload) {
        return Err("crc32 mismatch");
    }
    Ok(payload)
}

/// Checks a frame and returns its payload; `tree` and `key` name the value in
/// the error.
pub fn decode<'a>(tree: &str, key: &str, frame: &'a [u8]) -> Result<&'a [u8], StoreError> {
    check(frame).map_err(|detail| StoreError::Corruption {
        tree: tree.to_string(),
        key: key.to_string(),
        detail,
    })
}

/// bincode-encodes and frames a value.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let payload = bincode::serialize(value).map_err(StoreError::Encode)?;
    encode(&payload)
}

/// Checks a frame and bincode-decodes its payload.
pub fn decode_value<T: DeserializeOwned>(tree: &str, key: &str, frame: &[u8]) -> Result<T, StoreError> {
    let payload = decode(tree, key, frame)?;
    bincode::deserialize(payload).map_err(|source| StoreError::Undecodable {
        tree: tree.to_string(),
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let framed = encode(b"hello").unwrap();
        assert_eq!(framed.len(), HEADER_BYTES + 5);
        assert_eq!(decode("t", "k", &framed).unwrap(), b"hello");
        let empty = encode(b"").unwrap();
        assert_eq!(decode("t", "k", &empty).unwrap(), b"");
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let framed = encode(b"some payload worth protecting").unwrap();
        for i in 0..framed.len() {
            for bit in 0..8 {
                let mut bad = framed.clone();
                bad[i] ^= 1 << bit;
                let err = decode("log", "7", &bad).unwrap_err();
                match err {
                    StoreError::Corruption { tree, key, .. } => {
                        assert_eq!((tree.as_str(), key.as_str()), ("log", "7"));
                    }
                    other => panic!("unexpected {other}"),
                }
            }
        }
    }

    #[test]
    fn truncated_and_extended_frames_are_detected() {
        let framed = encode(b"abcdef").unwrap();
        for cut in 0..framed.len() {
            assert!(decode("t", "k", &framed[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = framed.clone();
        longer.push(0);
        assert!(decode("t", "k", &longer).is_err());
    }

    #[test]
    fn undecodable_payload_is_typed() {
        let framed = encode(&[1, 2]).unwrap();
        let err = decode_value::<u64>("meta", "vote", &framed).unwrap_err();
        assert!(matches!(err, StoreError::Undecodable { .. }), "{err}");
    }
}
