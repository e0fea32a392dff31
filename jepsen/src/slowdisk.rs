//! The slow-disk fault: an `LD_PRELOAD` shim (`slowdisk/fsync_shim.c`)
//! makes `fsync`, `fdatasync` and `sync_file_range` of a node sleep as long
//! as a file of the run directory says (`n<id>.fsync-delay-us`, read on
//! every call) before doing their work. The shim is compiled at the start
//! of a run that enables the `slow-disk` nemesis with the C compiler every
//! Rust build has (`cc`, the linker); without one the nemesis is
//! unavailable and the run says why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim's C source.
pub const SHIM_SOURCE: &str = include_str!("slowdisk/fsync_shim.c");

/// The environment variable naming a node's delay file.
pub const DELAY_FILE_ENV: &str = "DRIFTLOCK_FSYNC_DELAY_FILE";

/// Compiles the shim into `dir` (`libdriftlock_slowfsync.so`); returns its
/// path, or why it could not be built.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("fsync_shim.c");
    let lib = dir.join("libdriftlock_slowfsync.so");
    std::fs::write(&src, SHIM_SOURCE).map_err(|e| format!("{}: {e}", src.display()))?;
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .map_err(|e| format!("cannot run cc (no C compiler?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cc failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(lib)
}

/// Sets the delay of every fsync of the node whose delay file is `file`,
/// µs (0: none). Written aside and renamed, so a reader never sees half.
pub fn set_delay_us(file: &Path, delay_us: u64) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, delay_us.to_string())?;
    std::fs::rename(&tmp, file)
}
