//! A seed campaign: many runs in a row, each on a fresh cluster, summed up
//! as one table (seed, faults by kind, ops, verdict) and written as JSON
//! with the git revision it ran on. The runs themselves are
//! [`crate::run::run`]; this file holds the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::run::{RunOptions, RunOutcome};

/// One run of a campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CampaignRow {
    /// Its seed.
    pub seed: u64,
    /// Its run directory (kept).
    pub run_dir: String,
    /// Faults applied, per nemesis name.
    pub faults: BTreeMap<String, u64>,
    /// Operations completed (ok, fail or info; nemesis markers excluded).
    pub ops: u64,
    /// Whether the run was valid.
    pub valid: bool,
    /// `valid`, or `INVALID: ` and the first reason.
    pub verdict: String,
    /// Every reason the run is invalid.
    pub invalid: Vec<String>,
}

impl CampaignRow {
    /// The row of a finished run.
    pub fn of(seed: u64, outcome: &RunOutcome) -> CampaignRow {
        let mut faults = BTreeMap::new();
        for f in &outcome.facts.faults {
            *faults.entry(f.nemesis.name().to_owned()).or_default() += 1;
        }
        let invalid: Vec<String> = outcome.invalid.iter().map(ToString::to_string).collect();
        CampaignRow {
            seed,
            run_dir: outcome.run_dir.display().to_string(),
            faults,
            ops: outcome.by_type.values().map(|c| c.total()).sum(),
            valid: invalid.is_empty(),
            verdict: match invalid.first() {
                None => "valid".to_owned(),
                Some(first) => format!("INVALID: {first}"),
            },
            invalid,
        }
    }
}

/// A campaign's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Campaign {
    /// `git rev-parse HEAD` of the tree it ran (`-dirty` if modified).
    pub revision: String,
    /// Nodes per run.
    pub nodes: usize,
    /// Faulty phase per run, s.
    pub time_s: u64,
    /// Requested nemeses.
    pub nemeses: Vec<String>,
    /// Requested workloads.
    pub workloads: Vec<String>,
    /// Runs asked for.
    pub runs_requested: u64,
    /// The runs done, in order.
    pub rows: Vec<CampaignRow>,
}

impl Campaign {
    /// An empty campaign of `runs` runs like `opts`.
    pub fn new(revision: String, opts: &RunOptions, runs: u64) -> Campaign {
        Campaign {
            revision,
            nodes: opts.nodes,
            time_s: opts.duration.as_secs(),
            nemeses: opts.nemeses.iter().map(|n| n.name().to_owned()).collect(),
            workloads: opts.workloads.names().iter().map(|w| (*w).to_owned()).collect(),
            runs_requested: runs,
            rows: Vec::new(),
        }
    }

    /// Whether every run done was valid.
    pub fn all_valid(&self) -> bool {
        self.rows.iter().all(|r| r.valid)
    }

    /// Faults per nemesis over all runs.
    pub fn faults_total(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in &self.rows {
            for (k, v) in &r.faults {
                *out.entry(k.clone()).or_default() += v;
            }
        }
        out
    }

    /// The table as text (Markdown, so it can go into docs/jepsen.md as
    /// is), with a totals line.
    pub fn table(&self) -> String {
        let mut s = format!(
            "campaign at {}: {} nodes, {} s per run, nemeses {}, workloads {}\n\n",
            self.revision,
            self.nodes,
            self.time_s,
            self.nemeses.join(","),
            self.workloads.join(",")
        );
        s.push_str("| seed | faults | ops | verdict |\n|---:|---|---:|---|\n");
        for r in &self.rows {
            let faults: Vec<String> = r.faults.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            let _ = writeln!(s, "| {} | {} | {} | {} |", r.seed, faults.join(" "), r.ops, r.verdict);
        }
        let total_faults = self.faults_total();
        let by_kind: Vec<String> = total_faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "\ntotal: {} of {} runs, {} valid, {} s of faults, {} ops, {} faults ({})",
            self.rows.len(),
            self.runs_requested,
            self.rows.iter().filter(|r| r.valid).count(),
            self.rows.len() as u64 * self.time_s,
            self.rows.iter().map(|r| r.ops).sum::<u64>(),
            total_faults.values().sum::<u64>(),
            by_kind.join(", ")
        );
        s
    }

    /// Writes the campaign as JSON to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seed: u64, valid: bool) -> CampaignRow {
        CampaignRow {
            seed,
            run_dir: format!("/store/{seed}"),
            faults: BTreeMap::from([("kill".to_owned(), 2), ("pause".to_owned(), 1)]),
            ops: 1000,
            valid,
            verdict: if valid { "valid".into() } else { "INVALID: x".into() },
            invalid: if valid { vec![] } else { vec!["x".into()] },
        }
    }

    #[test]
    fn the_table_sums_runs_ops_and_faults_by_kind() {
        let mut c = Campaign {
            revision: "abc".into(),
            nodes: 5,
            time_s: 300,
            nemeses: vec!["kill".into(), "pause".into()],
            workloads: vec!["register".into()],
            runs_requested: 3,
            rows: vec![row(7, true), row(8, false)],
        };
        assert!(!c.all_valid());
        let t = c.table();
        assert!(t.contains("| 7 | kill×2 pause×1 | 1000 | valid |"), "{t}");
        assert!(t.contains("| 8 | kill×2 pause×1 | 1000 | INVALID: x |"), "{t}");
        assert!(
            t.contains("total: 2 of 3 runs, 1 valid, 600 s of faults, 2000 ops, 6 faults (kill 4, pause 2)"),
            "{t}"
        );
        c.rows.pop();
        assert!(c.all_valid());
    }
}
