//! `driftlock`: the server (`serve`, `dev`), cluster administration
//! (`cluster …`) and the user commands (`lock`, `elect`, `kv`, `status`,
//! `watch`).

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use driftlock_cli::UserCommand;
use driftlock_node::config::ServeArgs;
use driftlock_node::dev::DevArgs;

/// jemalloc instead of the system allocator: under the leader's request
/// traffic glibc's heap fragmented (docs/design.md "Bounded memory outside
/// the state").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// driftlock: a replicated lock, lease and leader-election service.
#[derive(Parser, Debug)]
#[command(name = "driftlock", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node.
    Serve(Box<ServeArgs>),
    /// Run a local cluster of child nodes on loopback (data under ./data).
    Dev(DevArgs),
    #[command(flatten)]
    User(Box<UserCommand>),
    /// Print a shell completion script, e.g. `driftlock completions bash >
    /// /etc/bash_completion.d/driftlock`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of `driftlock`, or with --dir write one
    /// page per command there (driftlock.1, driftlock-kv.1, …).
    Man {
        /// Directory to write every command's page into; it must exist.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// `driftlock completions SHELL` and `driftlock man`: generated from the
/// same clap definitions the binary parses, so they never drift from it.
fn generated(command: &Cmd) -> Option<ExitCode> {
    let mut cli = Cli::command();
    match command {
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "driftlock", &mut std::io::stdout());
        }
        Cmd::Man { dir: Some(dir) } => {
            if let Err(e) = clap_mangen::generate_to(cli, dir) {
                eprintln!("driftlock man: cannot write the pages into {}: {e}", dir.display());
                return Some(ExitCode::from(1));
            }
        }
        Cmd::Man { dir: None } => {
            if let Err(e) = clap_mangen::Man::new(cli).render(&mut std::io::stdout()) {
                eprintln!("driftlock man: {e}");
                return Some(ExitCode::from(1));
            }
        }
        _ => return None,
    }
    Some(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let default = if matches!(cli.command, Cmd::Serve(_)) {
            "info"
        } else {
            "warn"
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    if !matches!(cli.command, Cmd::Serve(_) | Cmd::Dev(_)) {
        // A user command piped into `head` should end quietly when the pipe
        // closes, as other Unix tools do, not panic on a failed print.
        // SAFETY: restoring the default disposition of SIGPIPE before any
        // other thread exists has no preconditions.
        #[allow(unsafe_code)]
        let _ = unsafe {
            nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
        };
    }
    if let Some(code) = generated(&cli.command) {
        return code;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("driftlock: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Cmd::Serve(args) => match args.resolve() {
                Ok(config) => match driftlock_node::app::run(config, args.run_options()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("driftlock serve: {e}");
                        ExitCode::from(1)
                    }
                },
                Err(e) => {
                    eprintln!("driftlock serve: {e}");
                    ExitCode::from(2)
                }
            },
            Cmd::Dev(args) => match driftlock_node::dev::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("driftlock dev: {e}");
                    ExitCode::from(1)
                }
            },
            Cmd::User(cmd) => driftlock_cli::run(*cmd).await,
            // Answered before the runtime started.
            Cmd::Completions { .. } | Cmd::Man { .. } => ExitCode::SUCCESS,
        }
    })
}
