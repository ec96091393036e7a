//! User management: list and read users, change a user's role, renew their
//! tokenKey, delete them. Each action is authorized by the same Cedar policies
//! as every other route (the route's decision, plus a second one on the
//! target user for routes whose target is named in the body).
//!
//! Every change to a user renews or removes their tokenKey and drops their
//! cache entry, so it bites on their next request; every admin change is
//! audited (`api::audit`). No token, key or password is ever logged or audited.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use super::audit::audit;
use super::permissions::{role_json, valid_role};
use super::receipt;
use super::{caller_org, query_param, read_json, RequestCtx};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;
use crate::store::{self, StoreError, User};

/// A non-secret fingerprint of a tokenKey: it changes when the key is renewed,
/// which is what the user list's "token key" column is for, and reveals nothing
/// of the key itself.
pub fn token_key_fingerprint(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "permission": u.role,
        "tokenKey": token_key_fingerprint(&u.token_key),
        "createdAt": rfc3339(u.created_at),
    })
}

/// The user a body names (`userId` or `id`), checked against the caller's
/// organisation by a Cedar decision of `action` on that user.
pub async fn target_user(
    state: &AppState,
    ctx: &RequestCtx,
    body: &Value,
    action: &str,
) -> Result<User, ApiError> {
    let id = body
        .get("userId")
        .or_else(|| body.get("id"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_param(Reason::MissingParameter, "userId", "Parameter required")
        })?;
    let own = caller_org(ctx)?;
    let user = state.store.user(id).await?;
    // An unknown id is judged in the caller's own organisation: allowed callers
    // learn it does not exist (404), others are denied as for any user.
    let org = user.as_ref().map(|u| u.org_id.as_str()).unwrap_or(own);
    ctx.authorize(action, "User", id, org)?;
    user.ok_or(ApiError::NotFound(Reason::NoSuchUser))
}

/// The role a body names, as `permission` (the platform's word) or `role`.
pub fn role_field(body: &Value) -> Result<String, ApiError> {
    body.get("permission")
        .or_else(|| body.get("role"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_param(Reason::MissingParameter, "permission", "Parameter required")
        })
}

pub async fn list(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let org = caller_org(ctx)?;
    let role = query_param(&req, "role")?;
    if let Some(r) = &role {
        valid_role(&ctx.snapshot, r)?;
    }
    let users = state.store.list_users(org, role.as_deref()).await?;
    let data: Vec<Value> = users.iter().map(user_json).collect();
    Ok(json_response(StatusCode::OK, &json!({ "data": data })))
}

pub async fn get(state: &AppState, ctx: &RequestCtx) -> Result<Response<LocalBody>, ApiError> {
    let id = ctx.param("id").unwrap_or("");
    let user = state
        .store
        .user(id)
        .await?
        .ok_or(ApiError::NotFound(Reason::NoSuchUser))?;
    let mut body = user_json(&user);
    body["role"] = role_json(&ctx.snapshot, &user.role);
    Ok(json_response(StatusCode::OK, &json!({ "data": body })))
}

pub async fn change_role(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let wait = receipt::wait_param(&req)?;
    let body = read_json(state, req).await?;
    let role = role_field(&body)?;
    valid_role(&ctx.snapshot, &role)?;
    let user = target_user(state, ctx, &body, "editUserRole").await?;
    // A role change renews the tokenKey: every earlier API token of the user dies.
    let result = state
        .store
        .set_role(&user.id, &role, &store::random_key())
        .await;
    state.cache.invalidate_user(&user.id);
    match result {
        Ok(u) => {
            audit(
                state,
                ctx,
                "editUserRole",
                &u.id,
                "ok",
                &format!("{} -> {}", user.role, role),
            )
            .await;
            Ok(changed(json!({ "data": user_json(&u) }), state, wait).await)
        }
        Err(e) => {
            audit(
                state,
                ctx,
                "editUserRole",
                &user.id,
                "refused",
                &e.to_string(),
            )
            .await;
            Err(e.into())
        }
    }
}

pub async fn renew(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let wait = receipt::wait_param(&req)?;
    let body = read_json(state, req).await?;
    let user = target_user(state, ctx, &body, "resetUserToken").await?;
    let result = state
        .store
        .set_token_key(&user.id, &store::random_key())
        .await;
    state.cache.invalidate_user(&user.id);
    let u = result?;
    audit(state, ctx, "resetUserToken", &u.id, "ok", "").await;
    Ok(changed(json!({ "data": user_json(&u) }), state, wait).await)
}

pub async fn delete(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let wait = receipt::wait_param(&req)?;
    // The route already decided `deleteUser` on this user (in their organisation).
    let id = ctx.param("id").unwrap_or("").to_owned();
    let result = state.store.delete_user(&id).await;
    state.cache.invalidate_user(&id);
    match result {
        Ok(u) => {
            audit(state, ctx, "deleteUser", &u.id, "ok", &u.role).await;
            Ok(changed(
                json!({ "data": { "id": u.id, "deleted": true } }),
                state,
                wait,
            )
            .await)
        }
        Err(e) => {
            if !matches!(e, StoreError::NotFound(_)) {
                audit(state, ctx, "deleteUser", &id, "refused", &e.to_string()).await;
            }
            Err(e.into())
        }
    }
}

/// The 200 answer to a change, with its receipt when one was asked for.
async fn changed(
    mut body: Value,
    state: &AppState,
    wait: Option<std::time::Duration>,
) -> Response<LocalBody> {
    if let Some(r) = receipt::after_change(state, wait).await {
        body["propagation"] = r;
    }
    json_response(StatusCode::OK, &body)
}
