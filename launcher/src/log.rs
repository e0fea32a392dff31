//! Reading the end of a node's log file for error messages.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from the end of a log at most: enough for many lines, small
/// enough for a log that grew for hours.
const TAIL_WINDOW_BYTES: u64 = 64 << 10;

/// The last `lines` lines of the file at `path` (fewer if it has fewer), or
/// a one-line note saying why it could not be read. Invalid UTF-8 is
/// replaced, never an error: this is for messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(cannot read {}: {e})", path.display()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_WINDOW_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return format!("(cannot seek in {})", path.display());
    }
    let mut bytes = Vec::new();
    if let Err(e) = file.read_to_end(&mut bytes) {
        return format!("(cannot read {}: {e})", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    // A window that starts mid-file starts mid-line: drop that partial line.
    let skip_partial = usize::from(start > 0 && all.len() > 1);
    let kept = &all[skip_partial..];
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&path, 2), "c\nd");
        assert_eq!(tail(&path, 10), "a\nb\nc\nd");
        assert_eq!(tail(&path, 0), "");
    }

    #[test]
    fn a_long_log_is_read_from_a_line_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.log");
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(tail(&path, 2), "line 19998\nline 19999");
        let many = tail(&path, 100_000);
        assert!(
            many.starts_with("line "),
            "a partial first line was kept: {:?}",
            &many[..20]
        );
        assert!(many.ends_with("line 19999"));
    }

    #[test]
    fn a_missing_log_is_a_note_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let note = tail(&dir.path().join("missing.log"), 5);
        assert!(note.starts_with("(cannot read"), "{note}");
    }
}
