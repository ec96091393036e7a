//! The upstream client: HTTP/1.1 keep-alive connections kept in a free list.
//!
//! Each connection is a hyper `http1` connection task plus its `SendRequest`
//! handle. A request takes the most recently used idle handle (or dials a new
//! connection), and the handle goes back on the list when the response body
//! has been read to its end, so a connection never carries two exchanges at
//! once. Why not hyper-util's pooled client: its checkout, the boxed future
//! around each request and the task it spawns per response to wait for the
//! connection to turn idle again. Without them a pass-through request costs
//! ~20 % less user CPU (9.7 → 7.7 µs, from `/proc/PID/stat` over a wrk run)
//! and ~10 % more requests are served.
//!
//! Idle connections are not reaped by a timer: the upstream closes the ones it
//! no longer wants (its keep-alive timeout), their tasks end, and the dead
//! handles are dropped at the next checkout; handles idle for longer than
//! `IDLE_TIMEOUT` are never reused, and are closed a few at a time
//! (`CLOSE_PER_CALL`) at checkouts and put-backs.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::decision::forwarding::strip_hop_by_hop;
use crate::error::ApiError;

/// What can go wrong talking to the upstream; mapped to 502/504 (and a
/// misconfigured base URL to 500) by the one mapping below.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream address: {0}")]
    Address(String),
    /// The upstream's TLS certificate did not verify (`upstream_tls`).
    #[error("upstream certificate not trusted: {0}")]
    Untrusted(String),
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unreachable(m) => ApiError::UpstreamUnreachable(m),
            UpstreamError::Timeout => ApiError::UpstreamTimeout,
            UpstreamError::Address(m) => ApiError::Internal(m),
            UpstreamError::Untrusted(m) => ApiError::UpstreamUntrusted(m),
        }
    }
}

/// Idle connections kept; a handle put back beyond this is closed.
const MAX_IDLE: usize = 256;
/// A connection idle for longer is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Expired handles closed per checkout or put-back. A load burst leaves many
/// connections that expire together; closing them all in front of one request
/// put tens of socket closes on its thread. Those not closed yet are never
/// handed out (see `checkout`).
const CLOSE_PER_CALL: usize = 4;

/// The upstream every allowed request goes to. Cloning shares the connections.
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
}

struct Pool {
    /// TCP, plus TLS for an `https://` upstream (`upstream_tls`).
    dialer: super::upstream_tls::Dialer,
    /// HTTP/2 instead of this pool's HTTP/1.1 (`upstream_http2`).
    h2: Option<super::upstream_h2::H2>,
    /// The `Host` field every forwarded request carries.
    host: HeaderValue,
    /// Bound on dialling plus waiting for the response head.
    timeout: Duration,
    /// Idle handles, oldest first; taken from the end.
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Incoming>,
    since: Instant,
}

/// Close up to [`CLOSE_PER_CALL`] of the handles idle past [`IDLE_TIMEOUT`] at
/// `now` (a prefix of the list, which is oldest first); returns how many
/// expired handles are left at the front.
fn drop_expired(idle: &mut Vec<Idle>, now: Instant) -> usize {
    let n = idle.partition_point(|i| now.duration_since(i.since) > IDLE_TIMEOUT);
    let closed = n.min(CLOSE_PER_CALL);
    idle.drain(..closed);
    n - closed
}

impl Upstream {
    /// `base` is an `http://host[:port]` URL (checked by the configuration).
    pub fn new(base: &Uri, timeout: Duration) -> Result<Self, UpstreamError> {
        Self::with_tls(base, timeout, None, false)
    }

