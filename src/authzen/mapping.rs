//! From an AuthZEN evaluation to rolegate's decision, in two profiles chosen
//! by the resource's type:
//!
//! - **API gateway** (`resource.type` = `route`): "may the bearer of this
//!   credential send METHOD PATH?". The subject carries the caller's
//!   credential (`token`, `apikey`, `playerkey`, `playback` on the guarded
//!   playback prefix; or `anonymous`), and/or
//!   `context.headers` the original request's headers; `action.name` is the
//!   method, `resource.id` the path (and query). Decided by
//!   [`Decider::decide`](crate::decision::Decider::decide), the proxy's own
//!   path: the same credential rules, route table and policies.
//! - **Cedar** (any other type, which must be an entity type of the schema):
//!   "may user U perform action A on resource R?". The subject is a `user`
//!   (id or email), at the role and organisation the store holds now; the
//!   action a Cedar action id; decided by [`decide_action`], the step every
//!   route decision ends in.
//!
//! Any doubt is a deny with a reason. A fault (the store unreachable) is an
//! error, not a decision.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::authn::credential;
use crate::authn::principal::Caller;
use crate::authz::decide::decide_action;
use crate::authz::entities::RequestFacts;
use crate::authz::PolicySnapshot;
use crate::decision::{Explanation, Question, Verdict};
use crate::error::ApiError;
use crate::reason::Reason;
use crate::request::{head, path};
use crate::state::AppState;
use crate::store::ADMIN_ROLE;

use super::wire::Evaluation;

/// The resource type of the API-gateway profile.
pub const ROUTE: &str = "route";
/// Most headers `context.headers` may carry (hyper's own cap on a request).
const MAX_HEADERS: usize = 100;

/// One evaluation's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub allowed: bool,
    pub reason: Reason,
    /// What the proxy would answer the same request with (gateway profile):
    /// 200 on allow, its 400/401/403 on deny.
    pub status: Option<u16>,
    /// The determining policies, for admin subjects only.
    pub policies: Option<Vec<String>>,
}

impl Answer {
    fn deny(reason: Reason) -> Self {
        Answer {
            allowed: false,
            reason,
            status: None,
            policies: None,
        }
    }

    fn deny_as(reason: Reason, status: u16) -> Self {
        Answer {
            status: Some(status),
            ..Answer::deny(reason)
        }
    }
}

/// Who is asking on whose behalf, beyond the evaluation itself.
pub struct Asker<'a> {
    /// The PEP's address: the client address when the subject names none.
    pub pep_ip: IpAddr,
    pub request_id: &'a HeaderValue,
}

/// Decide one evaluation. `Err` only for faults (5xx), never for a deny.
pub async fn evaluate(
    state: &AppState,
    ev: &Evaluation,
    asker: &Asker<'_>,
) -> Result<Answer, ApiError> {
    let client_ip = match ev.subject.property("ip_address") {
        None => asker.pep_ip,
        Some(v) => match v.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
            Some(ip) => ip,
            None => return Ok(Answer::deny(Reason::InvalidParameter)),
        },
    };
    if ev.resource.kind == ROUTE {
        route_profile(state, ev, client_ip, asker.request_id).await
    } else {
        cedar_profile(state, ev, client_ip, asker.request_id).await
    }
}

fn is_admin(caller: &Caller) -> bool {
    caller.role() == Some(ADMIN_ROLE)
}

/// A deny from the decision path, as the proxy would answer it; faults stay errors.
fn from_error(e: ApiError) -> Result<Answer, ApiError> {
    let (status, _, reason) = e.parts();
    if status.is_server_error() {
        return Err(e);
    }
    Ok(Answer::deny_as(reason, status.as_u16()))
}

