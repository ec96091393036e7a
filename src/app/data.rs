//! The data listener's pipeline: one request through the doors that share
//! the listener.
//!
//! ```text
//! ready? ─► target normal form ─► body limit ─┬─ dashboard prefix ─► dashboard (public files, never forwarded)
//!                                             ├─ forward-auth path, trusted peer ─► forward_auth
//!                                             ├─ passthrough setting ─► proxy (benchmarks only)
//!                                             ├─ guarded playback prefix ─► Decider::play ─► proxy
//!                                             └─ Decider::decide ─┬─ Forward(Allowed) ─► proxy
//!                                                                 └─ Local ─► api (management API)
//! ```
//!
//! Every failure becomes a response in one place ([`DataListener::handle`]),
//! through `ApiError`'s one mapping, and is counted once. Nothing here
//! decides: it only routes between the decision core and the doors.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::api::RequestCtx;
use crate::decision::{Question, Verdict};
use crate::error::ApiError;
use crate::metrics::Door;
use crate::proxy::{self, Proxy, ProxyBody};
use crate::reason::Reason;
use crate::request::client_addr::{self, Client};
use crate::state::AppState;

pub struct DataListener {
    state: Arc<AppState>,
    proxy: Proxy,
}

impl DataListener {
    pub fn new(state: Arc<AppState>, proxy: Proxy) -> Self {
        DataListener { state, proxy }
    }