    /// `base` may be `https://` (verified against the system's roots and
    /// `ca_file`); `http2` speaks HTTP/2 to it (`upstream_h2`).
    pub fn with_tls(
        base: &Uri,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
        http2: bool,
    ) -> Result<Self, UpstreamError> {
        let authority = base
            .authority()
            .ok_or_else(|| UpstreamError::Address("upstream has no authority".to_owned()))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| {
            UpstreamError::Address("upstream authority is not a header value".into())
        })?;
        Ok(Upstream {
            pool: Arc::new(Pool {
                dialer: super::upstream_tls::Dialer::new(base, ca_file, http2)?,
                h2: if http2 {
                    Some(super::upstream_h2::H2::new(base)?)
                } else {
                    None
                },
                host,
                timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Send `req` to the upstream at `path_and_query` (already normalised).
    /// The caller has already rewritten the headers.
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
        path_and_query: &str,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // Most requests arrive in origin form with a path already normal: the
        // URI hyper parsed is then the one to send, and parsing it again (with
        // its allocation) is skipped.
        let unchanged = req.uri().scheme().is_none()
            && req.uri().path_and_query().map(|pq| pq.as_str()) == Some(path_and_query);
        if !unchanged {
            *req.uri_mut() = Uri::try_from(path_and_query)
                .map_err(|e| UpstreamError::Address(format!("bad upstream uri: {e}")))?;
        }
        // Framing is hyper's job on the way out: it derives Content-Length or
        // chunked encoding from the body, so no client-sent framing header travels
        // (a request with both CL and TE was already decoded by TE).
        let headers = req.headers_mut();
        headers.remove(header::CONTENT_LENGTH);
        let resp = match &self.pool.h2 {
            Some(h2) => tokio::time::timeout(self.pool.timeout, h2.send(&self.pool.dialer, req))
                .await
                .map_err(|_| UpstreamError::Timeout)??
                .map(UpstreamBody::multiplexed),
            None => {
                req.headers_mut()
                    .insert(header::HOST, self.pool.host.clone());
                *req.version_mut() = http::Version::HTTP_11;
                tokio::time::timeout(self.pool.timeout, self.exchange(req))
                    .await
                    .map_err(|_| UpstreamError::Timeout)??
            }
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }

    async fn exchange(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        loop {
            let (mut sender, fresh) = match self.pool.checkout(Instant::now()) {
                Some(s) => (s, false),
                // Boxed: a new connection is the rare case, and its future
                // (~1.2 KiB: dial and handshake) would otherwise be part of
                // every request's future, which is moved (copied whole) as
                // it is handed up the layers of the request path.
                None => (Box::pin(self.pool.connect()).await?, true),
            };
            if fresh {
                // Lets the new connection's task start; errors if it died.
                sender
                    .ready()
                    .await
                    .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pool = Arc::clone(&self.pool);
                    return Ok(resp.map(|inner| UpstreamBody {
                        inner,
                        conn: Some((sender, pool)),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // The upstream closed a kept-alive connection before the
                    // request was written: nothing reached it, so the request
                    // goes again, on the next connection. A request that was
                    // (even partly) written is never sent twice.
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(UpstreamError::Unreachable(e.into_error().to_string())),
                },
            }
        }
    }
}

impl Pool {
    /// The most recently used idle handle that is ready for a request.
    /// Closed handles are dropped; those idle past [`IDLE_TIMEOUT`] are
    /// skipped, and closed a few at a time (`drop_expired`). A
    /// handle not ready yet stays on the list: its connection is still
    /// finishing an exchange (an upstream that answered before reading the
    /// whole request body is still being sent the rest), and a request must
    /// not wait on someone else's upload.
    fn checkout(&self, now: Instant) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = drop_expired(&mut idle, now);
        let mut i = idle.len();
        while i > expired {
            i -= 1;
            if idle[i].sender.is_closed() {
                idle.remove(i);
            } else if idle[i].sender.is_ready() {
                return Some(idle.remove(i).sender);
            }
        }
        None
    }

    fn put_back(&self, sender: SendRequest<Incoming>, now: Instant) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        drop_expired(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: now });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            UpstreamError::Unreachable(format!("{what} {}: {e}", self.dialer.addr()))
        };
        let stream = self.dialer.dial().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable("handshake with", &e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// A response body from the upstream. When it has been read to its end, its
/// connection goes back to the free list; dropped early (the client went
/// away), the connection is closed with it.
pub struct UpstreamBody {
    inner: Incoming,
    conn: Option<(SendRequest<Incoming>, Arc<Pool>)>,
}

impl UpstreamBody {
    /// A body from an HTTP/2 exchange: its connection is shared, so there is
    /// nothing to hand back.
    fn multiplexed(inner: Incoming) -> Self {
        UpstreamBody { inner, conn: None }
    }

    fn release(&mut self) {
        if let Some((sender, pool)) = self.conn.take() {
            pool.put_back(sender, Instant::now());
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            // A broken body leaves its connection in no state to reuse.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    // The server stops polling a body whose length says it has ended (and
    // never polls an empty one), so the end is also recognised here.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
    use tokio::net::TcpStream;
    use tokio::sync::{mpsc, oneshot};

    /// A connection whose peer has closed it, as the client side sees it
    /// before its connection task has run: reads block until `closed` is set
    /// (without a wake-up, as when the FIN is in but not yet seen), then end;
    /// writes are counted.
    struct ClosingIo {
        closed: Arc<AtomicBool>,
        written: Arc<AtomicUsize>,
    }

    impl AsyncRead for ClosingIo {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.closed.load(Ordering::SeqCst) {
                Poll::Ready(Ok(())) // end of stream
            } else {
                Poll::Pending
            }
        }
    }

    impl AsyncWrite for ClosingIo {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.written.fetch_add(buf.len(), Ordering::SeqCst);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A `Request<Incoming>` with a body, as the proxy gets it: only hyper's
    /// server makes one, so a loopback server hands over what it receives.
    async fn incoming_post(body: &str) -> Request<Incoming> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (done, wait) = oneshot::channel::<()>();
                let _ = tx.send((req, done));
                async move {
                    let _ = wait.await;
                    Ok::<_, std::convert::Infallible>(Response::new(
                        http_body_util::Empty::<Bytes>::new(),
                    ))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(
                format!(
                    "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let (req, done) = rx.recv().await.unwrap();
        // Keep the client's connection (the body's source) open for the test.
        tokio::spawn(async move {
            let _client = client;
            let _ = done;
            std::future::pending::<()>().await
        });
        req
    }

    /// The race the resend rule exists for: the upstream has closed a kept-alive
    /// connection, but its task has not seen the end yet when a request takes
    /// it. hyper hands the request back unwritten; it goes out once, on a new
    /// connection.
    #[tokio::test]
    async fn a_request_handed_back_unwritten_goes_once_on_a_new_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let received = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"hello") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request was cut short");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let upstream = Upstream::new(&base, Duration::from_secs(5)).unwrap();

        // A kept-alive connection, idle and ready on the free list.
        let (closed, written) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let io = ClosingIo {
            closed: closed.clone(),
            written: written.clone(),
        };
        let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await.unwrap();
        tokio::spawn(conn);
        sender.ready().await.unwrap();
        upstream.pool.put_back(sender, Instant::now());
        // The upstream closes it; the connection task has not looked yet.
        closed.store(true, Ordering::SeqCst);

        let req = incoming_post("hello").await;
        let resp = tokio::time::timeout(Duration::from_secs(5), upstream.send(req, "/upload"))
            .await
            .expect("the request was not resent")
            .expect("the request failed");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            written.load(Ordering::SeqCst),
            0,
            "bytes went to the closed connection"
        );
        let seen = received.await.unwrap();
        assert!(seen.starts_with("POST /upload HTTP/1.1\r\n"), "{seen}");
        assert_eq!(seen.matches("POST").count(), 1);
    }

    /// A pool whose upstream accepts connections and holds them open, silent:
    /// enough for tests of the free list itself. Abort the task when done.
    async fn pool_to_a_silent_upstream() -> (Arc<Pool>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let pool = Upstream::new(&base, Duration::from_secs(5)).unwrap().pool;
        (pool, held)
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_not_reused() {
        let (pool, held) = pool_to_a_silent_upstream().await;
        let since = |pool: &Pool| -> Vec<Instant> {
            let idle = pool.idle.lock().unwrap();
            idle.iter().map(|i| i.since).collect()
        };
        let t0 = Instant::now();
        let (t1, t2) = (
            t0 + IDLE_TIMEOUT,
            t0 + IDLE_TIMEOUT + Duration::from_secs(1),
        );
        pool.put_back(pool.connect().await.unwrap(), t0);
        pool.put_back(pool.connect().await.unwrap(), t1);
        assert_eq!(since(&pool), [t0, t1], "none idle past the timeout");
        // Putting one back closes the one idle for longer than the timeout.
        pool.put_back(pool.connect().await.unwrap(), t2);
        assert_eq!(since(&pool), [t1, t2]);
        // After a quiet spell, a request finds no connection to reuse: all
        // of them were idle too long.
        assert!(pool
            .checkout(t2 + IDLE_TIMEOUT + Duration::from_secs(1))
            .is_none());
        assert!(since(&pool).is_empty());
        held.abort();
    }

    /// A burst leaves many connections that expire together: each checkout
    /// closes a few of them, and none is handed out meanwhile.
    #[tokio::test]
    async fn expired_connections_are_closed_a_few_per_call_and_never_lent() {
        let (pool, held) = pool_to_a_silent_upstream().await;
        let len = |pool: &Pool| pool.idle.lock().unwrap().len();
        let t0 = Instant::now();
        for _ in 0..10 {
            let mut sender = pool.connect().await.unwrap();
            sender.ready().await.unwrap();
            pool.put_back(sender, t0);
        }
        let later = t0 + IDLE_TIMEOUT + Duration::from_secs(1);
        assert!(
            pool.checkout(later).is_none(),
            "an expired connection was lent"
        );
        assert_eq!(len(&pool), 10 - CLOSE_PER_CALL);
        // A connection put back now is the one lent, expired ones remaining.
        let mut fresh = pool.connect().await.unwrap();
        fresh.ready().await.unwrap();
        pool.put_back(fresh, later);
        assert_eq!(len(&pool), 10 - 2 * CLOSE_PER_CALL + 1);
        assert!(pool.checkout(later).is_some());
        assert!(pool.checkout(later).is_none());
        assert_eq!(len(&pool), 0);
        held.abort();
    }
}