/// The original request's headers: the subject's credential under its
/// header, then `context.headers` (a string, or an array for a repeated
/// field), so the proxy's rules (one credential, no repeats) apply to both.
fn request_headers(ev: &Evaluation) -> Result<HeaderMap, Reason> {
    let mut headers = HeaderMap::new();
    let name = match ev.subject.kind.as_str() {
        "token" => Some(credential::TOKEN_HEADER),
        "apikey" => Some(credential::API_KEY_HEADER),
        "playerkey" => Some(credential::PLAYER_KEY_HEADER),
        // A viewer's playback token, as the guarded prefix reads it.
        "playback" => Some(AUTHORIZATION.as_str()),
        "anonymous" => None,
        _ => return Err(Reason::UnknownSubjectType),
    };
    if let Some(name) = name {
        let value = if name == AUTHORIZATION.as_str() {
            HeaderValue::from_str(&format!("Bearer {}", ev.subject.id))
        } else {
            HeaderValue::from_str(&ev.subject.id)
        };
        let value = value.map_err(|_| Reason::MalformedCredential)?;
        headers.append(HeaderName::from_static(name), value);
    }
    let Some(given) = ev.context("headers") else {
        return Ok(headers);
    };
    let given = given.as_object().ok_or(Reason::InvalidParameter)?;
    for (name, value) in given {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| Reason::InvalidParameter)?;
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for v in values {
            let v = v
                .as_str()
                .and_then(|s| HeaderValue::from_str(s).ok())
                .ok_or(Reason::InvalidParameter)?;
            headers.append(name.clone(), v);
            if headers.len() > MAX_HEADERS {
                return Err(Reason::InvalidParameter);
            }
        }
    }
    Ok(headers)
}

/// "May the bearer of this credential send METHOD PATH?": the proxy's decision.
async fn route_profile(
    state: &AppState,
    ev: &Evaluation,
    client_ip: IpAddr,
    request_id: &HeaderValue,
) -> Result<Answer, ApiError> {
    let headers = match request_headers(ev) {
        Ok(h) => h,
        Err(Reason::UnknownSubjectType) => return Ok(Answer::deny(Reason::UnknownSubjectType)),
        // A credential no header can carry: the proxy's 401 for a malformed one.
        Err(Reason::MalformedCredential) => {
            return Ok(Answer::deny_as(Reason::MalformedCredential, 401))
        }
        Err(r) => return Ok(Answer::deny_as(r, 400)),
    };
    let method = ev.action.name.as_str();
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        return Ok(Answer::deny_as(Reason::InvalidParameter, 400));
    }
    let (raw_path, query) = match ev.resource.id.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (ev.resource.id.as_str(), None),
    };
    // The PEP forwards the request as it is, so it is judged as it is: a
    // path that normalisation would change is refused (as forward-auth does),
    // and so is a method override the upstream would obey.
    let normal = match path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => return Ok(Answer::deny_as(e.reason(), 400)),
    };
    if normal != raw_path {
        return Ok(Answer::deny_as(Reason::PathNotNormal, 400));
    }
    if let Err(e) = head::check_method_override(&headers, query) {
        return Ok(Answer::deny_as(e.reason(), 400));
    }
    let question = Question {
        method,
        path: &normal,
        query,
        headers: &headers,
        client_ip,
        request_id,
        door: crate::metrics::Door::Authzen,
    };
    // The guarded playback prefix, as the data listener routes it: a path
    // under it that no route names is decided with a playback token.
    if let Some(prefix) = &state.settings.playback_prefix {
        if crate::request::path::is_under_prefix(&normal, prefix)
            && state
                .policies
                .current()
                .routes
                .find(method, &normal)
                .is_none()
        {
            return match state.decider.play(&question, prefix).await {
                Ok(_) => Ok(Answer {
                    allowed: true,
                    reason: Reason::PolicyAllow,
                    status: Some(200),
                    policies: None,
                }),
                Err(e) => from_error(e),
            };
        }
    }
    let mut explanation = Explanation::default();
    let verdict = state
        .decider
        .decide_explained(&question, &mut explanation)
        .await;
    let admin = explanation.caller.as_ref().is_some_and(is_admin);
    let mut answer = match verdict {
        Ok(Verdict::Forward(_)) => Answer {
            allowed: true,
            reason: Reason::PolicyAllow,
            status: Some(200),
            policies: None,
        },
        // rolegate's own endpoints are answered by rolegate, not forwarded
        // by a PEP to an upstream (as with forward-auth).
        Ok(Verdict::Local(_)) => Answer::deny_as(Reason::NotForwardable, 403),
        Err(e) => from_error(e)?,
    };
    if admin {
        answer.policies = Some(explanation.policies);
    }
    Ok(answer)
}

