//! A fault-injecting TCP proxy between clients and one node's client port.
//!
//! It speaks tarpc's framing (a 4-byte big-endian length, then bincode of
//! `tarpc::ClientMessage<DriftlockApiRequest>` towards the node and of
//! `tarpc::Response<DriftlockApiResponse>` back), so faults can target
//! single requests while the bytes that pass are forwarded unchanged:
//!
//! - [`pause`](FaultProxy::pause) / [`resume`](FaultProxy::resume): all
//!   traffic hangs (nothing is lost; it flows again on resume);
//! - [`set_delay`](FaultProxy::set_delay): every request reaches the node
//!   this much later;
//! - [`kill_connections`](FaultProxy::kill_connections): every open
//!   connection is closed; [`set_refusing`](FaultProxy::set_refusing): new
//!   ones are closed at once; [`stop`](FaultProxy::stop) does both;
//! - [`block`](FaultProxy::block): matching requests never reach the node
//!   (their callers time out);
//! - [`drop_reply_of`](FaultProxy::drop_reply_of): the next matching request
//!   reaches the node, which acts on it, and its reply is dropped; then the
//!   caller hangs ([`DropMode::Hang`]) or every connection is closed
//!   ([`DropMode::Disconnect`]);
//! - [`count`](FaultProxy::count): the requests seen, by any predicate.
//!
//! A frame that does not decode is forwarded as it is, uncounted.
//!
//! In front of a node that runs mutual TLS the proxy terminates TLS
//! ([`FaultProxy::start_tls`]): clients verify it as a node (it shows a
//! node certificate of the cluster) and it dials the node with a client
//! certificate of its own, so the node sees the proxy's principal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bincode::Options;
use driftlock_proto::service::BoxedIo;
use driftlock_proto::tls::{rustls, TlsFiles};
use driftlock_proto::Security;
use driftlock_proto::{DriftlockApiRequest, DriftlockApiResponse};
use tarpc::{ClientMessage, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// A predicate over requests.
type Matcher = Box<dyn Fn(&DriftlockApiRequest) -> bool + Send + Sync>;

/// What happens once a reply has been dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// Nothing more: the caller never gets an answer and times out; other
    /// traffic on the connection goes on.
    Hang,
    /// Every connection through the proxy is closed instead of answering.
    Disconnect,
}

/// Identifies a rule added with [`FaultProxy::block`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

/// The method name of a request as the node's metrics label it
/// (`open_session`, `session_op`, `kv_write`, `read`, `observe`, `status`,
/// `admin`).
pub fn method(request: &DriftlockApiRequest) -> &'static str {
    match request {
        DriftlockApiRequest::OpenSession { .. } => "open_session",
        DriftlockApiRequest::SessionOp { .. } => "session_op",
        DriftlockApiRequest::KvWrite { .. } => "kv_write",
        DriftlockApiRequest::Read { .. } => "read",
        DriftlockApiRequest::Observe { .. } => "observe",
        DriftlockApiRequest::Status { .. } => "status",
        DriftlockApiRequest::Admin { .. } => "admin",
    }
}

/// tarpc's bincode settings (tokio-serde's default options).
fn codec() -> impl Options {
    bincode::DefaultOptions::new()
}

#[derive(Default)]
struct Rules {
    delay: Duration,
    refusing: bool,
    blocked: Vec<(RuleId, Matcher)>,
    drop_replies: Vec<(Matcher, DropMode)>,
    next_rule: u64,
}

/// How a proxy in front of a TLS node talks to each side.
#[derive(Clone)]
pub struct ProxyTls {
    /// What clients see: a node certificate of the cluster.
    server: Arc<rustls::ServerConfig>,
    /// How the proxy dials the node: with a client certificate.
    upstream: Security,
}

impl ProxyTls {
    /// Shows clients the node certificate `as_node` and dials the node
    /// with the client certificate `upstream_as` (both issued by the
    /// cluster's CA).
    pub fn new(as_node: &TlsFiles, upstream_as: &TlsFiles) -> Result<ProxyTls, driftlock_proto::tls::TlsError> {
        Ok(ProxyTls {
            server: driftlock_proto::tls::server_config(as_node)?,
            upstream: Security::from_files(Some(upstream_as))?,
        })
    }
}

