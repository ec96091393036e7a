//! API tokens on request: a user's own token, or (for an admin) another
//! user's, decided on the user the body names.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::audit::audit;
use super::users::target_user;
use super::{caller_org, read_optional_object, RequestCtx};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;

pub async fn issue_token(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    // No body asks for the caller's own token; a body must say what it means.
    let body = read_optional_object(state, req)
        .await?
        .unwrap_or_else(|| json!({}));
    let named = match body.get("userId") {
        None => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.as_str()),
        Some(_) => {
            return Err(ApiError::bad_param(
                Reason::InvalidParameter,
                "userId",
                "must be a non-empty string",
            ))
        }
    };
    let user = match (named, ctx.caller.user_id.as_deref()) {
        // Oneself: every role may.
        (None, Some(me)) => {
            ctx.authorize("getBintuToken", "User", me, caller_org(ctx)?)?;
            state
                .store
                .user(me)
                .await?
                .ok_or(ApiError::UnknownPrincipal(Reason::UnknownUser))?
        }
        (Some(id), Some(me)) if id == me => {
            ctx.authorize("getBintuToken", "User", me, caller_org(ctx)?)?;
            state
                .store
                .user(me)
                .await?
                .ok_or(ApiError::UnknownPrincipal(Reason::UnknownUser))?
        }
        (Some(_), _) => target_user(state, ctx, &body, "issueUserToken").await?,
        (None, None) => {
            return Err(ApiError::bad_param(
                Reason::MissingParameter,
                "userId",
                "Parameter required",
            ))
        }
    };
    let token = crate::authn::token::mint_for_user(
        &state.tokens,
        &state.settings.master_secret,
        &user,
        crate::clock::unix_now(),
    )?;
    if ctx.caller.user_id.as_deref() != Some(user.id.as_str()) {
        audit(state, ctx, "issueUserToken", &user.id, "ok", "").await;
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "token": token, "userId": user.id, "expiresIn": state.settings.token_ttl.as_secs() } }),
    ))
}
