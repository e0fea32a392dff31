//! `driftlock cluster …`: initialize a cluster, change its membership,
//! move Raft leadership, read and change the replicated configuration
//! (`cluster config`, in `config.rs`).

use std::time::Duration;

use clap::Subcommand;
use driftlock_client::Client;
use driftlock_proto::{AdminRequest, MemberAddr, Role};

use crate::{connect, CmdResult, Endpoints};

/// The `driftlock cluster` subcommands: initialization, membership changes,
/// leader transfer and the replicated configuration, each an admin request
/// to the cluster (reading the configuration excepted).
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Initialize a new cluster. Run once, against one of the members.
    Init {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Members as ID=RAFT_ADDR/CLIENT_ADDR, comma-separated, e.g.
        /// 1=127.0.0.1:7401/127.0.0.1:7301.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Add a node as a non-voting learner (waits until it caught up).
    AddLearner {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// New node: ID=RAFT_ADDR/CLIENT_ADDR.
        member: String,
    },
    /// Make a learner a voter (joint consensus).
    Promote {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Id of the learner to make a voter (as given to add-learner).
        id: u64,
    },
    /// Remove a node from the voters and the cluster.
    Remove {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Id of the node to remove from the voters and the cluster.
        id: u64,
    },
    /// Hand Raft leadership to a voter; returns once it leads. Refused,
    /// with nothing changed, while the voter has not caught up with the
    /// leader's log.
    TransferLeader {
        /// The cluster to talk to.
        #[command(flatten)]
        endpoints: Endpoints,
        /// Id of the voter that should lead.
        id: u64,
    },
    /// Read and change the replicated configuration (lease weights and
    /// bounds, limits, time bounds): get, set KEY=VALUE…, diff FILE.
    #[command(subcommand)]
    Config(crate::config::ConfigCmd),
}

/// Parses a member as `ID=RAFT_ADDR/CLIENT_ADDR`.
pub(crate) fn parse_member(spec: &str) -> Result<MemberAddr, String> {
    let bad = || format!("'{spec}' is not ID=RAFT_ADDR/CLIENT_ADDR");
    let (id, addrs) = spec.split_once('=').ok_or_else(bad)?;
    let (raft_addr, client_addr) = addrs.split_once('/').ok_or_else(bad)?;
    Ok(MemberAddr {
        id: id.trim().parse().map_err(|_| bad())?,
        raft_addr: raft_addr.into(),
        client_addr: client_addr.into(),
    })
}

/// Runs one `driftlock cluster` subcommand and prints what changed; `init`
/// gives up after 30 s.
pub(crate) async fn cluster(cmd: ClusterCmd) -> CmdResult {
    let timeout = Duration::from_secs(30);
    match cmd {
        ClusterCmd::Init { endpoints, members } => {
            let members = members.iter().map(|m| parse_member(m)).collect::<Result<Vec<_>, _>>()?;
            let first = endpoints.endpoints.first().ok_or("no endpoint given")?;
            driftlock_proto::admin(first, AdminRequest::Init { members }, timeout, &endpoints.security()?)
                .await
                .map_err(|e| e.to_string())?;
            println!("cluster initialized");
        }
        ClusterCmd::AddLearner { endpoints, member } => {
            let member = parse_member(&member)?;
            let id = member.id;
            connect(&endpoints)
                .await?
                .admin(AdminRequest::AddLearner { member })
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} added as learner and caught up");
        }
        ClusterCmd::Promote { endpoints, id } => {
            let client = connect(&endpoints).await?;
            let mut voters = current_voters(&client).await?;
            if !voters.contains(&id) {
                voters.push(id);
            }
            client
                .admin(AdminRequest::ChangeVoters { voters })
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} is a voter");
        }
        ClusterCmd::Remove { endpoints, id } => {
            let client = connect(&endpoints).await?;
            let voters: Vec<u64> = current_voters(&client)
                .await?
                .into_iter()
                .filter(|v| *v != id)
                .collect();
            client
                .admin(AdminRequest::ChangeVoters { voters })
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} removed");
        }
        ClusterCmd::TransferLeader { endpoints, id } => {
            connect(&endpoints)
                .await?
                .admin(AdminRequest::TransferLeader { to: id })
                .await
                .map_err(|e| e.to_string())?;
            println!("node {id} leads");
        }
        ClusterCmd::Config(cmd) => crate::config::config(cmd).await?,
    }
    Ok(())
}

async fn current_voters(client: &Client) -> Result<Vec<u64>, String> {
    for ep in client.endpoints() {
        if let Ok(s) = client.status_of(&ep).await {
            if s.role == Role::Leader {
                return Ok(s.voters.into_iter().map(|(id, _)| id).collect());
            }
        }
    }
    Err("no leader found among the endpoints".into())
}