/// How long a connection through the proxy has for its handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    upstream: String,
    tls: Option<ProxyTls>,
    rules: Mutex<Rules>,
    paused: watch::Sender<bool>,
    connections: Mutex<Vec<AbortHandle>>,
    seen: Mutex<Vec<DriftlockApiRequest>>,
    /// Whether requests are kept for [`FaultProxy::count`]; off for long
    /// runs, where the record would only grow.
    recording: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn kill_connections(&self) {
        for c in lock(&self.connections).drain(..) {
            c.abort();
        }
    }

    async fn wait_unpaused(&self) {
        let mut rx = self.paused.subscribe();
        // Fails only when the sender is gone, i.e. never while `self` lives.
        let _ = rx.wait_for(|paused| !*paused).await;
    }
}

/// A proxy listening on its own loopback address, forwarding to one node.
/// Dropping it closes the listener and every connection.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: String,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (a node's client address) on a fresh
    /// loopback address.
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        FaultProxy::start_tls(upstream, None).await
    }

    /// Starts a proxy to `upstream` that terminates TLS with `tls` (plain
    /// TCP with `None`).
    pub async fn start_tls(upstream: &str, tls: Option<ProxyTls>) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(crate::try_free_addr()?).await?;
        let addr = listener.local_addr()?.to_string();
        let (paused, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            tls,
            rules: Mutex::new(Rules::default()),
            paused,
            connections: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            recording: std::sync::atomic::AtomicBool::new(true),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy { shared, addr, accept })
    }

    /// `ip:port` clients connect to.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The node's address the proxy forwards to.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Holds all traffic, both ways, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Lets held and new traffic flow again.
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Every request reaches the node `delay` after it reached the proxy
    /// (order kept); zero for none.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.rules).delay = delay;
    }

    /// Closes every open connection (new ones are accepted unless
    /// refusing).
    pub fn kill_connections(&self) {
        self.shared.kill_connections();
    }

    /// While `refusing`, new connections are closed as soon as they are
    /// accepted.
    pub fn set_refusing(&self, refusing: bool) {
        lock(&self.shared.rules).refusing = refusing;
    }

    /// Stops serving: refuses new connections and closes the open ones.
    /// Undone by `set_refusing(false)`.
    pub fn stop(&self) {
        self.set_refusing(true);
        self.kill_connections();
    }

    /// From now on, requests matching `pred` are swallowed: the node never
    /// sees them. Returns the rule's id for [`unblock`](Self::unblock).
    pub fn block(&self, pred: impl Fn(&DriftlockApiRequest) -> bool + Send + Sync + 'static) -> RuleId {
        let mut rules = lock(&self.shared.rules);
        let id = RuleId(rules.next_rule);
        rules.next_rule += 1;
        rules.blocked.push((id, Box::new(pred)));
        id
    }

    /// Removes a [`block`](Self::block) rule.
    pub fn unblock(&self, rule: RuleId) {
        lock(&self.shared.rules).blocked.retain(|(id, _)| *id != rule);
    }

    /// The next request matching `pred` is forwarded and its reply dropped,
    /// then `mode` applies. One-shot.
    pub fn drop_reply_of(&self, pred: impl Fn(&DriftlockApiRequest) -> bool + Send + Sync + 'static, mode: DropMode) {
        lock(&self.shared.rules).drop_replies.push((Box::new(pred), mode));
    }

    /// Stops (or resumes) keeping requests for [`count`](Self::count):
    /// a proxy in front of a long run would otherwise keep every request.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, std::sync::atomic::Ordering::Relaxed);
        if !on {
            lock(&self.shared.seen).clear();
        }
    }

    /// Requests seen so far (forwarded or not) that match `pred`.
    pub fn count(&self, pred: impl Fn(&DriftlockApiRequest) -> bool) -> usize {
        lock(&self.shared.seen).iter().filter(|r| pred(r)).count()
    }

    /// Requests seen so far of the method `name` (see [`method`]).
    pub fn count_method(&self, name: &str) -> usize {
        self.count(|r| method(r) == name)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.kill_connections();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if lock(&shared.rules).refusing {
            drop(client);
            continue;
        }
        let task = tokio::spawn(connection(client, shared.clone()));
        let mut connections = lock(&shared.connections);
        connections.retain(|c| !c.is_finished());
        connections.push(task.abort_handle());
    }
}

