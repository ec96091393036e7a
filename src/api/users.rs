//! User management on the data listener: the platform's user-management
//! actions as an API, each authorized by the same Cedar policies as every
//! other route (the route's decision, plus a second one on the target user for
//! routes whose target is named in the body).
//!
//! Every change to a user renews or removes their tokenKey and drops their
//! cache entry, so it bites on their next request; every admin change is
//! audited (store + log). No token, key or password is ever logged or audited.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use super::RequestCtx;
use crate::api::read_json;
use crate::authn::credential::CredentialKind;
use crate::authn::password::{self, MIN_PASSWORD_LEN};
use crate::authz::entities::{self, RequestFacts};
use crate::authz::routes::Endpoint;
use crate::authz::PolicySnapshot;
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;
use crate::store::{self, AuditFilter, NewAudit, StoreError, User};


/// A non-secret fingerprint of a tokenKey: it changes when the key is renewed,
/// which is what the user list's "token key" column is for, and reveals nothing
/// of the key itself.
pub fn token_key_fingerprint(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "permission": u.role,
        "tokenKey": token_key_fingerprint(&u.token_key),
        "createdAt": rfc3339(u.created_at),
    })
}

fn caller_org(ctx: &RequestCtx) -> Result<&str, ApiError> {
    ctx.caller
        .org
        .as_deref()
        .ok_or(ApiError::Denied(Reason::NoOrganisation))
}

async fn audit(
    state: &AppState,
    ctx: &RequestCtx,
    action: &str,
    target: &str,
    outcome: &str,
    detail: &str,
) {
    let org = ctx.caller.org.as_deref().unwrap_or("");
    tracing::info!(
        request_id = ctx.request_id(),
        actor = %ctx.caller.actor(),
        action,
        target,
        outcome,
        detail,
        "audit"
    );
    let record = NewAudit {
        org_id: org.to_owned(),
        actor: ctx.caller.actor(),
        action: action.to_owned(),
        target: target.to_owned(),
        outcome: outcome.to_owned(),
        request_id: ctx.request_id().to_owned(),
        detail: detail.to_owned(),
    };
    if let Err(e) = state.store.append_audit(record).await {
        tracing::error!(error = %e, action, "audit record could not be written");
    }
}

/// The user a body names (`userId` or `id`), checked against the caller's
/// organisation by a Cedar decision of `action` on that user.
async fn target_user(
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
fn role_field(body: &Value) -> Result<String, ApiError> {
    body.get("permission")
        .or_else(|| body.get("role"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_param(Reason::MissingParameter, "permission", "Parameter required")
        })
}

fn valid_role(snapshot: &PolicySnapshot, role: &str) -> Result<(), ApiError> {
    if snapshot.has_role(role) {
        return Ok(());
    }
    let roles: Vec<&String> = snapshot.roles.keys().collect();
    Err(ApiError::BadRequest {
        reason: Reason::UnknownRole,
        message: format!("Unknown role `{role}`"),
        userinfo: json!({ "parameter": "permission", "valid": roles }),
    })
}

/// The actions a role may take, computed by asking the live policies about a
/// member of that role acting on a resource of each action's type in its own organisation.
pub fn permissions_of(snapshot: &PolicySnapshot, role: &str) -> Vec<String> {
    let org = "permission-probe-org";
    let facts = RequestFacts {
        method: "GET",
        path: "/",
        credential: CredentialKind::UserToken,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tag_filter: true,
    };
    let mut allowed = Vec::new();
    for name in snapshot.action_names() {
        let Some(action) = snapshot.action(name) else {
            continue;
        };
        let principals: Vec<String> = snapshot
            .schema
            .principals_for_action(action)
            .map(|ts| ts.map(|t| t.to_string()).collect())
            .unwrap_or_default();
        if !principals.iter().any(|p| p == "User") {
            continue;
        }
        let types: Vec<String> = snapshot
            .schema
            .resources_for_action(action)
            .map(|ts| ts.map(|t| t.to_string()).collect())
            .unwrap_or_default();
        let any = types.iter().any(|t| {
            let principal = entities::user("permission-probe-user", role, org);
            let resource = entities::resource(t, "permission-probe-resource", org);
            snapshot
                .decide_as(
                    Some(role),
                    principal,
                    action,
                    resource,
                    snapshot.context(&facts),
                )
                .allowed
        });
        if any {
            allowed.push(name.to_owned());
        }
    }
    allowed
}

fn role_json(snapshot: &PolicySnapshot, name: &str) -> Value {
    let meta = snapshot.roles.get(name);
    json!({
        "name": name,
        "title": meta.map(|m| m.title.as_str()).unwrap_or(""),
        "description": meta.map(|m| m.description.as_str()).unwrap_or(""),
        "audiences": meta.map(|m| m.audiences.clone()).unwrap_or_default(),
        "permissions": permissions_of(snapshot, name),
    })
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_owned())
    })
}

