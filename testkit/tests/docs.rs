//! The documentation stays true to the tree: every repository path a
//! document names in backticks exists, and nothing points at a design file
//! outside the repository.

// A test fails by panicking; unwrap and expect say where and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Top-level directories of the repository: a backticked token starting
/// with one of these and a `/` is a path the reader is meant to open.
const TOP_LEVEL: &[&str] = &[
    ".ci",
    "benches",
    "cli",
    "client",
    "docs",
    "jepsen",
    "launcher",
    "node",
    "proto",
    "raft-store",
    "sensors",
    "state-machine",
    "testkit",
];

/// Paths that exist only at run time (created by a run, ignored by git).
const RUNTIME_PATHS: &[&str] = &["jepsen/store"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the repository root")
        .to_path_buf()
}

fn documents(root: &Path) -> Vec<PathBuf> {
    let mut docs = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs.sort();
    docs
}

/// The backticked tokens of `text` that name a repository path.
fn named_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        let token = after[..end].trim_end_matches('/');
        rest = &after[end + 1..];
        let path_like = token.contains('/')
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'));
        let first = token.split('/').next().unwrap_or("");
        if path_like && TOP_LEVEL.contains(&first) && !RUNTIME_PATHS.iter().any(|p| token.starts_with(p)) {
            out.push(token.to_owned());
        }
    }
    out
}

#[test]
fn every_path_a_document_names_exists() {
    let root = repo_root();
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in documents(&root) {
        let text = std::fs::read_to_string(&doc).expect("read document");
        for path in named_paths(&text) {
            checked += 1;
            if !root.join(&path).exists() {
                missing.push(format!("{}: `{path}`", doc.display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} paths found: is the scan broken?");
    assert!(
        missing.is_empty(),
        "documents name paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_architecture_walk_names_the_files_of_the_request_path() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("docs/architecture.md")).expect("docs/architecture.md");
    let named = named_paths(&text);
    for must in [
        "client/src/lock.rs",
        "client/src/transport.rs",
        "proto/src/service.rs",
        "node/src/server.rs",
        "raft-store/src/log_store.rs",
        "raft-store/src/state_machine.rs",
        "state-machine/src/apply.rs",
        "state-machine/src/locks.rs",
    ] {
        assert!(
            named.iter().any(|p| p == must),
            "docs/architecture.md does not name {must}"
        );
    }
}

#[test]
fn nothing_points_at_a_design_file_outside_the_repository() {
    let root = repo_root();
    let mut offenders = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !matches!(name, "target" | ".git" | "data" | "store") {
                    stack.push(path);
                }
                continue;
            }
            let text_file = ["rs", "md", "toml", "sh"]
                .iter()
                .any(|e| path.extension().is_some_and(|x| x == *e))
                || name == "run";
            if !text_file {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // Spelled in two halves so that this file does not match itself.
            if text.contains(concat!("DESIGN", ".md")) {
                offenders.push(path.display().to_string());
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "files still refer to an outside design file: {offenders:?}"
    );
}

#[test]
fn the_scan_recognises_paths_and_ignores_the_rest() {
    let text = "see `proto/src/limits.rs`, `docs/`, `jepsen/store/1/`, `cargo test`, `a/b`, `node/src/*.rs`";
    assert_eq!(named_paths(text), vec!["proto/src/limits.rs"]);
}
