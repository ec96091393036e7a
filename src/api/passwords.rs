//! Passwords without email: an admin creates a single-use, expiring reset
//! link for a user of their organisation (the token stored only as a hash, as
//! invites are), hands it over themselves, and the user sets a new password
//! through the page it opens. Setting it renews the user's tokenKey, so every
//! API token they held dies with the old password. rolegate sends no email.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::audit::{audit, record};
use super::users::{target_user, user_json};
use super::{read_json, str_field, RequestCtx};
use crate::authn::password::{self, MIN_PASSWORD_LEN};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;
use crate::store::{self, NewAudit, NewPasswordReset, StoreError};

/// `POST /user/password/reset {userId}`: a reset link's token, shown once.
pub async fn create_reset(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let user = target_user(state, ctx, &body, "createPasswordReset").await?;
    let token = store::random_token("pwr_");
    let expires_at = crate::clock::unix_now() + state.settings.password_reset_ttl.as_secs();
    let id = state
        .store
        .create_password_reset(NewPasswordReset {
            org_id: user.org_id.clone(),
            user_id: user.id.clone(),
            token_hash: store::key_hash(&token),
            created_by: ctx.caller.actor(),
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
        })
        .await?;
    audit(state, ctx, "createPasswordReset", &user.id, "ok", &id).await;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "data": { "resetId": id, "userId": user.id, "token": token, "expiresAt": expires_at } }),
    ))
}

/// The login throttle's slot for bad reset links (no email holds a NUL).
const RESET_SLOT: &str = "\u{0}password-reset";

/// `POST /user/password {token, password}`: use a reset link. The answer for
/// a bad token is the same whether it never existed, was used or expired
/// apart from the word saying which, none of which names a user.
pub async fn set_password(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let token = str_field(&body, "token")?;
    let new_password = str_field(&body, "password")?;
    if new_password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_param(
            Reason::WeakPassword,
            "password",
            format!("password must have at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    // The password is hashed before the link is checked (one transaction
    // checks and uses it), so an address sending bad links is throttled as
    // logins are: otherwise anyone could make rolegate hash at will.
    if state.login_throttle.is_blocked(RESET_SLOT, ctx.client_ip) {
        return Err(ApiError::TooManyRequests);
    }
    let password_hash = password::hash_off_thread(new_password.to_owned())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
    let user = match state
        .store
        .use_password_reset(
            &store::key_hash(token),
            now,
            &password_hash,
            &store::random_key(),
        )
        .await
    {
        Ok(user) => user,
        Err(e @ StoreError::ResetRefused(_)) => {
            state.login_throttle.failed(RESET_SLOT, ctx.client_ip);
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    // The renewed tokenKey must bite on the user's very next request.
    state.cache.invalidate_user(&user.id);
    record(
        state,
        NewAudit {
            org_id: user.org_id.clone(),
            actor: format!("user:{}", user.id),
            action: "resetPassword".to_owned(),
            target: user.id.clone(),
            outcome: "ok".to_owned(),
            request_id: ctx.request_id().to_owned(),
            detail: String::new(),
        },
    )
    .await;
    tracing::info!(request_id = ctx.request_id(), user = %user.id, "password reset used");
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": user_json(&user) }),
    ))
}
