//! rolegate's playback endpoints: issue, verify and revoke playback tokens,
//! publish the verification keys (JWKS) and rotate an organisation's key. The
//! token format itself is `authn::playback_token`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};

use super::RequestCtx;
use super::{caller_org, read_json};
use crate::authn::playback_token::{
    decode, encoding_key, new_key, parse_ip, validate, Claims, PlaybackError, AUD, ISS, LEEWAY, TYP,
};
use crate::clock::unix_now;
use crate::error::{empty_response, json_response, ApiError, LocalBody};
use crate::reason::Reason;
use crate::state::AppState;
use crate::store::PlaybackKey;

const DAY: u64 = 24 * 3600;

const MAX_REVOCABLE: u64 = DAY;

const MAX_LIFETIME: u64 = 365 * DAY;

const DEFAULT_LIFETIME: u64 = DAY;

const MAX_IPS: usize = 10;

fn now_i64() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// The org's active key, created on first use.
async fn active_key(state: &AppState, org_id: &str) -> Result<PlaybackKey, PlaybackError> {
    let keys = state.store.playback_keys(Some(org_id)).await?;
    if let Some(k) = keys.into_iter().find(|k| k.retired_at.is_none()) {
        return Ok(k);
    }
    Ok(state
        .store
        .put_playback_key(new_key(org_id)?, false)
        .await?)
}

/// The issue request, validated against §7's limits.
struct IssueRequest {
    streams: Option<Vec<String>>,
    groupid: Option<String>,
    orgawide: bool,
    nbf: u64,
    exp: u64,
    revocable: bool,
    ip: Option<Vec<String>>,
    domain: Option<String>,
    tag: Option<String>,
    force_disconnect: bool,
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::bad_param(Reason::InvalidParameter, field, message.to_owned())
}

fn opt_u64(body: &Value, field: &str) -> Result<Option<u64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(field, "must be a UNIX time in seconds")),
    }
}

fn opt_bool(body: &Value, field: &str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v.as_bool().ok_or_else(|| bad(field, "must be a boolean")),
    }
}

fn opt_str(body: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 256 => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            field,
            "must be a non-empty string of at most 256 characters",
        )),
    }
}

fn parse_issue(body: &Value, now: u64) -> Result<IssueRequest, ApiError> {
    if !body.is_object() {
        return Err(bad("body", "Body must be a JSON object"));
    }
    let streams = match body.get("streams") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if !a.is_empty() => {
            let names: Option<Vec<String>> = a
                .iter()
                .map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
                .collect();
            Some(names.ok_or_else(|| bad("streams", "must be non-empty stream names"))?)
        }
        Some(_) => return Err(bad("streams", "must be a non-empty array of stream names")),
    };
    let groupid = opt_str(body, "groupid")?;
    let orgawide = opt_bool(body, "orgawide")?;
    let targets = [
        ("streams", streams.is_some()),
        ("groupid", groupid.is_some()),
        ("orgawide", orgawide),
    ];
    let set: Vec<&str> = targets.iter().filter(|t| t.1).map(|t| t.0).collect();
    match set.as_slice() {
        [_] => {}
        [] => {
            return Err(bad(
                "streams",
                "exactly one of streams, groupid or orgawide is required",
            ))
        }
        [_, second, ..] => {
            return Err(bad(
                second,
                "exactly one of streams, groupid or orgawide may be given",
            ))
        }
    }
    let revocable = opt_bool(body, "revocable")?;
    let nbf = opt_u64(body, "nbf")?.unwrap_or(now);
    let start = nbf.max(now);
    // Saturating: a start near the end of time must not overflow (it is refused below).
    let exp = opt_u64(body, "exp")?.unwrap_or(start.saturating_add(DEFAULT_LIFETIME));
    if exp <= now || exp <= nbf {
        return Err(bad("exp", "must be in the future and after nbf"));
    }
    // Lifetime counts from issue: a far nbf must not stretch the cap.
    let lifetime = exp - now.min(nbf);
    if revocable && lifetime > MAX_REVOCABLE {
        return Err(bad("exp", "revocable tokens live at most 24 hours"));
    }
    if lifetime > MAX_LIFETIME {
        return Err(bad("exp", "tokens live at most 365 days"));
    }
    if nbf > now + MAX_LIFETIME {
        return Err(bad("nbf", "must be within 365 days"));
    }
    let ip = match body.get("ip") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let list: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            if list.is_empty() || list.len() > MAX_IPS {
                return Err(bad("ip", "between 1 and 10 addresses or CIDRs"));
            }
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                let s = item
                    .as_str()
                    .filter(|s| parse_ip(s).is_some())
                    .ok_or_else(|| bad("ip", "must be IPv4/IPv6 addresses or CIDRs"))?;
                out.push(s.to_owned());
            }
            Some(out)
        }
    };
    let domain = opt_str(body, "domain")?.map(|d| d.to_ascii_lowercase());
    if let Some(d) = &domain {
        if d.contains(['/', ':', ' ']) {
            return Err(bad("domain", "must be a host name"));
        }
    }
    Ok(IssueRequest {
        streams,
        groupid,
        orgawide,
        nbf,
        exp,
        revocable,
        ip,
        domain,
        tag: opt_str(body, "tag")?,
        force_disconnect: opt_bool(body, "forceDisconnect")?,
    })
}

