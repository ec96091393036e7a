//! The one accept loop, shared by the data and ops listeners: accept, serve
//! each connection with hyper (HTTP/1.1 and HTTP/2), stop on shutdown and
//! drain open connections for a bounded time.
//!
//! Bounded under load:
//! - at most `limits.max_connections` connections are open at once; at the
//!   cap the loop stops accepting (new connections wait in the kernel's
//!   backlog) until one closes;
//! - near the cap (the last eighth), idle keep-alive connections are asked to
//!   close first, so a crowd of idle or slow clients cannot keep working
//!   clients out;
//! - accept errors never spin: running out of file descriptors or memory
//!   (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off exponentially up to a second;
//!   a connection-level error (the peer reset before we accepted) is skipped;
//! - when a burst has passed (open connections fell to a quarter of their
//!   peak), freed heap is handed back to the system (`allocator::trim`).
//!
//! Per-connection buffers are bounded by hyper's settings below: the request
//! head (64 KiB, else 431), the header read time (10 s, else the connection
//! is closed), and HTTP/2's streams and reset limits. With TLS
//! ([`serve_tls`]) the handshake comes first, in the connection's task and
//! under its own 10 s bound; what follows is the same.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use crate::tls::server::ServerTls;
use crate::tls::stream::MaybeTls;

/// Header-read timeout: a client that has not sent its headers by then is cut
/// off (slowloris); hyper only enforces it with a timer configured.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (HTTP/1 read buffer); bigger gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// First and longest pause after an accept failed for lack of resources.
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A client that has not completed its TLS handshake by then is cut off.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection as hyper serves it: as accepted, or after a TLS handshake.
/// `None` when the handshake failed, timed out or the listener is closing.
async fn handshake(
    name: &'static str,
    stream: TcpStream,
    tls: Option<&ServerTls>,
    conn: &Conn,
) -> Option<MaybeTls> {
    let Some(tls) = tls else {
        return Some(MaybeTls::Plain(stream));
    };
    tokio::select! {
        done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)) => match done {
            Ok(Ok(s)) => Some(MaybeTls::Server(Box::new(s))),
            Ok(Err(e)) => {
                tracing::debug!(listener = name, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(listener = name, "TLS handshake timed out");
                None
            }
        },
        // The drain asks every connection to close; one still shaking hands has no request to finish.
        _ = conn.close.notified() => None,
    }
}

/// How many connections a listener holds open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
}

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
        .max_local_error_reset_streams(256)
        // RFC 8441: lets clients open WebSockets over HTTP/2 (`proxy::websocket_h2`).
        .enable_connect_protocol();
    builder
}

/// Whether an accept error means the process (or system) is out of a resource.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux numbering; on other
    // systems the kind check below still catches out-of-memory).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
        || e.kind() == std::io::ErrorKind::OutOfMemory
}

/// One open connection, as the listener sees it.
struct Conn {
    /// Requests being answered on it now (0: idle keep-alive).
    in_flight: AtomicUsize,
    /// Asks the connection to finish its in-flight requests and close.
    close: Notify,
}

/// The open connections of one listener.
#[derive(Default)]
struct Conns {
    open: Mutex<Vec<Arc<Conn>>>,
    /// Signalled whenever a connection closes (for the drain).
    closed: Notify,
}

impl Conns {
    fn add(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            close: Notify::new(),
        });
        if let Ok(mut open) = self.open.lock() {
            open.push(conn.clone());
        }
        conn
    }

    fn remove(&self, conn: &Arc<Conn>) -> usize {
        let left = match self.open.lock() {
            Ok(mut open) => {
                open.retain(|c| !Arc::ptr_eq(c, conn));
                open.len()
            }
            Err(_) => 0,
        };
        self.closed.notify_waiters();
        left
    }

    fn len(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }

    /// Ask the idle connections (or, with `all`, every one) to close.
    fn close(&self, all: bool) -> usize {
        let Ok(open) = self.open.lock() else { return 0 };
        let mut asked = 0;
        for c in open.iter() {
            if all || c.in_flight.load(Ordering::Acquire) == 0 {
                // `notify_one` stores a permit, so a connection that is not
                // waiting yet still sees it.
                c.close.notify_one();
                asked += 1;
            }
        }
        asked
    }
}

