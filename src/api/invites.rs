//! Invites: an admin picks a role and gets a single-use, expiring link; the
//! invitee accepts it to become a user of the organisation with that role.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::audit::{audit, record};
use super::permissions::valid_role;
use super::users::{role_field, user_json};
use super::{caller_org, read_json, str_field, RequestCtx};
use crate::authn::password::{self, MIN_PASSWORD_LEN};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;
use crate::store::{self, NewAudit};

pub async fn invite(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let role = role_field(&body)?;
    valid_role(&ctx.snapshot, &role)?;
    let org = caller_org(ctx)?;
    let token = store::random_token("inv_");
    let expires_at = crate::clock::unix_now() + state.settings.invite_ttl.as_secs();
    let id = state
        .store
        .create_invite(store::NewInvite {
            org_id: org.to_owned(),
            role: role.clone(),
            token_hash: store::key_hash(&token),
            created_by: ctx.caller.actor(),
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
        })
        .await?;
    audit(state, ctx, "inviteUser", &id, "ok", &role).await;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "data": { "inviteId": id, "token": token, "role": role, "expiresAt": expires_at } }),
    ))
}

pub async fn accept_invite(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let token = str_field(&body, "token")?;
    let email = str_field(&body, "email")?;
    let password = str_field(&body, "password")?;
    if !email.contains('@') {
        return Err(ApiError::bad_param(
            Reason::InvalidEmail,
            "email",
            "email is not an address",
        ));
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_param(
            Reason::WeakPassword,
            "password",
            format!("password must have at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    let password_hash = password::hash_off_thread(password.to_owned())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let now = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
    let user = state
        .store
        .accept_invite(
            &store::key_hash(token),
            now,
            store::NewUser {
                org_id: String::new(),
                email: email.to_owned(),
                role: String::new(),
                password_hash: Some(password_hash),
            },
        )
        .await?;
    // A cached "unknown id" must not outlive the user's creation.
    state.cache.invalidate_user(&user.id);
    // The invitee is the actor: they accepted, no admin acted.
    record(
        state,
        NewAudit {
            org_id: user.org_id.clone(),
            actor: format!("user:{}", user.id),
            action: "acceptInvite".to_owned(),
            target: user.id.clone(),
            outcome: "ok".to_owned(),
            request_id: ctx.request_id().to_owned(),
            detail: user.role.clone(),
        },
    )
    .await;
    tracing::info!(request_id = ctx.request_id(), user = %user.id, role = %user.role, "invite accepted");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "data": user_json(&user) }),
    ))
}
