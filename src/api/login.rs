//! Logging in with email and password, which answers with an API token.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{read_json, str_field, RequestCtx};
use crate::authn::password::{self};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;

pub async fn login(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let email = str_field(&body, "email")?.to_owned();
    let password = str_field(&body, "password")?.to_owned();
    if state.login_throttle.is_blocked(&email, ctx.client_ip) {
        return Err(ApiError::TooManyRequests);
    }
    let user = state.store.user_by_email(&email).await?;
    let ok = password::verify(
        password,
        user.as_ref().and_then(|u| u.password_hash.clone()),
    )
    .await;
    let Some(user) = user.filter(|_| ok) else {
        state.login_throttle.failed(&email, ctx.client_ip);
        tracing::info!(request_id = ctx.request_id(), "login failed");
        return Err(ApiError::UnknownPrincipal(Reason::BadCredentials));
    };
    state.login_throttle.succeeded(&email, ctx.client_ip);
    let token = crate::authn::token::mint_for_user(
        &state.tokens,
        &state.settings.master_secret,
        &user,
        crate::clock::unix_now(),
    )?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "token": token, "userId": user.id, "orgId": user.org_id, "permission": user.role } }),
    ))
}
