//! The one accept loop, shared by the data and ops listeners: accept, serve
//! each connection with hyper (HTTP/1.1 and HTTP/2), stop on shutdown and
//! drain open connections for a bounded time.
//!
//! Accept errors never spin: running out of file descriptors or memory
//! (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off exponentially up to a second,
//! since retrying at once would fail the same way while burning a core; a
//! connection-level error (the peer reset before we accepted) is skipped.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Header-read timeout: a client that has not sent its headers by then is cut
/// off (slowloris); hyper only enforces it with a timer configured.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (HTTP/1 read buffer); bigger gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// First and longest pause after an accept failed for lack of resources.
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256);
    builder
}

/// Whether an accept error means the process (or system) is out of a resource.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux numbering; on other
    // systems the kind check below still catches out-of-memory).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

/// Serve `listener` until `stop` flips, then call `on_stop` and drain the open
/// connections for at most `drain`.
pub async fn serve<F, Fut, B>(
    name: &'static str,
    listener: TcpListener,
    handle: F,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    on_stop: impl FnOnce(),
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = http_builder();
    let graceful = GracefulShutdown::new();
    let mut backoff = BACKOFF_START;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => {
                        backoff = BACKOFF_START;
                        x
                    }
                    Err(e) if is_resource_exhaustion(&e) => {
                        tracing::warn!(listener = name, error = %e, pause_ms = backoff.as_millis() as u64, "accept failed for lack of resources; pausing");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => break,
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(listener = name, error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handle = handle.clone();
                let svc = service_fn(move |req| {
                    let fut = handle(req, peer);
                    async move { Ok::<_, std::convert::Infallible>(fut.await) }
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(listener = name, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    on_stop();
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = name, "drained all connections"),
        _ = tokio::time::sleep(drain) => tracing::warn!(listener = name, seconds = drain.as_secs(), "drain period over; closing remaining connections"),
    }
}
