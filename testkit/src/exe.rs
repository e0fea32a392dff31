//! The one way tests, jepsen and the benchmarks find the `driftlock`
//! binary.
//!
//! The binary wanted is the one of the caller's own cargo profile, in the
//! caller's target directory: `target/<profile>/driftlock` for a program in
//! `target/<profile>/` or a test in `target/<profile>/deps/`. It is built
//! with `cargo build -p driftlock-node --bin driftlock [--profile P]`
//!
//! - when it is missing, or
//! - whenever the caller runs under cargo (`cargo run`, `cargo test`,
//!   `cargo bench` set `CARGO`): an existing binary may be older than the
//!   caller's sources, and a node that speaks an older protocol than the
//!   client under test fails in confusing ways. When it is fresh, that
//!   build only checks, in a second or so.
//!
//! A program run directly (not under cargo) uses an existing binary as it
//! is, so a copied or installed pair of binaries runs without a toolchain.
//! The build runs at most once per process; concurrent callers wait for it.
//! Cross-compiled layouts (`target/<triple>/<profile>/`) are not supported:
//! pass the binary explicitly there (jepsen's `--driftlock`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Why the `driftlock` binary could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum ExeError {
    /// The caller's own path is unknown.
    #[error("cannot find this program's own path: {0}")]
    OwnPath(std::io::Error),
    /// The caller is not inside a target directory.
    #[error("{0} has no parent directory to look for driftlock in")]
    NoDirectory(PathBuf),
    /// cargo could not be run.
    #[error("driftlock is missing or must be rebuilt, and cargo ({cargo}) cannot be run: {source}")]
    Cargo {
        /// The cargo program tried.
        cargo: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The build failed (its output went to this process's stderr).
    #[error("`{command}` failed ({status})")]
    Build {
        /// The command, for the message.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The build succeeded but put the binary elsewhere.
    #[error("`{command}` succeeded but {path} does not exist")]
    Missing {
        /// The command, for the message.
        command: String,
        /// Where the binary was expected.
        path: PathBuf,
    },
}

/// The binary found by the first successful call, reused afterwards.
static FOUND: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The `driftlock` binary of the caller's cargo profile, built first when
/// missing or when running under cargo (see the module documentation).
pub fn driftlock_exe() -> Result<PathBuf, ExeError> {
    let mut found = FOUND.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = found.as_ref() {
        return Ok(path.clone());
    }
    let me = std::env::current_exe().map_err(ExeError::OwnPath)?;
    let path = locate(&me, std::env::var_os("CARGO").map(PathBuf::from))?;
    *found = Some(path.clone());
    Ok(path)
}

/// Where the binary of the profile `me` belongs to lives: the profile
/// directory (the parent of `deps/` or `examples/` for tests and examples)
/// and the profile's name as cargo spells it.
fn profile_dir(me: &Path) -> Result<(PathBuf, String), ExeError> {
    let mut dir = me.parent().ok_or_else(|| ExeError::NoDirectory(me.to_path_buf()))?;
    if dir.file_name().is_some_and(|n| n == "deps" || n == "examples") {
        dir = dir.parent().ok_or_else(|| ExeError::NoDirectory(dir.to_path_buf()))?;
    }
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        // The dev and test profiles build into `debug/`.
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    };
    Ok((dir.to_path_buf(), profile))
}

fn locate(me: &Path, cargo: Option<PathBuf>) -> Result<PathBuf, ExeError> {
    let (dir, profile) = profile_dir(me)?;
    let exe = dir.join("driftlock");
    let under_cargo = cargo.is_some();
    if exe.is_file() && !under_cargo {
        return Ok(exe);
    }
    let cargo = cargo.unwrap_or_else(|| PathBuf::from("cargo"));
    let mut args = vec!["build", "-p", "driftlock-node", "--bin", "driftlock"];
    if profile != "dev" {
        args.extend(["--profile", profile.as_str()]);
    }
    let command = format!("cargo {}", args.join(" "));
    eprintln!(
        "{} {}: running `{command}`",
        if exe.is_file() {
            "checking that driftlock is up to date:"
        } else {
            "driftlock binary not found:"
        },
        exe.display(),
    );
    let mut cmd = Command::new(&cargo);
    cmd.args(&args);
    // Build into the caller's target directory, whatever the caller's
    // environment says.
    if let Some(target) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    // Any directory of the workspace will do: this crate's.
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let status = cmd.status().map_err(|source| ExeError::Cargo {
        cargo: cargo.display().to_string(),
        source,
    })?;
    if !status.success() {
        return Err(ExeError::Build { command, status });
    }
    if !exe.is_file() {
        return Err(ExeError::Missing { command, path: exe });
    }
    Ok(exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_directory_of_programs_tests_and_examples() {
        let cases = [
            ("/w/target/debug/driftlock-jepsen", "/w/target/debug", "dev"),
            ("/w/target/debug/deps/client-0123abcd", "/w/target/debug", "dev"),
            ("/w/target/release/driftlock-bench", "/w/target/release", "release"),
            ("/w/target/release/deps/apply-0123", "/w/target/release", "release"),
            ("/w/target/profiling/examples/x", "/w/target/profiling", "profiling"),
        ];
        for (me, dir, profile) in cases {
            let (d, p) = profile_dir(Path::new(me)).unwrap();
            assert_eq!((d.as_path(), p.as_str()), (Path::new(dir), profile), "{me}");
        }
    }

    #[test]
    fn outside_cargo_an_existing_binary_is_used_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("release");
        std::fs::create_dir_all(profile.join("deps")).unwrap();
        std::fs::write(profile.join("driftlock"), b"").unwrap();
        // No cargo at all: it must not be needed.
        let found = locate(&profile.join("deps").join("t-1234"), None).unwrap();
        assert_eq!(found, profile.join("driftlock"));
    }

    #[test]
    fn a_failed_build_is_reported_with_its_command() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("bench");
        std::fs::create_dir_all(&profile).unwrap();
        // `false` stands in for a cargo whose build fails.
        let err = locate(&profile.join("me"), Some(PathBuf::from("false"))).unwrap_err();
        match err {
            ExeError::Build { command, .. } => {
                assert_eq!(command, "cargo build -p driftlock-node --bin driftlock --profile bench")
            }
            other => panic!("expected Build, got {other}"),
        }
        // `true` builds nothing: the binary is still missing.
        let err = locate(&profile.join("me"), Some(PathBuf::from("true"))).unwrap_err();
        assert!(matches!(err, ExeError::Missing { path, .. } if path == profile.join("driftlock")));
    }
}
