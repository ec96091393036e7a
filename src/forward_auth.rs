//! Forward-auth: the endpoint proxies call before forwarding a request
//! themselves (nginx `auth_request`, Traefik ForwardAuth). It runs exactly the
//! proxy's credential → principal → route → Cedar path on the *original*
//! request, which the proxy describes in headers:
//!
//! - nginx (as configured in `deploy/nginx/`): `X-Original-Method`, `X-Original-URI`;
//! - Traefik: `X-Forwarded-Method`, `X-Forwarded-Uri` (and `X-Forwarded-Host`).
//!
//! Those headers are believed only from `trusted_proxies`; from anyone else the
//! request is judged as what it is (a request for this path, which no route
//! allows). An allow is a 200 carrying the identity headers for the proxy to
//! copy; a deny is the usual 401/403 with the platform's error body.
//! Only upstream routes can be authorized this way: rolegate's own endpoints
//! (users, tokens, playback) must be proxied to rolegate itself.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::decision::{forwarding, Question, Verdict};
use crate::error::{empty_response, ApiError, LocalBody};
use crate::metrics::Door;
use crate::reason::Reason;
use crate::request::path;
use crate::state::AppState;

pub const PATH: &str = "/_rolegate/forward-auth";

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_param(
            Reason::DuplicateForwardedHeader,
            name,
            format!("`{name}` sent more than once"),
        ));
    }
    v.to_str().map(Some).map_err(|_| {
        ApiError::bad_param(
            Reason::BadForwardedHeader,
            name,
            format!("`{name}` is not visible ASCII"),
        )
    })
}

/// One of two header spellings; both present and different is a 400.
fn either<'a>(
    headers: &'a HeaderMap,
    a: &'static str,
    b: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match (header(headers, a)?, header(headers, b)?) {
        (Some(x), Some(y)) if x != y => Err(ApiError::bad_param(
            Reason::ConflictingForwardedHeaders,
            a,
            format!("`{a}` and `{b}` disagree"),
        )),
        (Some(x), _) | (None, Some(x)) => Ok(Some(x)),
        (None, None) => Ok(None),
    }
}

/// Decide the original request described by a trusted proxy's headers.
pub async fn handle(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    client_ip: IpAddr,
    request_id: &HeaderValue,
) -> Result<Response<LocalBody>, ApiError> {
    let method = either(headers, "x-original-method", "x-forwarded-method")?.ok_or_else(|| {
        ApiError::bad_param(
            Reason::MissingOriginalMethod,
            "x-original-method",
            "Parameter required",
        )
    })?;
    let uri = either(headers, "x-original-uri", "x-forwarded-uri")?.ok_or_else(|| {
        ApiError::bad_param(
            Reason::MissingOriginalUri,
            "x-original-uri",
            "Parameter required",
        )
    })?;
    let (raw_path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    // The proxy forwards the target as the client sent it, so rolegate cannot
    // rewrite it as in proxy mode: anything normalisation would change is refused.
    let normal = path::normalize(raw_path)?;
    if normal != raw_path {
        return Err(ApiError::bad_param(
            Reason::PathNotNormal,
            "x-original-uri",
            "Request path is not in normal form",
        ));
    }
    // The proxy forwards the original request as it is, so a method override
    // in it would reach the upstream: refused here as in proxy mode.
    crate::request::head::check_method_override(headers, query)?;
    let method = method.to_ascii_uppercase();
    let question = Question {
        method: &method,
        path: &normal,
        query,
        headers,
        client_ip,
        request_id,
        door: Door::ForwardAuth,
    };
    let allowed = match state.decider.decide(&question).await? {
        Verdict::Forward(allowed) => allowed,
        Verdict::Local(_) => return Err(ApiError::Denied(Reason::NotForwardable)),
    };
    let mut resp = empty_response(StatusCode::OK);
    // The proxy that asked forwards the request itself, with its own
    // forwarding headers: only the address is rolegate's to say.
    let client = crate::request::client_addr::Client::address(client_ip);
    forwarding::set_identity(resp.headers_mut(), &allowed, request_id, &client);
    state
        .metrics
        .count(Door::ForwardAuth, "allow", Reason::ForwardAuth);
    Ok(resp)
}
