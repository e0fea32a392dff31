//! What one node process is started with: its `serve` command line,
//! environment and wrapper.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use driftlock_proto::tls::TlsFiles;
use driftlock_proto::MemberAddr;

use crate::LaunchError;

/// Where distributions install libfaketime's preload library.
const LIBFAKETIME_PATHS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];

/// Path of libfaketime's preload library, if installed.
pub fn libfaketime() -> Option<PathBuf> {
    LIBFAKETIME_PATHS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// What a node runs under: a command prefix and/or environment, e.g. a
/// network namespace (`ip netns exec NS`), the `faketime` command, or
/// libfaketime preloaded. The default runs the binary directly.
///
/// A prefix program that forks rather than execs (the `faketime` command
/// does) leaves the node as its child: signals then reach the wrapper, not
/// the node, and a killed wrapper's node exits on its own through
/// `--exit-with-parent`. Prefer [`Wrapper::libfaketime`] where a signal
/// must reach the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wrapper {
    /// Program and arguments the `driftlock` binary and its arguments are
    /// appended to; empty runs the binary directly.
    pub prefix: Vec<String>,
    /// Environment set for the wrapper and the node (e.g. `LD_PRELOAD`,
    /// `FAKETIME`), applied after the node's own [`NodeSpec::env`] removals.
    pub env: Vec<(String, String)>,
}

impl Wrapper {
    /// No wrapper: the binary runs directly.
    pub fn none() -> Wrapper {
        Wrapper::default()
    }

    /// A command prefix, e.g. `["ip", "netns", "exec", "dlj1"]` or
    /// `["faketime", "-f", "+0 x1.002"]`.
    pub fn command<I, S>(prefix: I) -> Wrapper
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Wrapper {
            prefix: prefix.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    /// libfaketime preloaded with the time spec `spec` (libfaketime's
    /// `FAKETIME` syntax, e.g. `"+3 x1.002"`: 3 s ahead, running 0.2 %
    /// fast), re-read on every call (`FAKETIME_NO_CACHE=1`). Fails when the
    /// library is not installed.
    pub fn libfaketime(spec: &str) -> Result<Wrapper, LaunchError> {
        let lib = libfaketime().ok_or_else(|| LaunchError::NoLibfaketime {
            looked_in: LIBFAKETIME_PATHS.join(", "),
        })?;
        Ok(Wrapper {
            prefix: Vec::new(),
            env: vec![
                ("LD_PRELOAD".into(), lib.display().to_string()),
                ("FAKETIME".into(), spec.into()),
                ("FAKETIME_NO_CACHE".into(), "1".into()),
            ],
        })
    }

    /// libfaketime preloaded, reading its time spec from the file `spec_file`
    /// (`FAKETIME_TIMESTAMP_FILE`) on every clock call
    /// (`FAKETIME_NO_CACHE=1`), so that whoever writes the file changes the
    /// clocks of the running process. The file must exist before the start
    /// and hold a spec such as `+0 x1`. Fails when the library is not
    /// installed.
    pub fn libfaketime_file(spec_file: &Path) -> Result<Wrapper, LaunchError> {
        let lib = libfaketime().ok_or_else(|| LaunchError::NoLibfaketime {
            looked_in: LIBFAKETIME_PATHS.join(", "),
        })?;
        Ok(Wrapper {
            prefix: Vec::new(),
            env: vec![
                ("LD_PRELOAD".into(), lib.display().to_string()),
                ("FAKETIME_TIMESTAMP_FILE".into(), spec_file.display().to_string()),
                ("FAKETIME_NO_CACHE".into(), "1".into()),
            ],
        })
    }

    /// This wrapper inside `outer`: `outer`'s prefix comes first, and both
    /// environments apply (this one's entries win on equal names).
    pub fn within(self, outer: Wrapper) -> Wrapper {
        let mut prefix = outer.prefix;
        prefix.extend(self.prefix);
        let mut env = outer.env;
        env.extend(self.env);
        Wrapper { prefix, env }
    }

    /// Whether this runs the binary directly with no extra environment.
    pub fn is_none(&self) -> bool {
        self.prefix.is_empty() && self.env.is_empty()
    }
}

/// Everything one `driftlock serve` process is started with. Flags are
/// passed as strings, exactly as on a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Raft node id (`--id`), ≥ 1 and unique in the cluster.
    pub id: u64,
    /// Node-to-node address (`--raft-addr`), `ip:port`.
    pub raft_addr: String,
    /// Client API address (`--client-addr`), `ip:port`; status calls and
    /// `Init` go here.
    pub client_addr: String,
    /// Prometheus address (`--metrics-addr`), `ip:port`; `None` passes no
    /// flag (the node's default: no metrics listener).
    pub metrics_addr: Option<String>,
    /// Data directory (`--data-dir`); kept across restarts.
    pub data_dir: PathBuf,
    /// File the node's stdout and stderr are appended to (its directory is
    /// created when missing).
    pub log_file: PathBuf,
    /// This node's TLS files (`--tls-ca`, `--tls-cert`, `--tls-key`);
    /// `None` runs it `--insecure` (plain TCP, tests that need it only).
    /// [`Cluster::secure`](crate::Cluster::secure) fills it in.
    pub tls: Option<TlsFiles>,
    /// Further `serve` flags, after the ones above.
    pub serve_args: Vec<String>,
    /// Environment variables set for the node.
    pub env: Vec<(String, String)>,
    /// Environment variables removed from what the node inherits (e.g.
    /// `DRIFTLOCK_CONFIG`, so a caller's config file does not leak in).
    pub env_remove: Vec<String>,
    /// What the node runs under.
    pub wrapper: Wrapper,
    /// Pass `--exit-with-parent`: the node exits when the process that
    /// started it does, so no node outlives a crashed test or tool. On by
    /// default.
    pub exit_with_parent: bool,
}

