//! HTTP/2 to the upstream (`upstream_http2 = true`): one multiplexed
//! connection, redialled when it closes. Over TLS the protocol is chosen by
//! ALPN (`h2` only is offered); on `http://` it is prior knowledge (h2c),
//! which the upstream must accept.
//!
//! Unlike the HTTP/1.1 pool, a connection carries many exchanges at once, so
//! there is no free list: every request clones the one `SendRequest` handle,
//! and response bodies need no hand-back.

use std::sync::{Mutex, PoisonError};

use http::uri::{Authority, Parts, Scheme};
use http::{header, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::upstream::UpstreamError;
use super::upstream_tls::Dialer;

/// Tries per request: a connection that closed (GOAWAY) before a request was
/// written hands it back unsent, and it goes once more on a new connection.
const ATTEMPTS: usize = 2;

pub struct H2 {
    scheme: Scheme,
    authority: Authority,
    /// The live connection's handle; `None` before the first request or
    /// after it closed.
    current: Mutex<Option<SendRequest<Incoming>>>,
    /// One dial at a time: a burst on a cold pool opens one connection.
    dialing: tokio::sync::Mutex<()>,
}

impl H2 {
    pub fn new(base: &Uri) -> Result<Self, UpstreamError> {
        let authority = base
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamError::Address("upstream has no authority".to_owned()))?;
        let scheme = base.scheme().cloned().unwrap_or(Scheme::HTTP);
        Ok(H2 {
            scheme,
            authority,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
        })
    }

    fn live(&self) -> Option<SendRequest<Incoming>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn sender(
        &self,
        dialer: &Dialer,
    ) -> Result<(SendRequest<Incoming>, bool), UpstreamError> {
        if let Some(s) = self.live() {
            return Ok((s, false));
        }
        let _one = self.dialing.lock().await;
        if let Some(s) = self.live() {
            return Ok((s, false));
        }
        let io = dialer.dial().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                UpstreamError::Unreachable(format!("HTTP/2 handshake with {}: {e}", dialer.addr()))
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok((sender, true))
    }

    /// Send `req` (its target in origin form, already normalised) over the
    /// shared connection. The target gets the upstream's scheme and
    /// authority (`:scheme`, `:authority`); `Host` is dropped, as HTTP/2
    /// carries it in `:authority`.
    pub async fn send(
        &self,
        dialer: &Dialer,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut parts = Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from_parts(parts)
            .map_err(|e| UpstreamError::Address(format!("bad upstream uri: {e}")))?;
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = http::Version::HTTP_2;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The shared connection is up but for the first request (or
            // after it closed): the dial's future is boxed so that it is
            // not part of every request's (see `Upstream::exchange`).
            let (mut sender, fresh) = match self.live() {
                Some(s) => (s, false),
                None => Box::pin(self.sender(dialer)).await?,
            };
            sender
                .ready()
                .await
                .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh && attempt < ATTEMPTS => {
                        self.forget();
                        req = unsent;
                    }
                    _ => return Err(UpstreamError::Unreachable(e.into_error().to_string())),
                },
            }
        }
    }

    /// Drop the cached handle if its connection has closed (another request
    /// may have redialled already: a live one stays).
    fn forget(&self) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|s| s.is_closed()) {
            *current = None;
        }
    }
}
