//! The organisation: its details, webhook, API key and player key.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::audit::audit;
use super::users::rfc3339;
use super::{caller_org, read_json, RequestCtx};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;

/// The caller's organisation as stored.
async fn own_org(state: &AppState, ctx: &RequestCtx) -> Result<crate::store::Org, ApiError> {
    state
        .store
        .org(caller_org(ctx)?)
        .await?
        .ok_or(ApiError::NotFound(Reason::NoSuchOrganisation))
}

pub async fn organisation(
    state: &AppState,
    ctx: &RequestCtx,
) -> Result<Response<LocalBody>, ApiError> {
    let org = own_org(state, ctx).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "id": org.id, "name": org.name, "webhook": org.webhook, "createdAt": rfc3339(org.created_at) } }),
    ))
}

pub async fn webhook(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let url = match body.get("webhook") {
        Some(Value::Null) => None,
        Some(Value::String(s)) if s.starts_with("http://") || s.starts_with("https://") => {
            Some(s.clone())
        }
        _ => {
            return Err(ApiError::bad_param(
                Reason::InvalidWebhook,
                "webhook",
                "webhook must be an http(s) URL or null",
            ))
        }
    };
    let org = caller_org(ctx)?;
    state.store.set_webhook(org, url.as_deref()).await?;
    audit(
        state,
        ctx,
        "setWebhook",
        org,
        "ok",
        url.as_deref().unwrap_or("(removed)"),
    )
    .await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "webhook": url } }),
    ))
}

pub async fn player_key(
    state: &AppState,
    ctx: &RequestCtx,
) -> Result<Response<LocalBody>, ApiError> {
    let org = own_org(state, ctx).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "playerKey": org.player_key } }),
    ))
}

pub async fn rotate_key(
    state: &AppState,
    ctx: &RequestCtx,
    api: bool,
) -> Result<Response<LocalBody>, ApiError> {
    let org = caller_org(ctx)?;
    let (action, field, key) = if api {
        (
            "rotateApiKey",
            "apiKey",
            state.store.rotate_api_key(org).await?,
        )
    } else {
        (
            "rotatePlayerKey",
            "playerKey",
            state.store.rotate_player_key(org).await?,
        )
    };
    state.cache.invalidate_keys();
    audit(state, ctx, action, org, "ok", "").await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { field: key } }),
    ))
}

/// `GET /organisation/apikey`: the key is stored only as a hash, so it cannot be shown again.
pub fn api_key() -> Response<LocalBody> {
    json_response(
        StatusCode::OK,
        &json!({ "data": { "apiKey": null, "note": "the API key is stored only as a hash; rotate it (PUT /organisation/apikey) to obtain a new one" } }),
    )
}
