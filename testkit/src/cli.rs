//! Running the `driftlock` command as a user does, against a test cluster.

use std::path::PathBuf;
use std::process::Output;

use driftlock_proto::tls::TlsFiles;

/// The `DRIFTLOCK_CA/CERT/KEY` variables that present `files` to a
/// `driftlock` command or a client-library process, as `driftlock dev`
/// prints them.
pub fn tls_env(files: &TlsFiles) -> Vec<(&'static str, PathBuf)> {
    vec![
        (driftlock_client::CA_ENV, files.ca.clone()),
        (driftlock_client::CERT_ENV, files.cert.clone()),
        (driftlock_client::KEY_ENV, files.key.clone()),
    ]
}

/// Runs `driftlock args…` against `endpoints` with `files`' certificate
/// in the environment (none: plain TCP) and returns what it printed and
/// its exit status. Panics when the binary cannot be found or started.
pub fn run_cli(endpoints: &[String], files: Option<&TlsFiles>, args: &[&str]) -> Output {
    let exe = crate::driftlock_exe().unwrap_or_else(|e| panic!("driftlock binary: {e}"));
    std::process::Command::new(exe)
        .args(args)
        .env("DRIFTLOCK_ENDPOINTS", endpoints.join(","))
        .envs(files.map(tls_env).unwrap_or_default())
        .output()
        .unwrap_or_else(|e| panic!("run driftlock {args:?}: {e}"))
}

/// What a command printed on stdout, lossily decoded.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a command printed on stderr, lossily decoded.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