/// Largest frame passed on; a longer announced length closes the connection
/// as the node would.
const MAX_FRAME_BYTES: usize = driftlock_proto::limits::MAX_FRAME_BYTES;

async fn read_frame(rd: &mut ReadHalf<BoxedIo>) -> std::io::Result<Vec<u8>> {
    let len = rd.read_u32().await? as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut frame = vec![0; len];
    rd.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame(wr: &mut WriteHalf<BoxedIo>, frame: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    let mut buf = Vec::with_capacity(4 + frame.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(frame);
    wr.write_all(&buf).await
}

/// Request ids on one connection whose replies are to be dropped.
type DropSet = Arc<Mutex<HashMap<u64, DropMode>>>;

/// Both ends of a connection through the proxy, TLS done where it runs.
async fn open_ends(client: TcpStream, shared: &Shared) -> Result<(BoxedIo, BoxedIo), String> {
    let _ = client.set_nodelay(true);
    let (client, upstream) = match &shared.tls {
        None => (Box::new(client) as BoxedIo, Security::Insecure),
        Some(tls) => {
            let accepted = tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                driftlock_proto::tls::accept(tls.server.clone(), client),
            )
            .await
            .map_err(|_| "client handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
            (accepted.0, tls.upstream.clone())
        }
    };
    let node = upstream
        .open(
            &shared.upstream,
            driftlock_proto::tls::NODE_SERVER_NAME,
            HANDSHAKE_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((client, node))
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok((client, node)) = open_ends(client, &shared).await else {
        // The node is down (or the client failed its handshake): so is the
        // connection through the proxy.
        return;
    };
    let (client_rd, client_wr) = tokio::io::split(client);
    let (node_rd, node_wr) = tokio::io::split(node);
    let drops: DropSet = Arc::default();
    let (tx, rx) = mpsc::unbounded_channel();
    // Whichever direction ends first ends the connection: both sockets are
    // dropped with this task.
    tokio::select! {
        _ = requests_in(client_rd, tx, shared.clone(), drops.clone()) => {}
        _ = requests_out(rx, node_wr, shared.clone()) => {}
        _ = replies(node_rd, client_wr, shared.clone(), drops) => {}
    }
}

/// Reads requests from the client, applies the rules, queues what passes
/// with the time it is due at the node.
async fn requests_in(
    mut rd: ReadHalf<BoxedIo>,
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
    drops: DropSet,
) {
    while let Ok(frame) = read_frame(&mut rd).await {
        let mut forward = true;
        let delay;
        {
            let mut rules = lock(&shared.rules);
            delay = rules.delay;
            if let Ok(ClientMessage::Request(req)) = codec().deserialize::<ClientMessage<DriftlockApiRequest>>(&frame) {
                if rules.blocked.iter().any(|(_, m)| m(&req.message)) {
                    forward = false;
                } else if let Some(i) = rules.drop_replies.iter().position(|(m, _)| m(&req.message)) {
                    let (_, mode) = rules.drop_replies.remove(i);
                    lock(&drops).insert(req.id, mode);
                }
                if shared.recording.load(std::sync::atomic::Ordering::Relaxed) {
                    lock(&shared.seen).push(req.message);
                }
            }
        }
        if forward && tx.send((Instant::now() + delay, frame)).is_err() {
            return;
        }
    }
}

/// Writes queued requests to the node when due and not paused.
async fn requests_out(
    mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    mut wr: WriteHalf<BoxedIo>,
    shared: Arc<Shared>,
) {
    while let Some((due, frame)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        shared.wait_unpaused().await;
        if write_frame(&mut wr, &frame).await.is_err() {
            return;
        }
    }
}

/// Passes replies back to the client, dropping the marked ones.
async fn replies(mut rd: ReadHalf<BoxedIo>, mut wr: WriteHalf<BoxedIo>, shared: Arc<Shared>, drops: DropSet) {
    while let Ok(frame) = read_frame(&mut rd).await {
        if let Ok(reply) = codec().deserialize::<Response<DriftlockApiResponse>>(&frame) {
            let mode = lock(&drops).remove(&reply.request_id);
            match mode {
                None => {}
                Some(DropMode::Hang) => continue,
                Some(DropMode::Disconnect) => {
                    shared.kill_connections();
                    return;
                }
            }
        }
        shared.wait_unpaused().await;
        if write_frame(&mut wr, &frame).await.is_err() {
            return;
        }
    }
}