pub async fn issue(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let org = caller_org(ctx)?;
    let body = read_json(state, req).await?;
    let now = unix_now();
    let r = parse_issue(&body, now)?;
    let key = active_key(state, org).await?;
    // Record the exp before the token exists, so JWKS never drops a key early.
    let exp_i64 = i64::try_from(r.exp).unwrap_or(i64::MAX);
    state.store.extend_playback_key(&key.kid, exp_i64).await?;
    let claims = Claims {
        iss: ISS.to_owned(),
        aud: AUD.to_owned(),
        sub: ctx
            .caller
            .user_id
            .as_deref()
            .map_or_else(|| "apikey".to_owned(), str::to_owned),
        org: org.to_string(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        nbf: r.nbf,
        exp: r.exp,
        revocable: r.revocable,
        streams: r.streams,
        groupid: r.groupid,
        orgawide: r.orgawide.then_some(true),
        ip: r.ip,
        domain: r.domain,
        tag: r.tag,
        force_disconnect: r.force_disconnect,
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TYP.to_owned());
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &encoding_key(&key)?)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "data": {
            "token": token, "jti": claims.jti, "kid": key.kid, "exp": claims.exp,
        }}),
    ))
}

fn token_error(status: StatusCode, code: u32, message: &str) -> ApiError {
    ApiError::PlaybackToken {
        status,
        code,
        message: message.to_owned(),
    }
}

fn body_token(body: &Value) -> Result<&str, ApiError> {
    body.get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("token", "token is required"))
}

pub async fn verify_endpoint(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let token = body_token(&body)?;
    match validate(state.store.as_ref(), token).await {
        Ok(claims) => Ok(json_response(
            StatusCode::OK,
            &json!({"success": true, "data": claims}),
        )),
        Err(PlaybackError::Store(e)) => Err(e.into()),
        Err(e) => Err(token_error(StatusCode::FORBIDDEN, e.code(), &e.to_string())),
    }
}

pub async fn revoke(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let org = caller_org(ctx)?;
    let body = read_json(state, req).await?;
    let token = body_token(&body)?;
    // An expired token can still be revoked: revocation is permanent anyway.
    let claims = match decode(state.store.as_ref(), token, false).await {
        Ok(c) => c,
        Err(PlaybackError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(token_error(StatusCode::FORBIDDEN, e.code(), &e.to_string())),
    };
    if claims.org != *org {
        return Err(token_error(
            StatusCode::FORBIDDEN,
            2012,
            "token belongs to another organisation",
        ));
    }
    if !claims.revocable {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            2011,
            "token is not revocable",
        ));
    }
    let exp = i64::try_from(claims.exp).unwrap_or(i64::MAX);
    state
        .store
        .revoke_playback(&claims.jti, org, exp, now_i64())
        .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

pub async fn jwks(state: &Arc<AppState>) -> Result<Response<LocalBody>, ApiError> {
    let now = now_i64();
    let leeway = i64::try_from(LEEWAY).unwrap_or(0);
    let keys: Vec<Value> = state
        .store
        .playback_keys(None)
        .await?
        .into_iter()
        // A retired key stays while any token it signed can still be valid.
        .filter(|k| k.retired_at.is_none() || k.max_token_exp.saturating_add(leeway) > now)
        .map(|k| {
            json!({
                "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&k.public_key),
                "kid": k.kid, "alg": "EdDSA", "use": "sig",
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
}

pub async fn rotate(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
) -> Result<Response<LocalBody>, ApiError> {
    let org = caller_org(ctx)?;
    let key = state.store.put_playback_key(new_key(org)?, true).await?;
    super::audit::audit(
        state,
        ctx,
        "rotatePlaybackKey",
        &format!("playbackkey:{}", key.kid),
        "ok",
        "",
    )
    .await;
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "data": {"kid": key.kid}}),
    ))
}
