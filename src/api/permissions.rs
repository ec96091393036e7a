//! The permission overview: what each role may do, computed from the live
//! policies (never written by hand twice).

use std::net::{IpAddr, Ipv4Addr};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{query_param, RequestCtx};
use crate::authn::credential::CredentialKind;
use crate::authz::entities::{self, RequestFacts};
use crate::authz::PolicySnapshot;
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;

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

pub fn role_json(snapshot: &PolicySnapshot, name: &str) -> Value {
    let meta = snapshot.roles.get(name);
    json!({
        "name": name,
        "title": meta.map(|m| m.title.as_str()).unwrap_or(""),
        "description": meta.map(|m| m.description.as_str()).unwrap_or(""),
        "audiences": meta.map(|m| m.audiences.clone()).unwrap_or_default(),
        "permissions": permissions_of(snapshot, name),
    })
}

pub fn valid_role(snapshot: &PolicySnapshot, role: &str) -> Result<(), ApiError> {
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

/// `GET /permission?name=ROLE`: one role's overview.
pub fn get(ctx: &RequestCtx, req: &Request<Incoming>) -> Result<Response<LocalBody>, ApiError> {
    let name = query_param(req, "name")?.ok_or_else(|| {
        ApiError::bad_param(Reason::MissingParameter, "name", "Parameter required")
    })?;
    valid_role(&ctx.snapshot, &name)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": role_json(&ctx.snapshot, &name) }),
    ))
}

/// `GET /permission/list`: every role of the live catalogue.
pub fn list(ctx: &RequestCtx) -> Response<LocalBody> {
    let roles: Vec<Value> = ctx
        .snapshot
        .roles
        .keys()
        .map(|r| role_json(&ctx.snapshot, r))
        .collect();
    json_response(StatusCode::OK, &json!({ "data": roles }))
}
