//! The guarded playback prefix: a viewer's request carries a playback token
//! instead of an API credential; it is verified, Cedar decides `play` with the
//! token's facts, and only an allow is forwarded.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::authn::playback_token::{request_token, validate};
use crate::authz::play::{decide_play, stream_of, PlayRequest};
use crate::error::ApiError;
use crate::forward::Identity;

use super::ProxyBody;

/// A request on the guarded playback prefix: verify the playback token, let
/// Cedar decide `play` with its facts, forward on allow.
pub async fn guarded(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    path: &str,
    path_and_query: &str,
    request_id: &HeaderValue,
    client_ip: IpAddr,
) -> Result<Response<ProxyBody>, ApiError> {
    let prefix = state.settings.playback_prefix.as_deref().unwrap_or("");
    let stream = stream_of(path, prefix).to_owned();
    let token = request_token(req.headers(), req.uri().query())
        .ok_or(ApiError::UnknownPrincipal("playback_token_required"))?;
    let claims = validate(state.store.as_ref(), token).await?;
    if stream.is_empty() {
        return Err(ApiError::Denied("no_stream"));
    }
    let snapshot = state.policies.current();
    let outcome = decide_play(
        &snapshot,
        &claims.grant(),
        &PlayRequest {
            method: req.method().as_str(),
            path,
            stream: &stream,
            headers: req.headers(),
            client_ip,
        },
    );
    if !outcome.allowed {
        tracing::info!(
            request_id = request_id.to_str().unwrap_or(""),
            stream = %stream,
            org = %claims.org,
            jti = %claims.jti,
            errors = ?outcome.errors,
            "deny: play"
        );
        return Err(ApiError::Denied("policy_deny"));
    }
    let identity = Identity {
        user_id: None,
        org_id: Some(&claims.org),
        role: None,
        credential: "playback",
    };
    super::forward_as(state, req, path_and_query, &identity, request_id, client_ip).await
}
