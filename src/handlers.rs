//! rolegate's own endpoints on the data listener, by the `handler` name the
//! route table gives them. They run after the route's Cedar decision (or, for
//! routes whose resource is named in the body, make it themselves).

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::error::{ApiError, LocalBody};
use crate::proxy::{ProxyBody, RequestCtx};

pub async fn dispatch(
    _state: &Arc<AppState>,
    ctx: RequestCtx,
    _req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    tracing::debug!(handler = %ctx.route.handler, "no handler for route");
    Err(ApiError::NotFound("endpoint"))
}

/// A request on the guarded playback prefix.
pub async fn guarded_playback(
    _state: &Arc<AppState>,
    _req: Request<Incoming>,
    _path: &str,
    _path_and_query: &str,
    _request_id: &HeaderValue,
    _client_ip: IpAddr,
) -> Result<Response<ProxyBody>, ApiError> {
    Err(ApiError::UnknownPrincipal("playback_token_required"))
}
