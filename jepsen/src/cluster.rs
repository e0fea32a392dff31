//! The cluster under test: real `driftlock serve` processes.
//!
//! With root and a working `ip netns`, every node runs in its own network
//! namespace (`dljN`) with its own address `10.77.0.(10+N)` on a bridge
//! (`dljbr0`, the harness at `10.77.0.1`; other names and a other /24 with
//! `--net K`, see [`set_net_index`]), joined by veth pairs; partitions
//! are iptables rules and delay/loss is `tc netem` inside the namespaces.
//! Without them the nodes listen on `127.0.0.(10+N)` and the namespace-only
//! faults are skipped (the nemesis says why).
//!
//! Every node logs to `<run dir>/n<N>.log` and keeps its data in
//! `<run dir>/n<N>-data`. The processes are started and signalled through
//! `driftlock-launcher`; a node's namespace and libfaketime are the
//! [`Wrapper`] it runs under. Setting up namespaces, partitions and netem
//! stays here: that is the nemesis' business.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use driftlock_client::{Client, ClientConfig};
use driftlock_launcher::{LaunchError, NodeSpec, Wrapper};
use driftlock_proto::tls::TlsFiles;
use driftlock_proto::{AdminRequest, MemberAddr};

pub use driftlock_launcher::libfaketime;

/// Which set of namespace names and addresses this process uses, 0–9
/// (`--net`): set 0 is `dlj*` on 10.77.0.0/24, set k is `dl<k>j*` on
/// 10.(77+k).0.0/24, so runs with different sets can share a host (a long
/// campaign beside the CI's short run).
static NET_INDEX: std::sync::OnceLock<u8> = std::sync::OnceLock::new();

/// Chooses this process's network set (see [`NET_INDEX`]); the first call
/// wins, before any cluster starts.
pub fn set_net_index(k: u8) -> Result<(), String> {
    if k > 9 {
        return Err(format!("--net {k}: the network set is 0 to 9"));
    }
    match NET_INDEX.set(k) {
        Ok(()) => Ok(()),
        Err(_) if NET_INDEX.get() == Some(&k) => Ok(()),
        Err(_) => Err("the network set was already chosen".into()),
    }
}

fn net_index() -> u8 {
    NET_INDEX.get().copied().unwrap_or(0)
}

/// Prefix of namespace and veth names.
fn ns_prefix() -> String {
    match net_index() {
        0 => "dlj".into(),
        k => format!("dl{k}j"),
    }
}

/// Bridge joining the namespaces.
fn bridge() -> String {
    format!("{}br0", ns_prefix())
}

/// The first three octets of the namespaces' /24.
fn subnet() -> String {
    format!("10.{}.0", 77 + u16::from(net_index()))
}

/// The address of node `id` in its namespace.
fn node_ip(id: u64) -> String {
    format!("{}.{}", subnet(), 10 + id)
}
/// Raft port of every node (each has its own address).
const RAFT_PORT: u16 = 7400;
/// Client API port of every node.
const CLIENT_PORT: u16 = 7300;

/// Errors of setting up and driving the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A process could not be started.
    #[error("cannot run {what}: {source}")]
    Spawn {
        /// The program and its arguments, as one string.
        what: String,
        /// Why it could not start (e.g. the program is not installed).
        source: std::io::Error,
    },
    /// A setup command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The program and its arguments, as one string.
        what: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// A client request failed.
    #[error("client: {0}")]
    Client(String),
    /// A file could not be created or a port bound.
    #[error("{path}: {source}")]
    Io {
        /// File or address.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A node process failed (start, signal, readiness, leader).
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

/// Runs a command and fails on a non-zero exit.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<(), ClusterError> {
    let what = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ClusterError::Spawn {
            what: what.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Command {
            what,
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        })
    }
}

