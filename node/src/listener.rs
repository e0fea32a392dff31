//! The accept loop both ports share: each new connection gets its own
//! task, which runs the TLS handshake (bounded by `[tls]
//! handshake_timeout_ms`) and then serves the connection with the
//! principal its certificate names. A connection that fails the handshake
//! is counted and dropped; the loop goes on.

use std::future::Future;
use std::sync::Arc;
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
            let acceptor = self.clone();
            let serve = serve.clone();
            tokio::spawn(async move {
                match acceptor.security.accept(stream, acceptor.handshake_timeout).await {
                    Ok((io, principal)) => serve(io, principal).await,
                    Err(e) => {
                        acceptor.metrics.security.handshake_failed(acceptor.port);
                        tracing::debug!(port = acceptor.port, %peer, "connection refused: {e}");
                    }
                }
            });
        }
    }
}