impl NodeSpec {
    /// A node with these addresses and paths, no extra flags, environment
    /// or wrapper, exiting with its parent; insecure until given TLS files.
    pub fn new(
        id: u64,
        raft_addr: impl Into<String>,
        client_addr: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        log_file: impl Into<PathBuf>,
    ) -> NodeSpec {
        NodeSpec {
            id,
            raft_addr: raft_addr.into(),
            client_addr: client_addr.into(),
            metrics_addr: None,
            data_dir: data_dir.into(),
            log_file: log_file.into(),
            tls: None,
            serve_args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            wrapper: Wrapper::none(),
            exit_with_parent: true,
        }
    }

    /// The member record of this node, as `Init` and membership changes
    /// want it.
    pub fn member(&self) -> MemberAddr {
        MemberAddr {
            id: self.id,
            raft_addr: self.raft_addr.clone(),
            client_addr: self.client_addr.clone(),
        }
    }

    /// The arguments after the binary: `serve` and its flags.
    pub fn serve_argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            "serve".into(),
            "--id".into(),
            self.id.to_string().into(),
            "--raft-addr".into(),
            self.raft_addr.clone().into(),
            "--client-addr".into(),
            self.client_addr.clone().into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
        ];
        if let Some(metrics) = &self.metrics_addr {
            argv.push("--metrics-addr".into());
            argv.push(metrics.clone().into());
        }
        match &self.tls {
            Some(tls) => {
                for (flag, path) in [
                    ("--tls-ca", &tls.ca),
                    ("--tls-cert", &tls.cert),
                    ("--tls-key", &tls.key),
                ] {
                    argv.push(flag.into());
                    argv.push(path.clone().into());
                }
            }
            None => argv.push("--insecure".into()),
        }
        argv.extend(self.serve_args.iter().map(OsString::from));
        if self.exit_with_parent {
            argv.push("--exit-with-parent".into());
        }
        argv
    }

    /// The command that starts this node from the binary `exe`: wrapper
    /// prefix, binary, `serve` flags, environment; stdin closed, stdout and
    /// stderr not yet redirected.
    pub fn command(&self, exe: &Path) -> Command {
        let mut cmd = match self.wrapper.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(self.serve_argv());
        for name in &self.env_remove {
            cmd.env_remove(name);
        }
        for (name, value) in self.env.iter().chain(&self.wrapper.env) {
            cmd.env(name, value);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The command line of [`command`](Self::command), for messages.
    pub fn command_line(&self, exe: &Path) -> String {
        let mut parts: Vec<String> = self.wrapper.prefix.clone();
        parts.push(exe.display().to_string());
        parts.extend(self.serve_argv().iter().map(|a| a.to_string_lossy().into_owned()));
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec::new(2, "127.0.0.1:2", "127.0.0.1:1", "/d/n2", "/d/n2.log")
    }

    #[test]
    fn the_command_line_carries_every_setting_in_order() {
        let mut s = spec();
        s.metrics_addr = Some("127.0.0.1:3".into());
        s.serve_args = vec!["--heartbeat-ms".into(), "50".into()];
        assert_eq!(
            s.command_line(Path::new("/bin/driftlock")),
            "/bin/driftlock serve --id 2 --raft-addr 127.0.0.1:2 --client-addr 127.0.0.1:1 --data-dir /d/n2 \
             --metrics-addr 127.0.0.1:3 --insecure --heartbeat-ms 50 --exit-with-parent"
        );
        s.tls = Some(TlsFiles::in_dir(Path::new("/c"), "node-2"));
        assert!(s
            .command_line(Path::new("x"))
            .contains("--tls-ca /c/ca.pem --tls-cert /c/node-2.pem --tls-key /c/node-2.key --heartbeat-ms"));
        s.exit_with_parent = false;
        assert!(!s.command_line(Path::new("x")).contains("--exit-with-parent"));
    }

    #[test]
    fn a_wrapper_prefix_runs_the_binary_as_its_argument() {
        let mut s = spec();
        s.wrapper =
            Wrapper::command(["faketime", "-f", "+0 x1.002"]).within(Wrapper::command(["ip", "netns", "exec", "ns2"]));
        let cmd = s.command(Path::new("/bin/driftlock"));
        assert_eq!(cmd.get_program(), "ip");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args[..7],
            ["netns", "exec", "ns2", "faketime", "-f", "+0 x1.002", "/bin/driftlock"]
        );
        assert_eq!(args[7], "serve");
    }

    #[test]
    fn environment_is_set_and_removed() {
        let mut s = spec();
        s.env = vec![("RUST_LOG".into(), "info".into())];
        s.env_remove = vec!["DRIFTLOCK_CONFIG".into()];
        s.wrapper = Wrapper {
            prefix: Vec::new(),
            env: vec![("FAKETIME".into(), "+1".into())],
        };
        let cmd = s.command(Path::new("/bin/driftlock"));
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("DRIFTLOCK_CONFIG".into(), None)));
        assert!(envs.contains(&("RUST_LOG".into(), Some("info".into()))));
        assert!(envs.contains(&("FAKETIME".into(), Some("+1".into()))));
    }

    #[test]
    fn libfaketime_file_names_the_spec_file_and_no_fixed_spec() {
        match (libfaketime(), Wrapper::libfaketime_file(Path::new("/run/n1.faketime"))) {
            (Some(_), Ok(w)) => {
                assert!(w
                    .env
                    .contains(&("FAKETIME_TIMESTAMP_FILE".into(), "/run/n1.faketime".into())));
                // FAKETIME would take precedence over the file.
                assert!(w.env.iter().all(|(k, _)| k != "FAKETIME"));
            }
            (None, Err(LaunchError::NoLibfaketime { .. })) => {}
            (lib, w) => panic!("library {lib:?} but wrapper {w:?}"),
        }
    }

    #[test]
    fn libfaketime_is_an_error_exactly_when_the_library_is_missing() {
        match (libfaketime(), Wrapper::libfaketime("+0 x1.001")) {
            (Some(lib), Ok(w)) => {
                assert!(w.env.contains(&("LD_PRELOAD".into(), lib.display().to_string())));
                assert!(w.env.contains(&("FAKETIME".into(), "+0 x1.001".into())));
            }
            (None, Err(LaunchError::NoLibfaketime { looked_in })) => assert!(looked_in.contains("libfaketime.so.1")),
            (lib, w) => panic!("library {lib:?} but wrapper {w:?}"),
        }
    }

    #[test]
    fn the_member_record_has_the_specs_addresses() {
        let m = spec().member();
        assert_eq!(
            (m.id, m.raft_addr.as_str(), m.client_addr.as_str()),
            (2, "127.0.0.1:2", "127.0.0.1:1")
        );
    }
}