/// Whether network namespaces can be used here (root, `ip netns`,
/// `iptables` and `tc` present); the reason if not.
pub fn netns_available() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not running as root".into());
    }
    let probe = format!("{}probe", ns_prefix());
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    run_cmd("ip", &["netns", "add", &probe]).map_err(|e| format!("ip netns does not work: {e}"))?;
    let iptables = run_cmd("ip", &["netns", "exec", &probe, "iptables", "-L", "INPUT", "-n"]);
    let tc = run_cmd("ip", &["netns", "exec", &probe, "tc", "qdisc", "show"]);
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    iptables.map_err(|e| format!("iptables does not work in a namespace: {e}"))?;
    tc.map_err(|e| format!("tc does not work in a namespace: {e}"))?;
    Ok(())
}

/// Whether `tc netem` works here (the kernel needs `sch_netem`); why not.
pub fn netem_available() -> Result<(), String> {
    let probe = format!("{}netem", ns_prefix());
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    run_cmd("ip", &["netns", "add", &probe]).map_err(|e| e.to_string())?;
    let r = run_cmd(
        "ip",
        &[
            "netns", "exec", &probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    );
    let _ = run_cmd("ip", &["netns", "del", &probe]);
    r.map_err(|e| format!("tc netem does not work (no sch_netem in this kernel?): {e}"))
}

/// What the harness knows of a node besides its process.
#[derive(Debug)]
pub struct Node {
    /// Raft id (1-based).
    pub id: u64,
    /// Its IP address (partitions drop by it).
    pub ip: String,
    /// `FAKETIME` spec it runs under from its next start, if any (it takes
    /// precedence over `live_clock`).
    pub faketime: Option<String>,
    /// The clock the harness can change while the node runs (libfaketime
    /// reading its spec from a file), when the run enables `clock-live`.
    pub live_clock: Option<LiveClock>,
    /// The file holding this node's fsync delay, µs, when the run enables
    /// `slow-disk` ([`crate::slowdisk`]).
    pub fsync_delay_file: Option<PathBuf>,
}

/// A node's clock that changes while it runs: libfaketime in the node
/// reads its spec from `path` on every clock call
/// ([`Wrapper::libfaketime_file`]). libfaketime applies a rate `r` from
/// the process start: faked = real + offset + (real − start)·(r − 1), so a
/// rate change alone would step the clock by uptime·Δr; [`set_rate`]
/// compensates in the offset so the clock stays continuous and only its
/// rate changes (the one clock fault driftlock's model admits: a rate
/// within the drift bound, docs/design.md "Time"). [`bump`] steps it.
///
/// [`set_rate`]: LiveClock::set_rate
/// [`bump`]: LiveClock::bump
#[derive(Clone, Debug)]
pub struct LiveClock {
    /// The spec file, under the run directory (`n<id>.faketime`).
    pub path: PathBuf,
    state: std::sync::Arc<std::sync::Mutex<ClockState>>,
}

#[derive(Debug, Clone, Copy)]
struct ClockState {
    offset_s: f64,
    rate: f64,
    /// When the process (and its libfaketime) started.
    since: std::time::Instant,
}

/// The offset that keeps a libfaketime clock continuous when its rate
/// changes from `old_rate` to `new_rate` after `uptime_s` seconds of the
/// process: real + off + u·(old − 1) = real + off' + u·(new − 1).
pub fn continuous_offset_s(offset_s: f64, old_rate: f64, new_rate: f64, uptime_s: f64) -> f64 {
    offset_s + uptime_s * (old_rate - new_rate)
}

/// libfaketime's spec for an offset and a rate: `+0.004000 x1.002`.
pub fn faketime_spec(offset_s: f64, rate: f64) -> String {
    format!("{offset_s:+.6} x{rate}")
}

impl LiveClock {
    fn new(path: PathBuf) -> LiveClock {
        LiveClock {
            path,
            state: std::sync::Arc::new(std::sync::Mutex::new(ClockState {
                offset_s: 0.0,
                rate: 1.0,
                since: std::time::Instant::now(),
            })),
        }
    }

    fn write(&self, st: &ClockState) -> Result<(), ClusterError> {
        // Written aside and renamed: the node never reads half a spec.
        let tmp = self.path.with_extension("tmp");
        let io = |source| ClusterError::Io {
            path: self.path.clone(),
            source,
        };
        std::fs::write(&tmp, faketime_spec(st.offset_s, st.rate)).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// The real clock again, for a process starting now.
    pub fn reset(&self) -> Result<(), ClusterError> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *st = ClockState {
            offset_s: 0.0,
            rate: 1.0,
            since: std::time::Instant::now(),
        };
        self.write(&st)
    }

    /// From now on the clock runs at `rate` (1.0: the real rate), without
    /// a step.
    pub fn set_rate(&self, rate: f64) -> Result<(), ClusterError> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let uptime_s = st.since.elapsed().as_secs_f64();
        st.offset_s = continuous_offset_s(st.offset_s, st.rate, rate, uptime_s);
        st.rate = rate;
        self.write(&st)
    }

    /// Steps every clock of the node by `step_s` seconds (negative: back).
    pub fn bump(&self, step_s: f64) -> Result<(), ClusterError> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.offset_s += step_s;
        self.write(&st)
    }

    /// The current offset (s) and rate.
    pub fn current(&self) -> (f64, f64) {
        let st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (st.offset_s, st.rate)
    }
}

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes (3 or 5 normally).
    pub nodes: usize,
    /// The `driftlock` binary.
    pub binary: PathBuf,
    /// Run directory (logs, data).
    pub run_dir: PathBuf,
    /// Use network namespaces.
    pub netns: bool,
    /// Extra `serve` flags for every node.
    pub extra_args: Vec<String>,
    /// Run every node under libfaketime with a spec file the harness
    /// changes at run time ([`LiveClock`]; the `clock-live` and
    /// `clock-bump` nemeses).
    pub live_clocks: bool,
    /// The slow-disk shim ([`crate::slowdisk::build`]) every node preloads,
    /// when the run enables `slow-disk`.
    pub slow_disk_shim: Option<PathBuf>,
}

