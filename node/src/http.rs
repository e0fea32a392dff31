//! The node's HTTP endpoint (`--metrics-addr`), served by hyper: `GET
//! /metrics` (Prometheus text), `GET /healthz` (the process is alive and
//! its runtime answers) and `GET /readyz` (it can serve: a member of an
//! initialized cluster that knows its leader and has applied its log to
//! within [`READY_MAX_APPLY_LAG`] entries). Load balancers and
//! orchestrators probe the last two; they carry no secrets, so the port
//! runs plain HTTP — bind it to an address only the monitoring network
//! reaches (docs/security.md).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use openraft::type_config::async_runtime::WatchReceiver;

use crate::server::NodeContext;

/// Most log entries a node may have appended but not applied and still be
/// ready: a node further behind answers reads (serializable ones) from a
/// state well in the past and is busy catching up.
pub const READY_MAX_APPLY_LAG: u64 = 1_000;

/// Most connections the endpoint serves at once; more wait in the accept
/// queue. Scrapers and probes need a handful.
const MAX_CONNECTIONS: usize = 64;

/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and returns the loop that serves the endpoint, which the
/// caller runs as a task until it aborts it.
pub async fn serve(
    addr: std::net::SocketAddr,
    ctx: Arc<NodeContext>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(route(&ctx, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                }
                drop(permit);
            });
        }
    })
}

fn route(ctx: &NodeContext, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, ctx.metrics.encode());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness(ctx) {
            Ok(what) => text(StatusCode::OK, format!("ready: {what}\n")),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; served: /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether this node can serve, from its Raft state: why not, or what it is.
fn readiness(ctx: &NodeContext) -> Result<String, String> {
    if ctx.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("shutting down".into());
    }
    let metrics = ctx.raft.metrics();
    let m = metrics.borrow_watched();
    let membership = m.membership_config.membership();
    if !membership.nodes().any(|(id, _)| *id == ctx.id) {
        return Err(if membership.nodes().next().is_none() {
            "not initialized (no membership yet)".into()
        } else {
            format!("node {} is not a member", ctx.id)
        });
    }
    let Some(leader) = m.current_leader else {
        return Err("no known leader".into());
    };
    let last_log = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.as_ref().map_or(0, |l| l.index);
    let lag = last_log.saturating_sub(applied);
    if lag > READY_MAX_APPLY_LAG {
        return Err(format!(
            "{lag} entries appended but not applied (ready at {READY_MAX_APPLY_LAG} or fewer)"
        ));
    }
    Ok(format!(
        "node {} is {:?}, leader {leader}, applied {applied} of {last_log}",
        ctx.id, m.state
    ))
}
