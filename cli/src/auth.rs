//! `driftlock auth show|set|grant|revoke`: the cluster's replicated access
//! policy (docs/security.md, "Policy model"), administrators only. Changes
//! are made against the revision just read, so two administrators editing
//! at once cannot overwrite each other unseen: the second is refused and
//! runs again on the new policy.
//!
//! The file form (`show` prints it, `set` reads it) is TOML:
//!
//! ```toml
//! admins = ["ops"]
//!
//! [[grant]]
//! principal = "alice"     # a certificate name, node-<id>, or "*" (every client)
//! prefix = "billing/"     # names starting with this; "" = every name
//! rights = "lock,read"    # lock, read, write, campaign, or all
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Subcommand;
use driftlock_client::Client;
use driftlock_proto::{AccessPolicy, AdminRequest, Consistency, Grant, PolicyView, Query, QueryResult, Rights};
use serde::{Deserialize, Serialize};

use crate::{connect, CmdResult, Endpoints};

/// The `driftlock auth` subcommands. Each needs an administrator's
/// certificate and prints the policy in force afterwards.
#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Print the access policy in force, in the form `auth set` reads.
    Show {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Replace the whole policy with the one in FILE (TOML, as `auth show`
    /// prints it).
    Set {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// The policy file.
        file: PathBuf,
    },
    /// Give PRINCIPAL RIGHTS on every name starting with PREFIX (added to
    /// any rights it already has there).
    Grant {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// A client certificate's name, node-<id>, or '*' for every
        /// authenticated client.
        principal: String,
        /// Names (locks, keys, elections) starting with this; '' = every name.
        prefix: String,
        /// Comma-separated: lock, read, write, campaign, or all.
        rights: String,
    },
    /// Remove the grant of PRINCIPAL on PREFIX (exactly that pair).
    Revoke {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// The grant's principal, as `auth show` prints it.
        principal: String,
        /// The grant's prefix, as `auth show` prints it.
        prefix: String,
    },
}

/// A policy as written in a file: rights as a comma-separated list.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// Client names that are administrators (besides admin-role
    /// certificates, which always are).
    #[serde(default)]
    admins: BTreeSet<String>,
    /// The grants, in order.
    #[serde(default, rename = "grant")]
    grants: Vec<GrantLine>,
}

/// One grant in a policy file.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantLine {
    principal: String,
    prefix: String,
    rights: String,
}

impl PolicyFile {
    fn of(policy: &AccessPolicy) -> PolicyFile {
        PolicyFile {
            admins: policy.admins.clone(),
            grants: policy
                .grants
                .iter()
                .map(|g| GrantLine {
                    principal: g.principal.clone(),
                    prefix: g.prefix.clone(),
                    rights: g.rights.to_string(),
                })
                .collect(),
        }
    }

    /// The policy, checked as the cluster will check it.
    fn into_policy(self) -> Result<AccessPolicy, String> {
        let mut grants = Vec::with_capacity(self.grants.len());
        for (i, g) in self.grants.into_iter().enumerate() {
            let rights = Rights::parse(&g.rights).map_err(|e| format!("grant {}: {e}", i + 1))?;
            grants.push(Grant {
                principal: g.principal,
                prefix: g.prefix,
                rights,
            });
        }
        let policy = AccessPolicy {
            admins: self.admins,
            grants,
        };
        policy.validate()?;
        Ok(policy)
    }
}

/// The policy as `auth show` prints it: the revision as a comment, then
/// the file form.
fn render(view: &PolicyView) -> Result<String, String> {
    let body = toml::to_string(&PolicyFile::of(&view.policy)).map_err(|e| format!("cannot print the policy: {e}"))?;
    let origin = if view.revision == 0 {
        "the default policy of a new cluster".to_string()
    } else {
        format!("set by log entry {}", view.revision)
    };
    let note = if view.policy.grants.is_empty() {
        "\n# no grants: only administrators may do anything\n"
    } else {
        ""
    };
    Ok(format!(
        "# access policy in force: revision {}, {origin}\n# certificates issued with --admin are administrators too\n{body}{note}",
        view.revision
    ))
}

/// Reads a policy file.
fn read_file(path: &std::path::Path) -> Result<AccessPolicy, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: PolicyFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    file.into_policy().map_err(|e| format!("{}: {e}", path.display()))
}

