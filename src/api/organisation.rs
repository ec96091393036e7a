//! The organisation: its details, webhook, API key and player key.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::audit::audit;
use super::users::rfc3339;
use super::{caller_org, read_json, RequestCtx};
use crate::error::{json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;

/// The caller's organisation as stored.
async fn own_org(state: &AppState, ctx: &RequestCtx) -> Result<crate::store::Org, ApiError> {
    state
        .store
        .org(caller_org(ctx)?)
        .await?
        .ok_or(ApiError::NotFound(Reason::NoSuchOrganisation))
}

pub async fn organisation(
    state: &AppState,
    ctx: &RequestCtx,
) -> Result<Response<LocalBody>, ApiError> {
    let org = own_org(state, ctx).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "id": org.id, "name": org.name, "webhook": org.webhook, "createdAt": rfc3339(org.created_at) } }),
    ))
}

pub async fn webhook(
    state: &AppState,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let url = match body.get("webhook") {
        Some(Value::Null) => None,
        Some(Value::String(s)) if valid_webhook(s) => Some(s.clone()),
        _ => {
            return Err(ApiError::bad_param(
                Reason::InvalidWebhook,
                "webhook",
                "webhook must be an absolute http(s) URL (at most 2048 bytes) or null",
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

/// Longest webhook URL stored (the common limit of browsers and proxies).
const MAX_WEBHOOK_LEN: usize = 2048;

/// Whether `s` is a webhook a platform could call: an absolute `http` or
/// `https` URL that parses (no spaces or control characters), with a host,
/// and a bracketed host a real IPv6 address. A prefix check alone stored
/// `http://[` and handed it back to every reader of the organisation.
fn valid_webhook(s: &str) -> bool {
    if s.len() > MAX_WEBHOOK_LEN {
        return false;
    }
    let Ok(uri) = s.parse::<http::Uri>() else {
        return false;
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return false;
    }
    let Some(authority) = uri.authority() else {
        return false;
    };
    // No user-info: credentials do not belong in a stored, displayed URL.
    if authority.as_str().contains('@') {
        return false;
    }
    let host = authority.host();
    // After the host only a port may follow (`host()` stops at a bracket's
    // end, so `[::1]x` would otherwise pass as `[::1]`).
    let after_host = authority.as_str().strip_prefix(host).unwrap_or("?");
    let port_ok = match after_host.strip_prefix(':') {
        None => after_host.is_empty(),
        Some(port) => port.parse::<u16>().is_ok(),
    };
    if !port_ok {
        return false;
    }
    match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains(['[', ']']),
    }
}

pub async fn player_key(
    state: &AppState,
    ctx: &RequestCtx,
) -> Result<Response<LocalBody>, ApiError> {
    let org = own_org(state, ctx).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "data": { "playerKey": org.player_key } }),
    ))
}

pub async fn rotate_key(
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

/// `GET /organisation/apikey`: the key is stored only as a hash, so it cannot be shown again.
pub fn api_key() -> Response<LocalBody> {
    json_response(
        StatusCode::OK,
        &json!({ "data": { "apiKey": null, "note": "the API key is stored only as a hash; rotate it (PUT /organisation/apikey) to obtain a new one" } }),
    )
}

#[cfg(test)]
mod tests {
    use super::valid_webhook;

    #[test]
    fn webhooks_are_absolute_http_urls_with_a_real_host() {
        for ok in [
            "https://hooks.example/ingest",
            "http://127.0.0.1:8080/x?y=1",
            "https://[2001:db8::1]:8443/hook",
            "http://[::1]/",
        ] {
            assert!(valid_webhook(ok), "{ok}");
        }
        let long = format!("https://h.example/{}", "a".repeat(2048));
        for bad in [
            "http://[",
            "http://[::1",
            "http://[zz]/",
            "http://[::1]x/",
            "http://h.example:99999/",
            "http://h.example:/",
            "http://",
            "https:///path",
            "http://a b/",
            "http://h.example/\u{7f}",
            "ftp://h.example/",
            "https://user:pw@h.example/",
            "hooks.example/ingest",
            long.as_str(),
        ] {
            assert!(!valid_webhook(bad), "{bad:?}");
        }
    }
}
