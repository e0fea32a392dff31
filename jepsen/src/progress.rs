//! What a run prints while it runs: on a terminal one status line, redrawn
//! in place (elapsed / remaining, ops so far, the fault in force); in a log
//! (stdout not a terminal, or `CI=true`) nothing but one line per fault,
//! written when the fault ends.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whether to draw the live status line: stdout is a terminal and `CI` is
/// not `true`.
pub fn live_default() -> bool {
    std::io::stdout().is_terminal() && std::env::var("CI").map_or(true, |v| v != "true")
}

/// The run's status display; shared by the run loop and the nemesis.
#[derive(Debug)]
pub struct Progress {
    /// Draw the in-place status line (a terminal); otherwise only lines.
    live: bool,
    /// Length of the faulty phase.
    total: Duration,
    started: Instant,
    /// The fault in force, as the nemesis described it.
    fault: Mutex<Option<String>>,
    /// Whether a status line is on screen (to be cleared before a line).
    drawn: Mutex<bool>,
}

impl Progress {
    /// A display for a faulty phase of `total`, starting now.
    pub fn new(total: Duration, live: bool) -> Progress {
        Progress {
            live,
            total,
            started: Instant::now(),
            fault: Mutex::new(None),
            drawn: Mutex::new(false),
        }
    }

    /// Whether the status line is drawn.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Sets (or clears) the fault in force.
    pub fn set_fault(&self, what: Option<String>) {
        if let Ok(mut f) = self.fault.lock() {
            *f = what;
        }
    }

    /// Prints a permanent line (above the status line when live).
    pub fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        if let Ok(mut drawn) = self.drawn.lock() {
            if *drawn {
                let _ = write!(out, "\r\x1b[2K");
                *drawn = false;
            }
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// The status text: elapsed / total, remaining, ops, fault.
    pub fn status(&self, ops: u64) -> String {
        let elapsed = self.started.elapsed();
        let remaining = self.total.saturating_sub(elapsed);
        let fault = self
            .fault
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "none".to_owned());
        format!(
            "[{:>4}/{} s, {:>4} s left] {ops} ops | fault: {fault}",
            elapsed.as_secs(),
            self.total.as_secs(),
            remaining.as_secs()
        )
    }

    /// Redraws the status line with `ops` completed operations (live only).
    pub fn tick(&self, ops: u64) {
        if !self.live {
            return;
        }
        let mut text = self.status(ops);
        // One terminal line: never wrap, or `\r` no longer redraws it.
        if text.chars().count() > 150 {
            text = text.chars().take(147).collect::<String>() + "...";
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{text}");
        let _ = out.flush();
        if let Ok(mut drawn) = self.drawn.lock() {
            *drawn = true;
        }
    }

    /// Clears the status line (end of the faulty phase).
    pub fn finish(&self) {
        if let Ok(mut drawn) = self.drawn.lock() {
            if *drawn {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r\x1b[2K");
                let _ = out.flush();
                *drawn = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_fault_and_the_ops() {
        let p = Progress::new(Duration::from_secs(60), false);
        assert!(p.status(12).contains("12 ops | fault: none"), "{}", p.status(12));
        p.set_fault(Some("kill -9 n2".into()));
        let s = p.status(40);
        assert!(s.contains("/60 s"), "{s}");
        assert!(s.ends_with("fault: kill -9 n2"), "{s}");
    }
}
