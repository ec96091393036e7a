//! The management API: rolegate's own endpoints on the data listener, by the
//! endpoint the route table names. They run after the route's Cedar decision
//! (or, for routes whose resource is named in the body, make it themselves).

pub mod playback;
pub mod users;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::authz::routes::Endpoint;
use crate::error::{ApiError, LocalBody};
use crate::proxy::RequestCtx;

pub async fn dispatch(
    state: &Arc<AppState>,
    ctx: RequestCtx,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let answered = match endpoint {
        Endpoint::PlaybackIssue
        | Endpoint::PlaybackVerify
        | Endpoint::PlaybackRevoke
        | Endpoint::PlaybackJwks
        | Endpoint::PlaybackKeyRotate => playback::dispatch(state, &ctx, endpoint, req).await,
        _ => crate::api::users::dispatch(state, &ctx, endpoint, req).await,
    };
    answered.unwrap_or(Err(ApiError::NotFound("endpoint")))
}

/// A request body as JSON, refusing bodies above `max_body_bytes`.
pub(crate) async fn read_json(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<serde_json::Value, ApiError> {
    use http_body_util::{BodyExt, Limited};
    let limit = usize::try_from(state.settings.max_body_bytes).unwrap_or(usize::MAX);
    let bytes = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::bad_param("invalid_body", "body", "Body must be a JSON object"))
}