/// Whether `name` is an action a request can be for (not an action group).
fn decidable_action(snapshot: &PolicySnapshot, name: &str) -> bool {
    snapshot
        .action(name)
        .is_some_and(|uid| !snapshot.schema.action_groups().any(|g| g == uid))
}

fn entity_type_known(snapshot: &PolicySnapshot, kind: &str) -> bool {
    snapshot
        .schema
        .entity_types()
        .any(|t| t.to_string() == kind)
}

/// The subject as a principal, at their current role and organisation.
async fn user_caller(state: &AppState, id: &str) -> Result<Option<Caller>, ApiError> {
    if id.contains('@') {
        let found = state.store.user_by_email(id).await?;
        return Ok(found.map(|u| Caller::user_in(&u.id, &u.org_id, &u.role)));
    }
    let found = state.cache.user(id).await?.value;
    Ok(found.map(|u| Caller::user(u.id.clone(), u.membership.clone())))
}

/// "May user U perform action A on resource R?": Cedar on the live snapshot.
async fn cedar_profile(
    state: &AppState,
    ev: &Evaluation,
    client_ip: IpAddr,
    request_id: &HeaderValue,
) -> Result<Answer, ApiError> {
    if ev.subject.kind != "user" {
        return Ok(Answer::deny(Reason::UnknownSubjectType));
    }
    let snapshot = state.policies.current();
    let action = ev.action.name.as_str();
    if !decidable_action(&snapshot, action) {
        return Ok(Answer::deny(Reason::UnknownAction));
    }
    let resource_type = ev.resource.kind.as_str();
    if !entity_type_known(&snapshot, resource_type) {
        return Ok(Answer::deny(Reason::UnknownResourceType));
    }
    let Some(caller) = user_caller(state, &ev.subject.id).await? else {
        return Ok(Answer::deny(Reason::UnknownUser));
    };
    let resource_id = ev.resource.id.as_str();
    // A user's organisation is the store's; anything else is in the
    // organisation the PEP names, or (as the proxy scopes upstream
    // resources) the subject's own.
    let org = match (resource_type, ev.resource.property("org")) {
        ("User", _) | (_, None) => {
            state
                .decider
                .resource_org(resource_type, resource_id, &caller)
                .await?
        }
        (_, Some(Value::String(org))) => Arc::from(org.as_str()),
        (_, Some(_)) => return Ok(Answer::deny(Reason::InvalidParameter)),
    };
    let text = |name: &str| ev.context(name).and_then(Value::as_str).unwrap_or("");
    let facts = RequestFacts {
        method: text("method"),
        path: text("path"),
        credential: caller.kind,
        client_ip,
        tag_filter: ev.context("tag_filter").and_then(Value::as_bool) == Some(true),
    };
    let outcome = decide_action(
        &snapshot,
        &caller,
        action,
        resource_type,
        resource_id,
        &org,
        &facts,
    );
    if !outcome.allowed {
        tracing::info!(
            request_id = request_id.to_str().unwrap_or(""),
            action,
            resource = %format_args!("{resource_type}::\"{resource_id}\""),
            principal = %caller.actor(),
            role = caller.role().unwrap_or(""),
            policies = ?outcome.policies,
            errors = ?outcome.errors,
            "deny: authzen"
        );
    }
    Ok(Answer {
        allowed: outcome.allowed,
        reason: if outcome.allowed {
            Reason::PolicyAllow
        } else {
            Reason::PolicyDeny
        },
        status: None,
        policies: is_admin(&caller).then(|| outcome.policies.clone()),
    })
}