async fn current(client: &Client) -> Result<PolicyView, String> {
    let reply = client
        .read(Query::Policy, Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?;
    match reply.result {
        QueryResult::Policy(view) => Ok(view),
        other => Err(format!("unexpected answer to a policy read: {other:?}")),
    }
}

async fn put(client: &Client, policy: AccessPolicy, expected_revision: Option<u64>) -> Result<(), String> {
    client
        .admin(AdminRequest::SetPolicy {
            policy,
            expected_revision,
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs one `driftlock auth` subcommand and prints the policy in force.
pub(crate) async fn auth(cmd: AuthCmd) -> CmdResult {
    let endpoints = match &cmd {
        AuthCmd::Show { endpoints }
        | AuthCmd::Set { endpoints, .. }
        | AuthCmd::Grant { endpoints, .. }
        | AuthCmd::Revoke { endpoints, .. } => endpoints.clone(),
    };
    // A bad file or right is refused before connecting.
    let change = match cmd {
        AuthCmd::Show { .. } => None,
        AuthCmd::Set { file, .. } => Some(Change::Replace(read_file(&file)?)),
        AuthCmd::Grant {
            principal,
            prefix,
            rights,
            ..
        } => Some(Change::Grant(principal, prefix, Rights::parse(&rights)?)),
        AuthCmd::Revoke { principal, prefix, .. } => Some(Change::Revoke(principal, prefix)),
    };
    let client = connect(&endpoints).await?;
    if let Some(change) = change {
        let before = current(&client).await?;
        let policy = change.apply(before.policy)?;
        put(&client, policy, Some(before.revision)).await?;
    }
    print!("{}", render(&current(&client).await?)?);
    Ok(())
}

/// What `set`, `grant` or `revoke` does to the policy read.
enum Change {
    Replace(AccessPolicy),
    Grant(String, String, Rights),
    Revoke(String, String),
}

impl Change {
    fn apply(self, policy: AccessPolicy) -> Result<AccessPolicy, String> {
        let policy = match self {
            Change::Replace(new) => new,
            Change::Grant(principal, prefix, rights) => policy.with_grant(&principal, &prefix, rights),
            Change::Revoke(principal, prefix) => match policy.without_grant(&principal, &prefix) {
                (p, true) => p,
                (_, false) => return Err(format!("no grant for {principal} on '{prefix}' to revoke")),
            },
        };
        policy.validate()?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_policy_reads_back_as_the_same_policy() {
        let policy = AccessPolicy::default()
            .with_grant("alice", "billing/", Rights::parse("lock,read").unwrap())
            .with_grant("node-3", "", Rights::parse("read").unwrap());
        let policy = AccessPolicy {
            admins: ["ops".to_string()].into(),
            ..policy
        };
        let text = render(&PolicyView {
            policy: policy.clone(),
            revision: 12,
        })
        .unwrap();
        assert!(text.starts_with("# access policy in force: revision 12, set by log entry 12"));
        assert!(text.contains("rights = \"lock,read\""), "{text}");
        let file: PolicyFile = toml::from_str(&text).unwrap();
        assert_eq!(file.into_policy().unwrap(), policy);
    }

    #[test]
    fn a_bad_file_is_refused_naming_what_is_wrong() {
        let parse = |text: &str| {
            toml::from_str::<PolicyFile>(text)
                .map_err(|e| e.to_string())
                .and_then(PolicyFile::into_policy)
        };
        let e = parse("[[grant]]\nprincipal = \"a\"\nprefix = \"\"\nrights = \"fly\"\n").unwrap_err();
        assert!(e.contains("grant 1: unknown right 'fly'"), "{e}");
        let e = parse("admins = [\"*\"]\n").unwrap_err();
        assert!(e.contains("'*' cannot be an admin"), "{e}");
        let e = parse("[[grant]]\nprincipal = \"a\"\nprefix = \"\"\nrights = \"all\"\nextra = 1\n").unwrap_err();
        assert!(e.contains("extra"), "{e}");
        // An empty file is the closed policy: only administrators.
        assert_eq!(parse("").unwrap(), AccessPolicy::closed());
    }

    #[test]
    fn grant_merges_and_revoke_needs_an_existing_grant() {
        let p = Change::Grant("bob".into(), "jobs/".into(), Rights::parse("lock").unwrap())
            .apply(AccessPolicy::closed())
            .unwrap();
        assert_eq!(p.grants.len(), 1);
        let p = Change::Revoke("bob".into(), "jobs/".into()).apply(p).unwrap();
        assert!(p.grants.is_empty());
        let e = Change::Revoke("bob".into(), "jobs/".into()).apply(p).unwrap_err();
        assert_eq!(e, "no grant for bob on 'jobs/' to revoke");
    }
}
