//! The accept loop both ports share: each new connection gets its own
//! task, which runs the TLS handshake (bounded by `[tls]
//! handshake_timeout_ms`) and then serves the connection with the
//! principal its certificate names. A connection that fails the handshake
//! is counted and dropped; the loop goes on.
//!
//! Connections are capped (docs/security.md, "Bounded input"): a port
//! holds at most [`Caps::connections`] at once, counting those still in
//! their handshake, and one principal at most [`Caps::per_principal`] of
//! them; a connection over a cap is closed at once and counted in
//! `driftlock_connections_refused`. Requests in flight per connection are
//! capped by each port's serve function (`Caps::in_flight`, tarpc answers
//! a request over it with a "too many requests" error), so one principal
//! has at most `per_principal × in_flight` requests in flight.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftlock_proto::service::BoxedIo;
use driftlock_proto::tls::Principal;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::tls::NodeSecurity;

/// What a port needs to accept connections.
#[derive(Clone)]
pub struct Acceptor {
    /// TLS or plain TCP.
    pub security: NodeSecurity,
    /// Time a connection has to finish its handshake.
    pub handshake_timeout: Duration,
    /// Where handshake failures are counted.
    pub metrics: Arc<Metrics>,
    /// `client` or `raft`, for logs and metrics.
    pub port: &'static str,
    /// How many connections the port admits.
    pub caps: Caps,
}

/// Connection caps of one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Connections open at once on the port, handshakes included.
    pub connections: usize,
    /// Connections open at once under one principal (not applied to
    /// `Anonymous`: under `--insecure` every client is anonymous).
    pub per_principal: usize,
    /// Requests in flight on one connection.
    pub in_flight: usize,
}

impl Caps {
    /// The client port: 1 024 connections (the soft descriptor limit many
    /// hosts start with; a client library holds one connection per node),
    /// 256 per principal (an application's processes and the CLI share a
    /// certificate), 128 requests in flight per connection (a client
    /// pipelines its sessions' keepalives and operations on one
    /// connection).
    pub const CLIENT: Caps = Caps {
        connections: 1024,
        per_principal: 256,
        in_flight: 128,
    };

    /// The Raft port: 256 connections, 16 per node (a replication stream,
    /// the clock module's, and reconnects while old ones close), 1 024
    /// requests in flight per connection (openraft pipelines appends).
    pub const RAFT: Caps = Caps {
        connections: 256,
        per_principal: 16,
        in_flight: 1024,
    };
}

/// Connections open per principal on one port.
type PrincipalCounts = Arc<Mutex<HashMap<Principal, usize>>>;

/// One admitted connection: holds its place in the port's counts until it
/// closes.
struct Admitted {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
    principal: Option<(Principal, PrincipalCounts)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.dec();
        if let Some((principal, counts)) = self.principal.take() {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(&principal) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&principal);
                }
            }
        }
    }
}

impl Acceptor {
    /// Accepts connections on `listener` for as long as it works, serving
    /// each authenticated one with `serve(stream, principal)` on its own
    /// task.
    pub async fn run<F, Fut>(self, listener: TcpListener, serve: F)
    where
        F: Fn(BoxedIo, Principal) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let serve = Arc::new(serve);
        let permits = Arc::new(tokio::sync::Semaphore::new(self.caps.connections));
        let principals: PrincipalCounts = Arc::default();
        let open = self.metrics.connections.open_on(self.port);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off a
                    // little rather than spin, and keep accepting.
                    tracing::warn!(port = self.port, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.metrics.connections.refused(self.port, "port_full");
                tracing::debug!(port = self.port, %peer, "connection refused: the port is full");
                drop(stream);
                continue;
            };
            open.inc();
            let mut admitted = Admitted {
                _permit: permit,
                open: open.clone(),
                principal: None,
            };
            let acceptor = self.clone();
            let serve = serve.clone();
            let principals = principals.clone();
            tokio::spawn(async move {
                match acceptor.security.accept(stream, acceptor.handshake_timeout).await {
                    Ok((io, principal)) => {
                        if principal != Principal::Anonymous {
                            let mut counts = principals.lock().unwrap_or_else(|p| p.into_inner());
                            let n = counts.entry(principal.clone()).or_default();
                            if *n >= acceptor.caps.per_principal {
                                drop(counts);
                                acceptor.metrics.connections.refused(acceptor.port, "principal_full");
                                tracing::debug!(port = acceptor.port, %peer, %principal, "connection refused: the principal has too many");
                                return;
                            }
                            *n += 1;
                            admitted.principal = Some((principal.clone(), principals.clone()));
                        }
                        serve(io, principal).await;
                        drop(admitted);
                    }
                    Err(e @ crate::tls::AcceptError::ClosedBeforeHello) => {
                        tracing::debug!(port = acceptor.port, %peer, "connection ended: {e}");
                    }
                    Err(e @ crate::tls::AcceptError::Failed(_)) => {
                        acceptor.metrics.security.handshake_failed(acceptor.port);
                        tracing::debug!(port = acceptor.port, %peer, "connection refused: {e}");
                    }
                }
            });
        }
    }
}
