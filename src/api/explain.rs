//! `POST /policy/explain`: the dashboard's policy playground. The same
//! decision function as `rolegate explain`, on the live policy snapshot, for
//! a role or a user of the caller's organisation; nothing is forwarded.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{caller_org, read_json, str_field, RequestCtx};
use crate::error::{json_response, ApiError, LocalBody};
use crate::policy_tools::{explain, testing};
use crate::reason::Reason;
use crate::state::AppState;

pub async fn explain(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let method = str_field(&body, "method")?.to_ascii_uppercase();
    let path = str_field(&body, "path")?.to_owned();
    if !path.starts_with('/') {
        return Err(ApiError::bad_param(
            Reason::InvalidParameter,
            "path",
            "path must start with `/`",
        ));
    }
    // A user is asked about at their current role, and only within the
    // caller's own organisation.
    // Exactly one of `role` and `userId`: a second one would be ignored
    // whatever it held, and a `userId` that is not a string is refused rather
    // than passed over for `role`.
    let user_id = match body.get("userId") {
        None => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.as_str()),
        Some(_) => {
            return Err(ApiError::bad_param(
                Reason::InvalidParameter,
                "userId",
                "userId must be a non-empty string",
            ))
        }
    };
    if user_id.is_some() && body.get("role").is_some() {
        return Err(ApiError::bad_param(
            Reason::AmbiguousParameter,
            "role",
            "give either `role` or `userId`, not both",
        ));
    }
    let (role, user) = match user_id {
        Some(id) => {
            let user = state
                .store
                .user(id)
                .await?
                .filter(|u| Some(u.org_id.as_str()) == Some(caller_org(ctx).unwrap_or("")))
                .ok_or(ApiError::NotFound(Reason::NoSuchUser))?;
            (user.role.clone(), Some(user.id))
        }
        None => (str_field(&body, "role")?.to_owned(), None),
    };
    super::permissions::valid_role(&ctx.snapshot, &role)?;
    let probe = testing::Probe {
        caller: testing::CallerSpec::Role(role.clone()),
        method,
        target: path,
        other_org: false,
    };
    let ex = testing::evaluate(&ctx.snapshot, &probe)
        .map_err(|e| ApiError::bad_param(Reason::InvalidParameter, "path", e.to_string()))?;
    let route = ex.route.as_ref();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": {
            "role": role,
            "userId": user,
            "allowed": ex.allowed(),
            "route": route.map(|r| format!("{} {} (handler `{}`)", r.method, r.template, r.handler)),
            "action": route.map(|r| r.action.clone()),
            "resource": route.map(|_| ex.resource.clone()),
            "policies": ex.outcome.policies,
            "errors": ex.outcome.errors,
            "explanation": explain::render(&probe, &ex),
        }}),
    ))
}
