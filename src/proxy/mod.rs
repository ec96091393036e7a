//! The proxy front door: what the data listener does to a request before and
//! after the decision core decides it: the target normalised once (what is
//! matched is what is forwarded), the body limit, and forwarding an allowed
//! request to the upstream ([`Proxy::forward`], which takes the [`Allowed`]
//! proof) through rolegate's own connection pool ([`upstream`]). The guarded
//! playback prefix (`request::path::is_under_prefix`) forwards through the same door.
//!
//! The pipeline that ties the data listener's doors together (proxy,
//! forward-auth, the management API) is `app::data`.

pub mod live;
pub mod upstream;
mod upstream_h2;
mod upstream_tls;
pub mod websocket;
pub mod websocket_h2;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::decision::forwarding;
use crate::decision::Allowed;
use crate::error::ApiError;
use crate::metrics::{Metrics, Stage};
use crate::reason::Reason;
use crate::request::client_addr::Client;
use crate::request::{path, REQUEST_ID_NAME};
use upstream::{Upstream, UpstreamBody};

pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// A request target in normal form, borrowed from the URI where it already was.
pub struct Target<'u> {
    /// The normalised path: matched, decided and forwarded.
    pub path: Cow<'u, str>,
    pub query: Option<&'u str>,
    /// What goes on the upstream request line.
    pub path_and_query: Cow<'u, str>,
}

/// Normalise a request's target once (see `request::path`); a path that
/// cannot be normalised safely is a 400.
pub fn target(uri: &Uri) -> Result<Target<'_>, ApiError> {
    let path = path::normalize(uri.path())?;
    let query = uri.query();
    let sent = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path_and_query: Cow<'_, str> = match (&path, query) {
        // A path normal as sent goes on as sent. Not so an absolute-form
        // target with an empty path (`http://h?q`): its path reads as `/`,
        // but what was sent is `?q`, so it is rebuilt like a changed path.
        (Cow::Borrowed(_), _) if sent.starts_with('/') => Cow::Borrowed(sent),
        (p, Some(q)) => Cow::Owned(format!("{p}?{q}")),
        (p, None) => Cow::Owned(p.to_string()),
    };
    Ok(Target {
        path,
        query,
        path_and_query,
    })
}

/// Forwarding to the upstream.
pub struct Proxy {
    upstream: Option<Upstream>,
    /// Pass the caller's credential headers on (setting `forward_credentials`).
    forward_credentials: bool,
    metrics: Arc<Metrics>,
    /// The WebSocket relay (`None`: upgrades are not relayed).
    websocket: Option<Arc<websocket::Relay>>,
}

impl Proxy {
    pub fn new(
        upstream: Option<Upstream>,
        forward_credentials: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Proxy {
            upstream,
            forward_credentials,
            metrics,
            websocket: None,
        }
    }

    /// Relay WebSocket upgrades through `relay`.
    pub fn with_websocket(mut self, relay: Arc<websocket::Relay>) -> Self {
        self.websocket = Some(relay);
        self
    }

    /// The live-connection epoch to read before deciding an upgrade
    /// (`live::Live::register`).
    pub fn live_epoch(&self) -> u64 {
        self.websocket.as_ref().map_or(0, |w| w.live().epoch())
    }

    /// Upgrade a request the decision core allowed to a relayed WebSocket
    /// (see [`websocket`]); decided at live epoch `seen`.
    #[allow(clippy::too_many_arguments)]
    pub async fn upgrade(
        &self,
        req: Request<Incoming>,
        handshake: websocket::Handshake,
        seen: u64,
        path_and_query: &str,
        allowed: &Allowed,
        request_id: &HeaderValue,
        client: &Client,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let relay = self
            .websocket
            .as_ref()
            .ok_or_else(|| ApiError::UpstreamUnreachable("no WebSocket relay".to_owned()))?;
        relay
            .upgrade(
                req,
                handshake,
                seen,
                path_and_query,
                allowed,
                request_id,
                client,
            )
            .await
    }

    /// Forward a request the decision core allowed: client-sent identity
    /// claims and hop-by-hop fields stripped, rolegate's identity headers set
    /// from `allowed`, the target replaced by its normal form.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        path_and_query: &str,
        allowed: &Allowed,
        request_id: &HeaderValue,
        client: &Client,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let upstream = self
            .upstream
            .as_ref()
            .ok_or_else(|| ApiError::UpstreamUnreachable("no upstream configured".to_owned()))?;
        if req.method() == Method::CONNECT {
            return Err(ApiError::Denied(Reason::MethodNotAllowed));
        }
        let headers = req.headers_mut();
        forwarding::strip_request(headers, self.forward_credentials);
        forwarding::set_identity(headers, allowed, request_id, client);
        // Traced, the upstream sees this span as its `traceparent`; untraced,
        // a caller's trace headers pass on as any other header does.
        let stage = crate::otel::stage(crate::otel::StageName::Upstream);
        stage.propagate(headers);
        let started = Instant::now();
        let sent = upstream.send(req, path_and_query).await;
        match &sent {
            Ok(r) => stage.set("http.response.status_code", i64::from(r.status().as_u16())),
            Err(_) => stage.fail("upstream failed"),
        }
        drop(stage);
        let mut resp = sent?;
        self.metrics
            .observe(Stage::Upstream, started.elapsed().as_secs_f64());
        resp.headers_mut()
            .insert(REQUEST_ID_NAME, request_id.clone());
        Ok(resp.map(Either::Left))
    }
}