    /// The whole request path. Never panics, never fails open.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let request_id = self.state.next_request_id();
        if let Some(otel) = &self.state.otel {
            // Traces on: the same path inside the request's span (boxed, as
            // rare branches are below; off, this one branch is the whole cost).
            return Box::pin(self.handle_traced(otel, req, peer, request_id)).await;
        }
        let mut door = Door::Proxy;
        let result = self.route(req, peer, &request_id, &mut door).await;
        self.answer(result, door, &request_id)
    }

    /// [`DataListener::handle`] with traces on: the request's span around
    /// it, its parent the caller's `traceparent` only from a trusted peer.
    async fn handle_traced(
        &self,
        otel: &crate::otel::Tracing,
        req: Request<Incoming>,
        peer: SocketAddr,
        request_id: HeaderValue,
    ) -> Response<ProxyBody> {
        let trusted = client_addr::is_trusted(peer.ip(), &self.state.settings.trusted_proxies);
        let span = otel.request(
            req.method().as_str(),
            req.headers(),
            trusted,
            request_id.to_str().unwrap_or(""),
        );
        let mut door = Door::Proxy;
        let result = span
            .scope(self.route(req, peer, &request_id, &mut door))
            .await;
        span.finish(ApiError::trace_answer(door, &result, "allow"));
        self.answer(result, door, &request_id)
    }

    /// The response for a request's result; a failure is logged and counted here.
    fn answer(
        &self,
        result: Result<Response<ProxyBody>, ApiError>,
        door: Door,
        request_id: &HeaderValue,
    ) -> Response<ProxyBody> {
        match result {
            Ok(resp) => resp,
            Err(e) => {
                let (status, _, reason) = e.parts();
                if status.is_server_error() {
                    tracing::warn!(request_id = request_id.to_str().unwrap_or(""), error = %e, "request failed");
                } else {
                    tracing::debug!(request_id = request_id.to_str().unwrap_or(""), error = %e, "request refused");
                }
                self.state.metrics.count(
                    door,
                    if status == StatusCode::FORBIDDEN {
                        "deny"
                    } else {
                        "error"
                    },
                    reason,
                );
                e.into_response(Some(request_id)).map(Either::Right)
            }
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        request_id: &HeaderValue,
        door: &mut Door,
    ) -> Result<Response<ProxyBody>, ApiError> {
        let state = &self.state;
        if !state.is_ready() {
            return Err(ApiError::NotReady);
        }
        let trusted = &state.settings.trusted_proxies;
        let client_ip = client_addr::client_ip(peer.ip(), req.headers(), trusted);
        // A clone of the URI (a reference count) lets the path and query borrow
        // from it while `req` moves on: a normal path, the common case, then
        // costs no allocation here.
        let uri = req.uri().clone();
        let target = proxy::target(&uri)?;
        crate::request::head::check(req.version(), req.headers(), target.query)?;
        crate::request::head::check_authority(req.version(), req.uri(), req.headers())?;
        crate::request::head::check_declared_length(req.headers(), state.settings.max_body_bytes)?;

        // An HTTP/2 extended CONNECT (RFC 8441) is a WebSocket upgrade,
        // decided as a GET of its `:path` like HTTP/1.1's opening handshake.
        let over_h2 = crate::proxy::websocket_h2::is_extended_connect(&req);

        // The dashboard's pages are public files: answered here, before any
        // credential or route, and nothing under the prefix is ever forwarded
        // (an unknown path under it is a 404 from the dashboard itself).
        if let Some(prefix) = &state.settings.dashboard_prefix {
            if crate::dashboard::owns(prefix, &target.path) {
                return Ok(
                    crate::dashboard::serve(prefix, req.method(), &target.path).map(Either::Right)
                );
            }
        }

        // Forward-auth questions are only taken from trusted proxies; from
        // anyone else this path is an ordinary request (no route: denied).
        // An extended CONNECT is never a forward-auth question (its 200 would
        // open a tunnel): it goes the ordinary way.
        if target.path == crate::forward_auth::PATH
            && !over_h2
            && client_addr::is_trusted(peer.ip(), trusted)
        {
            *door = Door::ForwardAuth;
            // Rare branches are boxed: the request future is as large as its
            // largest branch, and hyper keeps one per open connection.
            return Box::pin(crate::forward_auth::handle(
                state,
                req.headers(),
                client_ip,
                request_id,
            ))
            .await
            .map(|r| r.map(Either::Right));
        }

        // A WebSocket upgrade: its handshake is checked before anything is
        // decided for it, and the live-connection epoch is read before the
        // decision (a revocation in between refuses the connection).
        let upgrade = if over_h2 {
            Some((
                crate::proxy::websocket_h2::check_handshake(&req)?,
                self.proxy.live_epoch(),
            ))
        } else if crate::proxy::websocket::asks_for_websocket(req.headers()) {
            Some((
                crate::proxy::websocket::check_handshake(&req)?,
                self.proxy.live_epoch(),
            ))
        } else {
            None
        };

        // What the upstream is told of the client, where rolegate forwards.
        let client = Client {
            ip: client_ip,
            origin: Some(client_addr::origin(
                client_addr::is_trusted(peer.ip(), trusted),
                req.headers(),
                req.uri(),
                state.settings.tls.is_some(),
            )),
        };

        if let Some(allowed) = state.decider.passthrough() {
            return self
                .pass_on(
                    req,
                    upgrade,
                    &target.path_and_query,
                    &allowed,
                    request_id,
                    &client,
                )
                .await;
        }

        let question = Question {
            method: if over_h2 {
                "GET"
            } else {
                req.method().as_str()
            },
            path: &target.path,
            query: target.query,
            headers: req.headers(),
            client_ip,
            request_id,
            door: Door::Proxy,
        };

        // Playback prefix: decided with the playback token's facts. rolegate's
        // own routes (e.g. POST /playback/token) win over the prefix; only
        // paths under it pay for that extra route lookup.
        if let Some(prefix) = &state.settings.playback_prefix {
            if crate::request::path::is_under_prefix(&target.path, prefix)
                && state
                    .policies
                    .current()
                    .routes
                    .find(question.method, &target.path)
                    .is_none()
            {
                let allowed = Box::pin(state.decider.play(&question, prefix)).await?;
                return self
                    .pass_on(
                        req,
                        upgrade,
                        &target.path_and_query,
                        &allowed,
                        request_id,
                        &client,
                    )
                    .await;
            }
        }

        let local = match state.decider.decide(&question).await? {
            Verdict::Forward(allowed) => {
                let resp = self
                    .pass_on(
                        req,
                        upgrade,
                        &target.path_and_query,
                        &allowed,
                        request_id,
                        &client,
                    )
                    .await?;
                state.metrics.count_forwarded(Door::Proxy);
                return Ok(resp);
            }
            // rolegate's own endpoints take no WebSocket; a 200 here would
            // read as an open tunnel to an HTTP/2 client, so it is refused.
            Verdict::Local(_) if over_h2 => {
                return Err(ApiError::bad_request(
                    Reason::WebSocketHandshake,
                    "rolegate's own endpoints take no WebSocket",
                ))
            }
            Verdict::Local(local) => local,
        };
        let ctx = RequestCtx::new(
            local,
            request_id.clone(),
            client_ip,
            target.path.into_owned(),
        );
        let resp = Box::pin(crate::api::dispatch(state, ctx, req)).await?;
        state.metrics.count(Door::Proxy, "allow", Reason::Local);
        Ok(resp.map(Either::Right))
    }

    /// Forward an allowed request, or relay it as a WebSocket when it asked
    /// for one (its checked handshake and the epoch read before deciding).
    async fn pass_on(
        &self,
        req: Request<Incoming>,
        upgrade: Option<(crate::proxy::websocket::Handshake, u64)>,
        path_and_query: &str,
        allowed: &crate::decision::Allowed,
        request_id: &HeaderValue,
        client: &Client,
    ) -> Result<Response<ProxyBody>, ApiError> {
        match upgrade {
            Some((handshake, seen)) => {
                Box::pin(self.proxy.upgrade(
                    req,
                    handshake,
                    seen,
                    path_and_query,
                    allowed,
                    request_id,
                    client,
                ))
                .await
            }
            // Boxed: the exchange with the upstream is the largest part of
            // the request's future (~2.3 KiB), and every layer above holds
            // it and is moved as a whole as it is awaited; a pointer here
            // makes those moves small, for one copy into the box.
            None => {
                Box::pin(
                    self.proxy
                        .forward(req, path_and_query, allowed, request_id, client),
                )
                .await
            }
        }
    }
}
