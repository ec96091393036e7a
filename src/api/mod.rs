//! The management API: rolegate's own endpoints on the data listener, by the
//! endpoint the route table names. They run after the route's Cedar decision
//! (or, for routes whose resource is named in the body, make it themselves).

pub mod playback;
pub mod users;

use std::sync::Arc;

use std::net::IpAddr;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::authn::principal::Caller;
use crate::authz::decide::{decide_action, log_deny};
use crate::authz::entities::RequestFacts;
use crate::authz::routes::Endpoint;
use crate::authz::routes::Route;
use crate::authz::PolicySnapshot;
use crate::decision::Local;
use crate::error::{ApiError, LocalBody};
use crate::reason::Reason;
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

/// Answer an allowed request for one of rolegate's own endpoints.
pub async fn dispatch(
    state: &Arc<AppState>,
    ctx: RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let endpoint = ctx.endpoint;
    let answered = match endpoint {
        Endpoint::PlaybackIssue
        | Endpoint::PlaybackVerify
        | Endpoint::PlaybackRevoke
        | Endpoint::PlaybackJwks
        | Endpoint::PlaybackKeyRotate => playback::dispatch(state, &ctx, endpoint, req).await,
        _ => users::dispatch(state, &ctx, endpoint, req).await,
    };
    answered.unwrap_or(Err(ApiError::NotFound(Reason::NoSuchEndpoint)))
}

/// A request body as JSON, refusing bodies above `max_body_bytes`.
pub(crate) async fn read_json(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<serde_json::Value, ApiError> {
    use http_body_util::{BodyExt, Limited};
    let limit = usize::try_from(state.settings.max_body_bytes).unwrap_or(usize::MAX);
    let bytes = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::bad_param(Reason::InvalidBody, "body", "Body must be a JSON object"))
}
