//! Envoy's external authorization service (`envoy.service.auth.v3.Authorization/Check`
//! over gRPC): the front door for Envoy, Istio (`CUSTOM` action) and the
//! gateways built on Envoy. Envoy holds the client's request, describes it in
//! a `CheckRequest`, and forwards it only if the answer is OK.
//!
//! A thin adapter on [`Decider`](crate::decision::Decider), like forward-auth:
//!
//! ```text
//! CheckRequest ─► attributes (method, target, fields, peer) ─► the proxy's request checks
//!   ─► Question ─► Decider::decide / play ─┬─ Forward(Allowed) ─► OK: fields to set and to remove
//!                                          ├─ Local ─► denied 403 not_forwardable
//!                                          └─ error ─► denied: the proxy's status and body
//! ```
//!
//! What is read, and how, is what the proxy does with a request on its own
//! listener:
//! - the client address is `attributes.source.address` (Envoy's downstream
//!   peer), and forwarding fields are believed only when that peer is in
//!   `trusted_proxies` (`request::client_addr`);
//! - Envoy passes the target as the client sent it and forwards it so:
//!   rolegate cannot rewrite it as the proxy does, so a path that
//!   normalisation would change is refused (400 `path_not_normal`), as in
//!   forward-auth. Envoy's own `normalize_path` and `merge_slashes` (on in the
//!   shipped example) make such paths rare;
//! - the head checks (`Host`, method overrides in fields or the query) and
//!   the refusal of `CONNECT` apply as in proxy mode.
//!
//! The benchmark-only `passthrough` setting does not apply here: every Check
//! is decided.
//!
//! rolegate's own endpoints (users, tokens, playback tokens: `Verdict::Local`)
//! are not answered here: Envoy would forward them to its upstream, which is
//! not rolegate. They are denied (403 `not_forwardable`); route them to
//! rolegate's data listener instead. Request bodies are Envoy's to bound
//! (`max_request_bytes`, buffer limits): rolegate never sees them here.

pub mod answer;
pub mod attributes;
pub mod service;
mod traced;

use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use http::HeaderValue;

use crate::decision::{Question, Verdict};
use crate::error::ApiError;
use crate::metrics::Door;
use crate::reason::Reason;
use crate::request::{client_addr, head, path};
use crate::state::AppState;

pub use attributes::AttributeError;

/// Answer one `CheckRequest`. A request that is no HTTP request is an
/// [`AttributeError`] (a gRPC error: Envoy, failing closed, refuses the
/// client); everything else is an OK or a denied answer, counted and logged
/// as the proxy counts and logs.
pub async fn check(
    state: &Arc<AppState>,
    req: &CheckRequest,
) -> Result<CheckResponse, AttributeError> {
    let request_id = attributes::envoy_request_id(req).unwrap_or_else(|| state.next_request_id());
    match decide(state, req, &request_id).await {
        Ok(Ok(answer)) => {
            crate::otel::answered(
                &request_id,
                crate::otel::Answer {
                    door: Door::ExtAuthz,
                    status: 200,
                    decision: "allow",
                    reason: None,
                },
            );
            state.metrics.count_forwarded(Door::ExtAuthz);
            Ok(answer)
        }
        Ok(Err(e)) => {
            let (status, _, reason) = e.parts();
            if status.is_server_error() {
                tracing::warn!(request_id = request_id.to_str().unwrap_or(""), door = "ext_authz", error = %e, "request failed");
            } else {
                tracing::debug!(request_id = request_id.to_str().unwrap_or(""), door = "ext_authz", error = %e, "request refused");
            }
            let decision = if status == http::StatusCode::FORBIDDEN {
                "deny"
            } else {
                "error"
            };
            state.metrics.count(Door::ExtAuthz, decision, reason);
            crate::otel::answered(
                &request_id,
                crate::otel::Answer {
                    door: Door::ExtAuthz,
                    status: status.as_u16(),
                    decision,
                    reason: Some(reason.as_str()),
                },
            );
            Ok(answer::denied(e, &request_id).await)
        }
        Err(e) => {
            tracing::warn!(request_id = request_id.to_str().unwrap_or(""), error = %e, "ext_authz: malformed CheckRequest");
            state
                .metrics
                .count(Door::ExtAuthz, "error", Reason::MalformedCheckRequest);
            crate::otel::answered(
                &request_id,
                crate::otel::Answer {
                    door: Door::ExtAuthz,
                    status: 400,
                    decision: "error",
                    reason: Some(Reason::MalformedCheckRequest.as_str()),
                },
            );
            Err(e)
        }
    }
}

async fn decide(
    state: &Arc<AppState>,
    req: &CheckRequest,
    request_id: &HeaderValue,
) -> Result<Result<CheckResponse, ApiError>, AttributeError> {
    let described = match attributes::read(req)? {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    Ok(decide_described(state, &described, request_id).await)
}

async fn decide_described(
    state: &Arc<AppState>,
    req: &attributes::Described<'_>,
    request_id: &HeaderValue,
) -> Result<CheckResponse, ApiError> {
    if !state.is_ready() {
        return Err(ApiError::NotReady);
    }
    let trusted = &state.settings.trusted_proxies;
    let client_ip = client_addr::client_ip(req.peer, &req.headers, trusted);
    // Envoy forwards the request and says how it came in: its scheme
    // attribute and the `Host` (or `:authority`) it will send. These replace
    // any client-sent `X-Forwarded-Proto`/`-Host`, as on the proxy door; an
    // unknown scheme sets none (the client's copy is still removed).
    let origin = client_addr::scheme_value(req.scheme).map(|proto| client_addr::Origin {
        proto,
        host: req.headers.get(http::header::HOST).cloned(),
    });
    let client = client_addr::Client {
        ip: client_ip,
        origin,
    };
    let (raw_path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.target, None),
    };
    let normal = path::normalize(raw_path)?;
    if normal != raw_path {
        return Err(ApiError::bad_param(
            Reason::PathNotNormal,
            "path",
            "Request path is not in normal form",
        ));
    }
    head::check(req.version, &req.headers, query)?;
    // Envoy sends the body on once allowed: a declared one above the limit
    // is refused here, as the proxy refuses it before forwarding.
    head::check_declared_length(&req.headers, state.settings.max_body_bytes)?;
    if req.method == "CONNECT" {
        return Err(ApiError::Denied(Reason::MethodNotAllowed));
    }
    let question = Question {
        method: req.method,
        path: &normal,
        query,
        headers: &req.headers,
        client_ip,
        request_id,
        door: Door::ExtAuthz,
    };
    // The guarded playback prefix, as on the data listener: rolegate's own
    // routes win over it; paths under it carry a playback token.
    if let Some(prefix) = &state.settings.playback_prefix {
        if path::is_under_prefix(&normal, prefix)
            && state
                .policies
                .current()
                .routes
                .find(req.method, &normal)
                .is_none()
        {
            let allowed = state.decider.play(&question, prefix).await?;
            return Ok(answer::ok(
                &req.headers,
                &allowed,
                request_id,
                &client,
                state.settings.forward_credentials,
            ));
        }
    }
    match state.decider.decide(&question).await? {
        Verdict::Forward(allowed) => Ok(answer::ok(
            &req.headers,
            &allowed,
            request_id,
            &client,
            state.settings.forward_credentials,
        )),
        Verdict::Local(_) => Err(ApiError::Denied(Reason::NotForwardable)),
    }
}
