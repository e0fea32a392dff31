//! `driftlock kv get|put|cas|del|list`: the KV store without a session.

use clap::Subcommand;

use crate::{connect, CmdResult, Endpoints};

/// `driftlock kv …`.
#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Print a key's value.
    Get {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
    },
    /// Set a key.
    Put {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Set a key if its revision is EXPECTED (0: only if absent).
    Cas {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
        /// Expected modification revision.
        expected: u64,
        /// New value.
        value: String,
    },
    /// Delete a key.
    Del {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Key.
        key: String,
    },
    /// List keys under a prefix.
    List {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// `driftlock kv …`.
pub(crate) async fn kv(cmd: KvCmd) -> CmdResult {
    match cmd {
        KvCmd::Get { endpoints, key } => {
            let client = connect(&endpoints).await?;
            match client.kv_get(&key).await.map_err(|e| e.to_string())? {
                Some(v) => println!("{}", String::from_utf8_lossy(&v.value)),
                None => return Err(format!("key '{key}' not found")),
            }
        }
        KvCmd::Put { endpoints, key, value } => {
            let rev = connect(&endpoints)
                .await?
                .kv_put(&key, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            println!("revision {rev}");
        }
        KvCmd::Cas {
            endpoints,
            key,
            expected,
            value,
        } => {
            let client = connect(&endpoints).await?;
            let rev = client
                .kv_cas(&key, expected, value.into_bytes())
                .await
                .map_err(|e| e.to_string())?;
            println!("revision {rev}");
        }
        KvCmd::Del { endpoints, key } => {
            connect(&endpoints)
                .await?
                .kv_delete(&key)
                .await
                .map_err(|e| e.to_string())?;
            println!("deleted");
        }
        KvCmd::List { endpoints, prefix } => {
            let entries = connect(&endpoints)
                .await?
                .kv_range(&prefix, 10_000)
                .await
                .map_err(|e| e.to_string())?;
            for (k, v) in entries {
                println!(
                    "{k}\t{}\t(revision {})",
                    String::from_utf8_lossy(&v.value),
                    v.mod_revision
                );
            }
        }
    }
    Ok(())
}