/// Counts a request in flight on its connection while it is being answered.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serve `listener` until `stop` flips, then call `on_stop` and drain the open
/// connections for at most `drain`.
#[allow(clippy::too_many_arguments)]
pub async fn serve<F, Fut, B>(
    name: &'static str,
    listener: TcpListener,
    handle: F,
    stop: watch::Receiver<bool>,
    drain: Duration,
    limits: Limits,
    on_stop: impl FnOnce(),
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_tls(name, listener, None, handle, stop, drain, limits, on_stop).await
}

/// [`serve`], with a TLS handshake first on every connection when `tls` is
/// set. The handshake runs in the connection's own task, under
/// [`TLS_HANDSHAKE_TIMEOUT`], holding its connection slot: a client that
/// stalls mid-handshake costs one slot for a bounded time, like a slow head.
#[allow(clippy::too_many_arguments)]
pub async fn serve_tls<F, Fut, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    handle: F,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    limits: Limits,
    on_stop: impl FnOnce(),
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(http_builder());
    let conns = Arc::new(Conns::default());
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    // Below this many free slots, idle connections are shed.
    let shed_below = (max / 8).max(1);
    let peak = Arc::new(AtomicUsize::new(0));
    let mut backoff = BACKOFF_START;
    loop {
        // A slot first: at the cap, stop accepting until a connection closes.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = BACKOFF_START;
                x
            }
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(listener = name, error = %e, pause_ms = backoff.as_millis() as u64, "accept failed for lack of resources; pausing");
                conns.close(false);
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
        if slots.available_permits() < shed_below {
            let asked = conns.close(false);
            tracing::debug!(
                listener = name,
                asked,
                "near the connection cap: closing idle connections"
            );
        }
        let _ = stream.set_nodelay(true);
        let conn = conns.add();
        peak.fetch_max(conns.len(), Ordering::Relaxed);
        let handle = handle.clone();
        let counted = conn.clone();
        let svc = service_fn(move |req| {
            let guard = InFlight::new(&counted);
            let fut = handle(req, peer);
            async move {
                let resp = fut.await;
                drop(guard);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let builder = builder.clone();
        let conns = conns.clone();
        let peak = peak.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(stream) = handshake(name, stream, tls.as_deref(), &conn).await else {
                conns.remove(&conn);
                drop(permit);
                return;
            };
            // With upgrades: a WebSocket the proxy relays takes the connection over.
            let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(served);
            let result = tokio::select! {
                r = served.as_mut() => r,
                _ = conn.close.notified() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            let left = conns.remove(&conn);
            drop(permit);
            // A burst has passed: hand its memory back.
            let high = peak.load(Ordering::Relaxed);
            if high >= 64 && left <= high / 4 {
                peak.store(left, Ordering::Relaxed);
                crate::app::allocator::trim();
            }
        });
    }
    drop(listener);
    on_stop();
    // Drain: in-flight requests finish, idle connections close at once.
    conns.close(true);
    let drained = async {
        while conns.len() > 0 {
            let closed = conns.closed.notified();
            if conns.len() == 0 {
                break;
            }
            // Connections that open a request after the first ask get asked again.
            conns.close(true);
            let _ = tokio::time::timeout(Duration::from_millis(100), closed).await;
        }
    };
    tokio::select! {
        _ = drained => tracing::info!(listener = name, "drained all connections"),
        _ = tokio::time::sleep(drain) => tracing::warn!(listener = name, seconds = drain.as_secs(), open = conns.len(), "drain period over; closing remaining connections"),
    }
}
