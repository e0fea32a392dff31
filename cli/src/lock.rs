//! `driftlock lock NAME -- CMD…`: run a command while holding a lock, with
//! its fencing token in the environment and a relay through which the
//! command makes fenced writes in the lock's session (see [`crate::fence`]).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use driftlock_client::LockOptions;
use driftlock_proto::LockMode;

use serde_json::json;

use crate::fence::{Relay, LOCK_SOCKET_ENV};
use crate::output::{self, OutputArg};
use crate::{connect, Endpoints};

/// `driftlock lock NAME -- CMD…` (its `--help`, with CMD's environment, is
/// the `Lock` command's documentation in the crate root).
#[derive(Args, Debug)]
pub struct LockArgs {
    /// The cluster to talk to.
    #[command(flatten)]
    endpoints: Endpoints,
    /// Lock name, e.g. jobs/nightly: processes that must not overlap use the
    /// same one.
    name: String,
    /// Session TTL (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// How long to wait for the lock.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Take the lock in shared mode.
    #[arg(long)]
    shared: bool,
    /// Format of the grant line on stderr (stdout is the command's own).
    #[command(flatten)]
    out: OutputArg,
    /// The command to run while holding the lock, with the DRIFTLOCK_*
    /// variables above in its environment.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `driftlock lock NAME -- CMD…`: exit code is the command's.
pub(crate) async fn lock(args: LockArgs) -> ExitCode {
    match lock_inner(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("driftlock lock: {e}");
            ExitCode::from(1)
        }
    }
}

async fn lock_inner(args: LockArgs) -> Result<ExitCode, String> {
    // The fenced-write relay, bound before the lock is taken (a failure
    // here takes no lock) and before the command starts (so it can write
    // at once); socket and directory are removed when `relay` drops, on
    // every way out.
    let relay = Relay::bind()?;
    let client = connect(&args.endpoints).await?;
    let session = client.open_session(args.ttl).await.map_err(|e| e.to_string())?;
    let mode = if args.shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let guard = session
        .lock_with(&args.name, LockOptions { mode, wait: args.wait })
        .await
        .map_err(|e| format!("cannot take lock '{}': {e}", args.name))?;
    let token = guard.fencing_token();
    if args.out.json() {
        output::eprint_line(&json!({
            "lock": args.name,
            "fencing_token": token,
            "session": session.id(),
            "mode": if args.shared { "shared" } else { "exclusive" },
        }));
    } else {
        eprintln!(
            "driftlock: holding '{}' with fencing token {token} (session {})",
            args.name,
            session.id()
        );
    }
    let (program, rest) = args.command.split_first().ok_or("no command given")?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env("DRIFTLOCK_FENCING_TOKEN", token.to_string())
        .env("DRIFTLOCK_LOCK", &args.name)
        .env("DRIFTLOCK_SESSION", session.id().to_string())
        .env(LOCK_SOCKET_ENV, relay.path())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run '{program}': {e}"))?;
    let outcome = tokio::select! {
        status = child.wait() => Ok(status),
        // Never returns: it serves until the command ends.
        () = relay.serve(session.clone()) => Err("the fenced-write relay stopped"),
        _ = session.lost() => Err("the lock's session expired: the command was killed"),
        _ = tokio::signal::ctrl_c() => Err("interrupted: the command was killed"),
    };
    // No fenced write is taken after the command ended or was killed.
    drop(relay);
    match outcome {
        Ok(status) => {
            let _ = guard.release().await;
            let _ = session.close().await;
            let status = status.map_err(|e| format!("waiting for the command: {e}"))?;
            // Like a shell: the command's own code, or 128 + the signal
            // that ended it.
            let code = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(c), _) => u8::try_from(c).unwrap_or(1),
                (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
                (None, None) => 1,
            };
            Ok(ExitCode::from(code))
        }
        Err(why) => {
            // The lease can no longer be trusted: stop the work at once.
            let _ = child.kill().await;
            let _ = guard.release().await;
            let _ = session.close().await;
            eprintln!("driftlock lock: {why}");
            Ok(ExitCode::from(if why.starts_with("interrupted") { 130 } else { 1 }))
        }
    }
}