/// The nodes of a run: their processes, and what the nemeses act on besides
/// (each node's IP and faketime spec, whether namespaces are used).
pub struct Cluster {
    /// Node slots, index = id - 1.
    pub nodes: Vec<Node>,
    /// Their processes, same indexes.
    pub procs: driftlock_launcher::Cluster,
    /// Whether the nodes live in namespaces.
    pub netns: bool,
    opts: ClusterOptions,
    /// Set once the cluster is up.
    admin: Option<Client>,
}

fn ns_name(id: u64) -> String {
    format!("{}{id}", ns_prefix())
}

/// Removes namespaces, veths and the bridge of an earlier run.
pub fn cleanup_netns(max_nodes: u64) {
    for id in 1..=max_nodes {
        let _ = run_cmd("ip", &["netns", "del", &ns_name(id)]);
        let _ = run_cmd("ip", &["link", "del", &format!("{}v{id}", ns_prefix())]);
    }
    let _ = run_cmd("ip", &["link", "del", &bridge()]);
}

fn setup_netns(nodes: u64) -> Result<(), ClusterError> {
    cleanup_netns(nodes.max(9));
    let bridge = bridge();
    run_cmd("ip", &["link", "add", &bridge, "type", "bridge"])?;
    run_cmd("ip", &["addr", "add", &format!("{}.1/24", subnet()), "dev", &bridge])?;
    run_cmd("ip", &["link", "set", &bridge, "up"])?;
    for id in 1..=nodes {
        let ns = ns_name(id);
        let host_end = format!("{}v{id}", ns_prefix());
        let ns_end = format!("{}p{id}", ns_prefix());
        run_cmd("ip", &["netns", "add", &ns])?;
        run_cmd(
            "ip",
            &["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end],
        )?;
        run_cmd("ip", &["link", "set", &host_end, "master", &bridge])?;
        run_cmd("ip", &["link", "set", &host_end, "up"])?;
        run_cmd("ip", &["link", "set", &ns_end, "netns", &ns])?;
        run_cmd(
            "ip",
            &["netns", "exec", &ns, "ip", "link", "set", &ns_end, "name", "eth0"],
        )?;
        run_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", node_ip(id)),
                "dev",
                "eth0",
            ],
        )?;
        run_cmd("ip", &["netns", "exec", &ns, "ip", "link", "set", "eth0", "up"])?;
        run_cmd("ip", &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// A free port on `ip` (bound and released).
fn free_port(ip: &str) -> Result<u16, ClusterError> {
    driftlock_testkit::free_port_on(ip).map_err(|source| ClusterError::Io {
        path: PathBuf::from(format!("{ip}:0")),
        source,
    })
}

/// `serve` flags of every node before the run's own: fast Raft timing and
/// health samples every second.
const NODE_ARGS: [&str; 8] = [
    "--heartbeat-ms",
    "50",
    "--election-timeout-min-ms",
    "300",
    "--election-timeout-max-ms",
    "600",
    "--health-interval-ms",
    "1000",
];

/// How long one status call of the harness may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the cluster has to come up, initialize and elect a leader.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the harness with short timeouts.
pub async fn harness_client(endpoints: Vec<String>, name: &str) -> Result<Client, ClusterError> {
    let base = ClientConfig::new(endpoints);
    let config = ClientConfig {
        client_name: name.to_owned(),
        request_timeout_ms: 1_000,
        op_deadline_ms: 5_000,
        health_report_interval_ms: 0,
        tls: crate::workload::run_tls().map(|t| t.client).or(base.tls.clone()),
        ..base
    };
    Client::connect_with(config)
        .await
        .map_err(|e| ClusterError::Client(e.to_string()))
}

impl Cluster {
    /// Creates the namespaces (if asked), starts every node and initializes
    /// the cluster; returns once a leader is elected.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let n = opts.nodes as u64;
        if opts.netns {
            setup_netns(n)?;
        }
        let mut nodes = Vec::new();
        let mut specs = Vec::new();
        for id in 1..=n {
            let (ip, raft_addr, client_addr) = if opts.netns {
                let ip = node_ip(id);
                (ip.clone(), format!("{ip}:{RAFT_PORT}"), format!("{ip}:{CLIENT_PORT}"))
            } else {
                let ip = format!("127.0.0.{}", 10 + id);
                let raft = format!("{ip}:{}", free_port(&ip)?);
                let client = format!("{ip}:{}", free_port(&ip)?);
                (ip, raft, client)
            };
            let mut spec = NodeSpec::new(
                id,
                raft_addr,
                client_addr,
                opts.run_dir.join(format!("n{id}-data")),
                opts.run_dir.join(format!("n{id}.log")),
            );
            spec.serve_args = NODE_ARGS.iter().map(|a| a.to_string()).collect();
            spec.serve_args.extend(opts.extra_args.iter().cloned());
            spec.env = vec![("RUST_LOG".into(), "info".into())];
            specs.push(spec);
            let live_clock = if opts.live_clocks {
                let clock = LiveClock::new(opts.run_dir.join(format!("n{id}.faketime")));
                clock.reset()?;
                Some(clock)
            } else {
                None
            };
            let fsync_delay_file = match &opts.slow_disk_shim {
                Some(_) => {
                    let file = opts.run_dir.join(format!("n{id}.fsync-delay-us"));
                    crate::slowdisk::set_delay_us(&file, 0).map_err(|source| ClusterError::Io {
                        path: file.clone(),
                        source,
                    })?;
                    Some(file)
                }
                None => None,
            };
            nodes.push(Node {
                id,
                ip,
                faketime: None,
                live_clock,
                fsync_delay_file,
            });
        }
        let mut procs = driftlock_launcher::Cluster::new(opts.binary.clone(), specs);
        // Mutual TLS, as in production (docs/security.md): a CA and
        // certificates for this run under `<run dir>/certs`.
        let certs = opts.run_dir.join("certs");
        procs.secure(&certs)?;
        crate::workload::set_run_tls(Some(crate::workload::RunTls {
            client: TlsFiles::in_dir(&certs, driftlock_launcher::ADMIN_CERT),
            node: TlsFiles::in_dir(&certs, "node-1"),
        }));
        // From here on, dropping `cluster` stops the nodes and removes the
        // namespaces, whatever fails.
        let mut cluster = Cluster {
            nodes,
            procs,
            netns: opts.netns,
            opts,
            admin: None,
        };
        for i in 0..cluster.nodes.len() {
            cluster.procs.nodes[i].spec.wrapper = cluster.wrapper(i)?;
        }
        cluster.procs.bring_up(START_TIMEOUT).await?;
        cluster.admin = Some(harness_client(cluster.endpoints(), "jepsen-admin").await?);
        Ok(cluster)
    }

    /// What node `i` runs under: its namespace and its `faketime` spec.
    fn wrapper(&self, i: usize) -> Result<Wrapper, ClusterError> {
        let mut wrapper = match (&self.nodes[i].faketime, &self.nodes[i].live_clock) {
            (Some(spec), _) => Wrapper::libfaketime(spec)?,
            (None, Some(clock)) => Wrapper::libfaketime_file(&clock.path)?,
            (None, None) => Wrapper::none(),
        };
        if let (Some(shim), Some(file)) = (&self.opts.slow_disk_shim, &self.nodes[i].fsync_delay_file) {
            // One LD_PRELOAD for both libfaketime and the shim.
            let shim = shim.display().to_string();
            match wrapper.env.iter_mut().find(|(k, _)| k == "LD_PRELOAD") {
                Some((_, v)) => *v = format!("{v}:{shim}"),
                None => wrapper.env.push(("LD_PRELOAD".into(), shim)),
            }
            wrapper
                .env
                .push((crate::slowdisk::DELAY_FILE_ENV.into(), file.display().to_string()));
        }
        if self.netns {
            let ns = ns_name(self.nodes[i].id);
            wrapper = wrapper.within(Wrapper::command(["ip", "netns", "exec", ns.as_str()]));
        }
        Ok(wrapper)
    }

    fn admin(&self) -> Result<&Client, ClusterError> {
        self.admin
            .as_ref()
            .ok_or_else(|| ClusterError::Client("the cluster is not up".into()))
    }

    /// Client API addresses of all nodes.
    pub fn endpoints(&self) -> Vec<String> {
        self.procs.endpoints()
    }

    /// The run directory: each node's data directory (`n<id>-data`) and log
    /// (`n<id>.log`), beside the history and reports of the run.
    pub fn run_dir(&self) -> &Path {
        &self.opts.run_dir
    }

    /// The member record of node `i`.
    pub fn member(&self, i: usize) -> MemberAddr {
        self.procs.nodes[i].spec.member()
    }

    /// Whether node `i`'s process runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.procs.nodes[i].is_running()
    }

    /// Whether node `i` is SIGSTOPped.
    pub fn is_paused(&self, i: usize) -> bool {
        self.procs.nodes[i].is_paused()
    }

    /// Starts (or restarts) node `i` on its data directory, under its
    /// `faketime` spec if it has one.
    pub fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let wrapper = self.wrapper(i)?;
        // A new process: its libfaketime counts rates from now.
        if let Some(clock) = &self.nodes[i].live_clock {
            clock.reset()?;
        }
        let node = &mut self.procs.nodes[i];
        node.spec.wrapper = wrapper;
        node.spawn()?;
        Ok(())
    }

    /// Waits until node `i` answers status.
    pub async fn wait_up(&mut self, i: usize, timeout: Duration) -> Result<(), ClusterError> {
        self.procs.nodes[i].wait_up(timeout).await?;
        Ok(())
    }

    /// Node `i`'s status, or `None` when it does not answer within a
    /// second.
    pub async fn status(&self, i: usize) -> Option<driftlock_proto::NodeStatus> {
        self.procs.nodes[i].status(Duration::from_secs(1)).await.ok()
    }

    /// The leader's index as some running node reports it.
    pub async fn leader(&self) -> Option<usize> {
        self.procs.leader().await
    }

    /// Waits for a leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<usize, ClusterError> {
        Ok(self.procs.wait_leader(timeout).await?)
    }

    /// SIGKILLs node `i` (a paused one too, at once).
    pub fn kill(&mut self, i: usize) {
        self.procs.nodes[i].kill();
    }

    /// SIGSTOP (`stop = true`) or SIGCONT node `i`.
    pub fn pause(&mut self, i: usize, stop: bool) -> Result<(), ClusterError> {
        let node = &mut self.procs.nodes[i];
        if stop {
            node.pause()?;
        } else {
            node.resume()?;
        }
        Ok(())
    }

    /// Commands `iptables` in node `i`'s namespace.
    fn ns_cmd(&self, i: usize, args: &[&str]) -> Result<(), ClusterError> {
        let ns = ns_name(self.nodes[i].id);
        let mut full = vec!["netns", "exec", ns.as_str()];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Cuts the links `(a, b)` (both directions) by dropping, inside each
    /// namespace, what comes from the other node. Namespaces only.
    pub fn block(&self, pairs: &[(usize, usize)]) -> Result<(), ClusterError> {
        for &(a, b) in pairs {
            for (x, y) in [(a, b), (b, a)] {
                self.ns_cmd(x, &["iptables", "-A", "INPUT", "-s", &self.nodes[y].ip, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Like [`block`](Self::block), but each side answers the other with a
    /// TCP reset instead of silence: connections fail at once.
    pub fn block_rejecting(&self, pairs: &[(usize, usize)]) -> Result<(), ClusterError> {
        for &(a, b) in pairs {
            for (x, y) in [(a, b), (b, a)] {
                self.ns_cmd(
                    x,
                    &[
                        "iptables",
                        "-A",
                        "INPUT",
                        "-s",
                        &self.nodes[y].ip,
                        "-p",
                        "tcp",
                        "-j",
                        "REJECT",
                        "--reject-with",
                        "tcp-reset",
                    ],
                )?;
                self.ns_cmd(x, &["iptables", "-A", "INPUT", "-s", &self.nodes[y].ip, "-j", "DROP"])?;
            }
        }
        Ok(())
    }

    /// Makes every node drop each incoming packet with `probability`
    /// (iptables' `statistic` match, inside the namespaces): packet loss
    /// without `sch_netem`. Healed by [`heal_partitions`](Self::heal_partitions).
    pub fn drop_randomly(&self, probability: f64) -> Result<(), ClusterError> {
        if !self.netns {
            return Err(ClusterError::Command {
                what: "iptables statistic".into(),
                detail: "needs network namespaces".into(),
            });
        }
        let p = format!("{probability:.4}");
        for i in 0..self.nodes.len() {
            self.ns_cmd(
                i,
                &[
                    "iptables",
                    "-A",
                    "INPUT",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Removes every partition rule.
    pub fn heal_partitions(&self) {
        if !self.netns {
            return;
        }
        for i in 0..self.nodes.len() {
            let _ = self.ns_cmd(i, &["iptables", "-F", "INPUT"]);
        }
    }

    /// Adds delay and loss to every node's interface (`tc netem`).
    pub fn netem(&self, delay_ms: u64, jitter_ms: u64, loss_pct: u64) -> Result<(), ClusterError> {
        for i in 0..self.nodes.len() {
            self.ns_cmd(
                i,
                &[
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    "eth0",
                    "root",
                    "netem",
                    "delay",
                    &format!("{delay_ms}ms"),
                    &format!("{jitter_ms}ms"),
                    "loss",
                    &format!("{loss_pct}%"),
                ],
            )?;
        }
        Ok(())
    }

    /// Removes the netem qdiscs.
    pub fn heal_netem(&self) {
        if !self.netns {
            return;
        }
        for i in 0..self.nodes.len() {
            let _ = self.ns_cmd(i, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
    }

    /// Asks the cluster for a warm handover of `election`'s mastership to
    /// the healthiest candidate.
    pub async fn handover(&self, election: &str) -> Result<(), ClusterError> {
        self.admin()?
            .admin(AdminRequest::Handover {
                election: election.to_owned(),
                to: None,
            })
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// Hands Raft leadership to node index `to`.
    pub async fn transfer_leader(&self, to: usize) -> Result<(), ClusterError> {
        self.admin()?
            .admin(AdminRequest::TransferLeader { to: self.nodes[to].id })
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// Makes these node indexes the voters.
    pub async fn set_voters(&self, voters: &[usize]) -> Result<(), ClusterError> {
        let voters = voters.iter().map(|&i| self.nodes[i].id).collect();
        self.admin()?
            .admin(AdminRequest::ChangeVoters { voters })
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// Adds node index `i` as a learner (waits for it to catch up).
    pub async fn add_learner(&self, i: usize) -> Result<(), ClusterError> {
        self.admin()?
            .admin(AdminRequest::AddLearner { member: self.member(i) })
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Client(e.to_string()))
    }

    /// The voter ids some node reports.
    pub async fn voters(&self) -> Option<Vec<u64>> {
        for n in &self.procs.nodes {
            if !n.is_running() || n.is_paused() {
                continue;
            }
            if let Ok(s) = n.status(STATUS_TIMEOUT).await {
                return Some(s.voters.iter().map(|(id, _)| *id).collect());
            }
        }
        None
    }

    /// Stops every node and removes the namespaces.
    pub fn shutdown(&mut self) {
        self.procs.kill_all();
        if self.netns {
            cleanup_netns(self.nodes.len() as u64);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libfaketime's clock for a process started at 0: real + off + real·(r − 1).
    fn faked(real: f64, offset: f64, rate: f64) -> f64 {
        real + offset + real * (rate - 1.0)
    }

    #[test]
    fn a_rate_change_keeps_the_clock_continuous() {
        let (r0, r1, at) = (1.002, 0.998, 100.0);
        let off = continuous_offset_s(0.0, r0, r1, at);
        assert!((faked(at, 0.0, r0) - faked(at, off, r1)).abs() < 1e-9);
        // After the change it runs at the new rate.
        let d = faked(at + 10.0, off, r1) - faked(at, off, r1);
        assert!((d - 10.0 * r1).abs() < 1e-9);
        // And back to the real rate, still continuous.
        let off2 = continuous_offset_s(off, r1, 1.0, 150.0);
        assert!((faked(150.0, off, r1) - faked(150.0, off2, 1.0)).abs() < 1e-9);
    }

    #[test]
    fn specs_are_what_libfaketime_parses() {
        assert_eq!(faketime_spec(0.0, 1.0), "+0.000000 x1");
        assert_eq!(faketime_spec(-0.2, 1.002), "-0.200000 x1.002");
    }

    #[test]
    fn a_live_clock_writes_its_spec_file() {
        let dir = tempfile::tempdir().unwrap();
        let clock = LiveClock::new(dir.path().join("n1.faketime"));
        clock.reset().unwrap();
        assert_eq!(std::fs::read_to_string(&clock.path).unwrap(), "+0.000000 x1");
        clock.bump(0.25).unwrap();
        clock.set_rate(1.0005).unwrap();
        let (offset, rate) = clock.current();
        assert_eq!(rate, 1.0005);
        // 0.25 plus a compensation of uptime·(1 − 1.0005) ≤ 0.
        assert!(offset <= 0.25 && offset > 0.24, "{offset}");
        let text = std::fs::read_to_string(&clock.path).unwrap();
        assert!(text.ends_with(" x1.0005"), "{text}");
    }
}
