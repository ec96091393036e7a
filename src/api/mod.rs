//! The management API: rolegate's own endpoints on the data listener, by the
//! endpoint the route table names. They run after the route's Cedar decision
//! (or, for routes whose resource is named in the body, make it themselves).

pub mod audit;
pub mod explain;
pub mod invites;
pub mod login;
pub mod organisation;
pub mod passwords;
pub mod permissions;
pub mod playback;
pub mod receipt;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use std::net::IpAddr;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use serde_json::Value;

use crate::authn::principal::Caller;
use crate::authz::decide::{decide_action, log_deny};
use crate::authz::entities::RequestFacts;
use crate::authz::routes::Endpoint;
use crate::authz::routes::Route;
use crate::authz::PolicySnapshot;
use crate::decision::Local;
use crate::error::{ApiError, LocalBody};
use crate::reason::Reason;
use crate::request::query::Query;
use crate::state::AppState;

/// Everything an endpoint gets about the request it answers.
pub struct RequestCtx {
    pub caller: Caller,
    pub endpoint: Endpoint,
    pub request_id: HeaderValue,
    pub client_ip: IpAddr,
    pub path: String,
    pub route: Arc<Route>,
    /// Path parameters of the matched route.
    pub params: Vec<(String, String)>,
    pub snapshot: Arc<PolicySnapshot>,
}

impl RequestCtx {
    pub fn new(local: Local, request_id: HeaderValue, client_ip: IpAddr, path: String) -> Self {
        RequestCtx {
            caller: local.caller,
            endpoint: local.endpoint,
            request_id,
            client_ip,
            path,
            route: local.route,
            params: local.params,
            snapshot: local.snapshot,
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    /// Decide `action` on a resource with the snapshot this request was
    /// decided with (the `{target}` routes decide here, on the body's user).
    pub fn authorize(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        resource_org: &str,
    ) -> Result<(), ApiError> {
        let facts = RequestFacts {
            method: self.route.method.as_str(),
            path: &self.path,
            credential: self.caller.kind,
            client_ip: self.client_ip,
            tag_filter: false,
        };
        let outcome = decide_action(
            &self.snapshot,
            &self.caller,
            action,
            resource_type,
            resource_id,
            resource_org,
            &facts,
        );
        if outcome.allowed {
            Ok(())
        } else {
            log_deny(
                self.request_id(),
                // The management API is served on the data listener only.
                crate::metrics::Door::Proxy.as_str(),
                &self.route,
                action,
                &format!("{resource_type}::\"{resource_id}\""),
                &self.caller,
                &outcome,
            );
            Err(ApiError::Denied(Reason::PolicyDeny))
        }
    }
}

/// Answer an allowed request for one of rolegate's own endpoints. The match
/// is exhaustive: an endpoint the route table can name always has its code.
pub async fn dispatch(
    state: &Arc<AppState>,
    ctx: RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let ctx = &ctx;
    match ctx.endpoint {
        Endpoint::UsersList => users::list(state, ctx, req).await,
        Endpoint::UsersGet => users::get(state, ctx).await,
        Endpoint::UsersRole => users::change_role(state, ctx, req).await,
        Endpoint::UsersTokenKey => users::renew(state, ctx, req).await,
        Endpoint::UsersDelete => users::delete(state, ctx, req).await,
        Endpoint::TokensIssue => tokens::issue_token(state, ctx, req).await,
        Endpoint::PermissionsGet => permissions::get(ctx, &req),
        Endpoint::PermissionsList => Ok(permissions::list(ctx)),
        Endpoint::OrganisationGet => organisation::organisation(state, ctx).await,
        Endpoint::OrganisationWebhook => organisation::webhook(state, ctx, req).await,
        Endpoint::ApiKeyGet => Ok(organisation::api_key()),
        Endpoint::ApiKeyRotate => organisation::rotate_key(state, ctx, true).await,
        Endpoint::PlayerKeyGet => organisation::player_key(state, ctx).await,
        Endpoint::PlayerKeyRotate => organisation::rotate_key(state, ctx, false).await,
        Endpoint::AuditList => audit::audit_list(state, ctx, req).await,
        Endpoint::UsersInvite => invites::invite(state, ctx, req).await,
        Endpoint::UsersInviteAccept => invites::accept_invite(state, ctx, req).await,
        Endpoint::Login => login::login(state, ctx, req).await,
        Endpoint::Password => passwords::set_password(state, ctx, req).await,
        Endpoint::PasswordResetCreate => passwords::create_reset(state, ctx, req).await,
        Endpoint::PolicyExplain => explain::explain(state, ctx, req).await,
        Endpoint::PlaybackIssue => playback::issue(state, ctx, req).await,
        Endpoint::PlaybackVerify => playback::verify_endpoint(state, req).await,
        Endpoint::PlaybackRevoke => playback::revoke(state, ctx, req).await,
        Endpoint::PlaybackJwks => playback::jwks(state).await,
        Endpoint::PlaybackKeyRotate => playback::rotate(state, ctx).await,
    }
}

pub(crate) fn caller_org(ctx: &RequestCtx) -> Result<&str, ApiError> {
    ctx.caller
        .org()
        .ok_or(ApiError::Denied(Reason::NoOrganisation))
}

/// A query parameter the endpoint acts on (see `request::query`): absent or
/// empty is `None`; given twice is a 400.
pub(crate) fn query_param(req: &Request<Incoming>, name: &str) -> Result<Option<String>, ApiError> {
    Query::new(req.uri().query())
        .single(name)
        .map(|v| v.map(std::borrow::Cow::into_owned))
        .map_err(|e| ApiError::bad_param(Reason::AmbiguousParameter, name, e.to_string()))
}

pub(crate) fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_param(Reason::MissingParameter, name, "Parameter required"))
}

/// A field the body may name in two ways (the platform's word and rolegate's):
/// whichever is given must be a non-empty string, and both given must agree.
pub(crate) fn aliased_field<'a>(
    body: &'a Value,
    name: &str,
    alias: &str,
) -> Result<&'a str, ApiError> {
    let read = |field: &str| match body.get(field) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::bad_param(
            Reason::InvalidParameter,
            field,
            "must be a non-empty string",
        )),
    };
    match (read(name)?, read(alias)?) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_param(
            Reason::AmbiguousParameter,
            name,
            format!("`{name}` and `{alias}` disagree"),
        )),
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Err(ApiError::bad_param(
            Reason::MissingParameter,
            name,
            "Parameter required",
        )),
    }
}

/// The request body, refusing bodies above `max_body_bytes`.
async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::{BodyExt, Limited};
    let limit = usize::try_from(state.settings.max_body_bytes).unwrap_or(usize::MAX);
    Ok(Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?
        .to_bytes())
}

fn invalid_body() -> ApiError {
    ApiError::bad_param(Reason::InvalidBody, "body", "Body must be a JSON object")
}

/// A request body as JSON, refusing bodies above `max_body_bytes`.
pub(crate) async fn read_json(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(&read_body(state, req).await?).map_err(|_| invalid_body())
}

/// An optional request body: none (empty, or only white space), or a JSON object.
pub(crate) async fn read_optional_object(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Option<serde_json::Value>, ApiError> {
    let bytes = read_body(state, req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        _ => Err(invalid_body()),
    }
}
