//! What can go wrong starting and driving node processes.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use driftlock_proto::RpcError;
use nix::sys::signal::Signal;

/// A failure of the launcher; each names the node (by Raft id) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A file or directory the node needs could not be created or opened.
    #[error("cannot {action} {path}: {source}")]
    File {
        /// What was attempted ("create directory", "open log file").
        action: &'static str,
        /// The node's data directory, its log file or the log's directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The process could not be started (the program or wrapper is missing
    /// or not executable).
    #[error("cannot start node {id} ({command}): {source}")]
    Spawn {
        /// Raft id of the node.
        id: u64,
        /// The command line that failed, for the message.
        command: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The cluster's certificates could not be made or read.
    #[error("certificates in {dir}: {message}")]
    Certificates {
        /// The certificate directory.
        dir: PathBuf,
        /// What went wrong, naming the file.
        message: String,
    },
    /// Asked to start a node whose process still runs.
    #[error("node {id} is already running (pid {pid})")]
    AlreadyRunning {
        /// Raft id of the node.
        id: u64,
        /// Its process id.
        pid: u32,
    },
    /// The operation needs a running process and the node has none.
    #[error("node {id} is not running")]
    NotRunning {
        /// Raft id of the node.
        id: u64,
    },
    /// A signal could not be delivered.
    #[error("cannot send {signal} to node {id} (pid {pid}): {source}")]
    Signal {
        /// Raft id of the node.
        id: u64,
        /// Its process id.
        pid: u32,
        /// The signal sent: SIGKILL, SIGTERM, SIGSTOP, SIGCONT, or one given to
        /// [`NodeProcess::signal`](crate::NodeProcess::signal).
        signal: Signal,
        /// What the OS said.
        source: nix::Error,
    },
    /// Reaping the process failed.
    #[error("cannot wait for node {id}: {source}")]
    Wait {
        /// Raft id of the node.
        id: u64,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The process exited while it was expected to serve.
    #[error("node {id} exited ({status}); end of {log}:\n{tail}")]
    Exited {
        /// Raft id of the node.
        id: u64,
        /// How it ended.
        status: ExitStatus,
        /// Its log file ([`NodeSpec::log_file`](crate::NodeSpec::log_file)),
        /// which holds the rest of its output.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// The node did not answer a status call in time.
    #[error("node {id} at {addr} did not answer within {timeout:?} (last error: {last_error}); end of {log}:\n{tail}")]
    NotUp {
        /// Raft id of the node.
        id: u64,
        /// The client address the status calls went to.
        addr: String,
        /// How long it was given.
        timeout: Duration,
        /// The last status call's error.
        last_error: String,
        /// Its log file ([`NodeSpec::log_file`](crate::NodeSpec::log_file)),
        /// which holds the rest of its output.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A status call failed.
    #[error("status of node {id} at {addr}: {source}")]
    Status {
        /// Raft id of the node.
        id: u64,
        /// The client address the status call went to.
        addr: String,
        /// The call's error.
        source: RpcError,
    },
    /// The `Init` request of a new cluster failed.
    #[error("cluster init through node {id} at {addr} failed: {source}")]
    Init {
        /// Raft id of the node asked.
        id: u64,
        /// The client address the `Init` request went to.
        addr: String,
        /// The call's error.
        source: RpcError,
    },
    /// A cluster operation was asked of a cluster without nodes.
    #[error("the cluster has no nodes")]
    Empty,
    /// No running node reported itself leader in time.
    #[error("no leader{what} within {timeout:?}; end of the node logs:\n{tails}")]
    NoLeader {
        /// What was also required of the leader, as a phrase (may be empty).
        what: &'static str,
        /// How long it was given.
        timeout: Duration,
        /// The last lines of every node's log.
        tails: String,
    },
    /// libfaketime's preload library is not installed.
    #[error("libfaketime is not installed (apt-get install faketime); looked for {looked_in}")]
    NoLibfaketime {
        /// The paths tried, comma-separated.
        looked_in: String,
    },
}