/// The user-management handlers, by route handler name; `None`: not one of ours.
pub async fn dispatch(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Option<Result<Response<LocalBody>, ApiError>> {
    let out = match endpoint {
        Endpoint::UsersList => list(state, ctx, req).await,
        Endpoint::UsersGet => get(state, ctx).await,
        Endpoint::UsersRole => change_role(state, ctx, req).await,
        Endpoint::UsersTokenKey => renew(state, ctx, req).await,
        Endpoint::UsersDelete => delete(state, ctx).await,
        Endpoint::TokensIssue => issue_token(state, ctx, req).await,
        Endpoint::PermissionsGet => {
            let name = query_param(&req, "name");
            match name {
                Some(n) => valid_role(&ctx.snapshot, &n).map(|()| {
                    json_response(
                        StatusCode::OK,
                        &json!({ "data": role_json(&ctx.snapshot, &n) }),
                    )
                }),
                None => Err(ApiError::bad_param(
                    Reason::MissingParameter,
                    "name",
                    "Parameter required",
                )),
            }
        }
        Endpoint::PermissionsList => {
            let roles: Vec<Value> = ctx
                .snapshot
                .roles
                .keys()
                .map(|r| role_json(&ctx.snapshot, r))
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "data": roles })))
        }
        Endpoint::OrganisationGet => organisation(state, ctx).await,
        Endpoint::OrganisationWebhook => webhook(state, ctx, req).await,
        Endpoint::ApiKeyGet => Ok(json_response(
            StatusCode::OK,
            &json!({ "data": { "apiKey": null, "note": "the API key is stored only as a hash; rotate it (PUT /organisation/apikey) to obtain a new one" } }),
        )),
        Endpoint::ApiKeyRotate => rotate_key(state, ctx, true).await,
        Endpoint::PlayerKeyGet => player_key(state, ctx).await,
        Endpoint::PlayerKeyRotate => rotate_key(state, ctx, false).await,
        Endpoint::AuditList => audit_list(state, ctx, req).await,
        Endpoint::UsersInvite => invite(state, ctx, req).await,
        Endpoint::UsersInviteAccept => accept_invite(state, ctx, req).await,
        Endpoint::Login => login(state, ctx, req).await,
        Endpoint::Password => {
            // Always the same answer: whether the email exists is nobody's business.
            let _ = read_json(state, req).await;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "data": { "requested": true } }),
            ))
        }
        _ => return None,
    };
    Some(out)
}

async fn list(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let org = caller_org(ctx)?;
    let role = query_param(&req, "role");
    if let Some(r) = &role {
        valid_role(&ctx.snapshot, r)?;
    }
    let users = state.store.list_users(org, role.as_deref()).await?;
    let data: Vec<Value> = users.iter().map(user_json).collect();
    Ok(json_response(StatusCode::OK, &json!({ "data": data })))
}

async fn get(state: &AppState, ctx: &RequestCtx) -> Result<Response<LocalBody>, ApiError> {
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

async fn change_role(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
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
            Ok(json_response(
                StatusCode::OK,
                &json!({ "data": user_json(&u) }),
            ))
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

async fn renew(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let user = target_user(state, ctx, &body, "resetUserToken").await?;
    let result = state
        .store
        .set_token_key(&user.id, &store::random_key())
        .await;
    state.cache.invalidate_user(&user.id);
    let u = result?;
    audit(state, ctx, "resetUserToken", &u.id, "ok", "").await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": user_json(&u) }),
    ))
}

async fn delete(state: &AppState, ctx: &RequestCtx) -> Result<Response<LocalBody>, ApiError> {
    // The route already decided `deleteUser` on this user (in their organisation).
    let id = ctx.param("id").unwrap_or("").to_owned();
    let result = state.store.delete_user(&id).await;
    state.cache.invalidate_user(&id);
    match result {
        Ok(u) => {
            audit(state, ctx, "deleteUser", &u.id, "ok", &u.role).await;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "data": { "id": u.id, "deleted": true } }),
            ))
        }
        Err(e) => {
            if !matches!(e, StoreError::NotFound(_)) {
                audit(state, ctx, "deleteUser", &id, "refused", &e.to_string()).await;
            }
            Err(e.into())
        }
    }
}

async fn issue_token(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await.unwrap_or(Value::Null);
    let named = body.get("userId").and_then(Value::as_str);
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

async fn organisation(state: &AppState, ctx: &RequestCtx) -> Result<Response<LocalBody>, ApiError> {
    let org = state
        .store
        .org(caller_org(ctx)?)
        .await?
        .ok_or(ApiError::NotFound(Reason::NoSuchOrganisation))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "id": org.id, "name": org.name, "webhook": org.webhook, "createdAt": rfc3339(org.created_at) } }),
    ))
}

async fn webhook(
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

async fn player_key(state: &AppState, ctx: &RequestCtx) -> Result<Response<LocalBody>, ApiError> {
    let org = state
        .store
        .org(caller_org(ctx)?)
        .await?
        .ok_or(ApiError::NotFound(Reason::NoSuchOrganisation))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "playerKey": org.player_key } }),
    ))
}

async fn rotate_key(
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

async fn audit_list(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let filter = AuditFilter {
        target: query_param(&req, "user"),
        actor: query_param(&req, "actor"),
        action: query_param(&req, "action"),
        limit: query_param(&req, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0),
    };
    let records = state.store.list_audit(caller_org(ctx)?, &filter).await?;
    Ok(json_response(StatusCode::OK, &json!({ "data": records })))
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_param(Reason::MissingParameter, name, "Parameter required"))
}

async fn invite(
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

async fn accept_invite(
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
    let record = NewAudit {
        org_id: user.org_id.clone(),
        actor: format!("user:{}", user.id),
        action: "acceptInvite".to_owned(),
        target: user.id.clone(),
        outcome: "ok".to_owned(),
        request_id: ctx.request_id().to_owned(),
        detail: user.role.clone(),
    };
    if let Err(e) = state.store.append_audit(record).await {
        tracing::error!(error = %e, "audit record could not be written");
    }
    tracing::info!(request_id = ctx.request_id(), user = %user.id, role = %user.role, "invite accepted");
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "data": user_json(&user) }),
    ))
}

async fn login(
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
