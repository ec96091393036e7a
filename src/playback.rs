//! Secure playback tokens: viewer-facing JWTs an organisation issues for its
//! streams, verified offline by edges (JWKS) and by rolegate on the guarded
//! playback prefix.
//!
//! Signing algorithm: EdDSA (Ed25519). Chosen over ES256 and RS256 because the
//! keys are 32 bytes (a JWKS entry is one short `x`), signatures are
//! deterministic (no nonce to get wrong, unlike ECDSA), verification is fast
//! on edges, and it avoids the RSA crate's timing advisory (RUSTSEC-2023-0071).
//!
//! Playback tokens are independent of the issuing user: they carry the org and
//! are signed with the org's playback key, so role changes, tokenKey renewal
//! or deletion of the issuer never invalidate them (only `exp` or, for
//! revocable tokens, revocation does). Revocation is checked in the store on
//! every guarded request, so it is consistent across restarts and replicas.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use ipnet::IpNet;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::authn::credential::CredentialKind;
use crate::authz::entities::{self, PlaybackFacts, RequestFacts};
use crate::authz::routes::Endpoint;
use crate::authz::{Outcome, PolicySnapshot};
use crate::clock::unix_now;
use crate::error::{empty_response, json_response, ApiError, LocalBody};
use crate::forward::Identity;
use crate::handlers::read_json;
use crate::proxy::{ProxyBody, RequestCtx};
use crate::store::{NewAudit, PlaybackKey, StoreError};

/// The `typ` only playback tokens carry; API tokens use `bintu-api+jwt`.
pub const TYP: &str = "playback+jwt";
/// Audience disjoint from API tokens', so neither kind validates as the other.
pub const AUD: &str = "playback";
const ISS: &str = "rolegate";
/// Clock skew tolerated between issuer, rolegate and viewers. Kept small: the
/// issuer and rolegate share a clock, and `exp` is a hard promise to the org.
const LEEWAY: u64 = 1;
const DAY: u64 = 24 * 3600;
const MAX_REVOCABLE: u64 = DAY;
const MAX_LIFETIME: u64 = 365 * DAY;
const DEFAULT_LIFETIME: u64 = DAY;
const MAX_IPS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum PlaybackError {
    #[error("jwt expired")]
    Expired,
    #[error("jwt not active")]
    NotYetValid,
    #[error("jwt malformed")]
    Malformed,
    #[error("invalid signature")]
    BadSignature,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("not a playback token")]
    WrongType,
    #[error("jwt revoked")]
    Revoked,
    #[error("signing key: {0}")]
    Key(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PlaybackError {
    /// The token service's error code for `/playback/token/verify`.
    fn code(&self) -> u32 {
        match self {
            PlaybackError::Expired => 1002,
            // The token service has no revoked code: a revoked token is invalid.
            _ => 2004,
        }
    }
}

impl From<PlaybackError> for ApiError {
    fn from(e: PlaybackError) -> Self {
        match e {
            PlaybackError::Store(s) => ApiError::Store(s),
            PlaybackError::Key(m) => ApiError::Internal(m),
            // The token is the viewer's credential: a bad one is a 401.
            _ => ApiError::UnknownPrincipal("playback_token_invalid"),
        }
    }
}

/// Claims of a playback token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub org: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub revocable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groupid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orgawide: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(rename = "forceDisconnect", default)]
    pub force_disconnect: bool,
}

/// rolegate's own playback endpoints; `None` when the handler is not ours.
pub async fn dispatch(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Option<Result<Response<LocalBody>, ApiError>> {
    let out = match endpoint {
        Endpoint::PlaybackIssue => issue(state, ctx, req).await,
        Endpoint::PlaybackVerify => verify_endpoint(state, req).await,
        Endpoint::PlaybackRevoke => revoke(state, ctx, req).await,
        Endpoint::PlaybackJwks => jwks(state).await,
        Endpoint::PlaybackKeyRotate => rotate(state, ctx).await,
        _ => return None,
    };
    Some(out)
}

fn now_i64() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

fn new_key(org_id: &str) -> Result<PlaybackKey, PlaybackError> {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    Ok(PlaybackKey {
        kid: format!("pb_{}", uuid::Uuid::new_v4().simple()),
        org_id: org_id.to_owned(),
        private_key: signing.to_bytes().to_vec(),
        public_key: signing.verifying_key().to_bytes().to_vec(),
        created_at: now_i64(),
        retired_at: None,
        max_token_exp: 0,
    })
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

fn encoding_key(key: &PlaybackKey) -> Result<EncodingKey, PlaybackError> {
    let seed: [u8; 32] = key
        .private_key
        .as_slice()
        .try_into()
        .map_err(|_| PlaybackError::Key("bad stored seed".to_owned()))?;
    let der = SigningKey::from_bytes(&seed)
        .to_pkcs8_der()
        .map_err(|e| PlaybackError::Key(e.to_string()))?;
    Ok(EncodingKey::from_ed_der(der.as_bytes()))
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
    ApiError::bad_param("invalid_parameter", field, message.to_owned())
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
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Ok(Some(s.clone())),
        Some(_) => Err(bad(
            field,
            "must be a non-empty string of at most 256 characters",
        )),
    }
}

fn parse_ip(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
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
    let exp = opt_u64(body, "exp")?.unwrap_or(start + DEFAULT_LIFETIME);
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

async fn issue(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let org = ctx
        .caller
        .org
        .clone()
        .ok_or(ApiError::Denied("no_organisation"))?;
    let body = read_json(state, req).await?;
    let now = unix_now();
    let r = parse_issue(&body, now)?;
    let key = active_key(state, &org).await?;
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

/// Verify signature, type, audience and (with `check_time`) nbf/exp; returns
/// the claims. Revocation is checked by the caller where it matters.
async fn decode(state: &AppState, token: &str, check_time: bool) -> Result<Claims, PlaybackError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| PlaybackError::Malformed)?;
    if header.typ.as_deref() != Some(TYP) {
        return Err(PlaybackError::WrongType);
    }
    if header.alg != Algorithm::EdDSA {
        return Err(PlaybackError::Malformed);
    }
    let kid = header.kid.ok_or(PlaybackError::Malformed)?;
    let key = state
        .store
        .playback_key(&kid)
        .await?
        .ok_or(PlaybackError::UnknownKey)?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[AUD]);
    v.set_issuer(&[ISS]);
    v.leeway = LEEWAY;
    v.validate_exp = check_time;
    v.validate_nbf = check_time;
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
    let dk = DecodingKey::from_ed_der(&key.public_key);
    let data = jsonwebtoken::decode::<Claims>(token, &dk, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => PlaybackError::Expired,
        ErrorKind::ImmatureSignature => PlaybackError::NotYetValid,
        ErrorKind::InvalidSignature => PlaybackError::BadSignature,
        _ => PlaybackError::Malformed,
    })?;
    // A key signs only its own org's tokens; anything else is forged.
    if data.claims.org != key.org_id {
        return Err(PlaybackError::BadSignature);
    }
    Ok(data.claims)
}

/// Full check used by verify and the guarded prefix.
async fn validate(state: &AppState, token: &str) -> Result<Claims, PlaybackError> {
    let claims = decode(state, token, true).await?;
    if claims.revocable && state.store.playback_revoked(&claims.jti).await? {
        return Err(PlaybackError::Revoked);
    }
    Ok(claims)
}

fn token_error(status: StatusCode, code: u32, message: &str) -> Response<LocalBody> {
    json_response(
        status,
        &json!({"success": false, "errorCode": code, "message": message}),
    )
}

fn body_token(body: &Value) -> Result<&str, ApiError> {
    body.get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("token", "token is required"))
}

async fn verify_endpoint(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let body = read_json(state, req).await?;
    let token = body_token(&body)?;
    match validate(state, token).await {
        Ok(claims) => Ok(json_response(
            StatusCode::OK,
            &json!({"success": true, "data": claims}),
        )),
        Err(PlaybackError::Store(e)) => Err(ApiError::Store(e)),
        Err(e) => Ok(token_error(StatusCode::FORBIDDEN, e.code(), &e.to_string())),
    }
}

async fn revoke(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<LocalBody>, ApiError> {
    let org = ctx
        .caller
        .org
        .clone()
        .ok_or(ApiError::Denied("no_organisation"))?;
    let body = read_json(state, req).await?;
    let token = body_token(&body)?;
    // An expired token can still be revoked: revocation is permanent anyway.
    let claims = match decode(state, token, false).await {
        Ok(c) => c,
        Err(PlaybackError::Store(e)) => return Err(ApiError::Store(e)),
        Err(e) => return Ok(token_error(StatusCode::FORBIDDEN, e.code(), &e.to_string())),
    };
    if claims.org != *org {
        return Ok(token_error(
            StatusCode::FORBIDDEN,
            2012,
            "token belongs to another organisation",
        ));
    }
    if !claims.revocable {
        return Ok(token_error(
            StatusCode::BAD_REQUEST,
            2011,
            "token is not revocable",
        ));
    }
    let exp = i64::try_from(claims.exp).unwrap_or(i64::MAX);
    state
        .store
        .revoke_playback(&claims.jti, &org, exp, now_i64())
        .await?;
    Ok(empty_response(StatusCode::NO_CONTENT))
}

async fn jwks(state: &Arc<AppState>) -> Result<Response<LocalBody>, ApiError> {
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

async fn rotate(state: &Arc<AppState>, ctx: &RequestCtx) -> Result<Response<LocalBody>, ApiError> {
    let org = ctx
        .caller
        .org
        .clone()
        .ok_or(ApiError::Denied("no_organisation"))?;
    let key = state.store.put_playback_key(new_key(&org)?, true).await?;
    state
        .store
        .append_audit(NewAudit {
            org_id: org.to_string(),
            actor: ctx.caller.actor(),
            action: "rotatePlaybackKey".to_owned(),
            target: format!("playbackkey:{}", key.kid),
            outcome: "ok".to_owned(),
            request_id: ctx.request_id().to_owned(),
            detail: String::new(),
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": true, "data": {"kid": key.kid}}),
    ))
}

// ---- guarded playback prefix -------------------------------------------------

/// The playback token of a viewer request: `?token=`, `?jwtoken=` or bearer.
fn request_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let from_query = query.and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "token" || k == "jwtoken").then_some(v)
        })
    });
    from_query.or_else(|| {
        headers
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
    })
}

/// Host of an Origin or Referer value (`https://a.b:443/x` → `a.b`).
fn header_host(v: &str) -> Option<String> {
    let rest = v.split_once("://").map_or(v, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn domain_allowed(headers: &HeaderMap, domain: Option<&str>) -> bool {
    let Some(domain) = domain else { return true };
    let host = [http::header::ORIGIN, http::header::REFERER]
        .iter()
        .find_map(|h| headers.get(h)?.to_str().ok().and_then(header_host));
    host.is_some_and(|h| h == domain || h.ends_with(&format!(".{domain}")))
}

fn ip_allowed(client: IpAddr, list: Option<&[String]>) -> bool {
    let Some(list) = list else { return true };
    let client = client.to_canonical();
    list.iter()
        .filter_map(|s| parse_ip(s))
        .any(|net| net.contains(&client))
}

/// What a verified playback token grants: the facts deciding `play` reads.
/// Borrowed from [`Claims`] on the guarded prefix; `rolegate test` builds one
/// from a case, so both decide through [`decide_play`].
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    pub org: &'a str,
    pub streams: Option<&'a [String]>,
    pub groupid: Option<&'a str>,
    pub orgawide: bool,
    pub ip: Option<&'a [String]>,
    pub domain: Option<&'a str>,
}

impl Claims {
    pub fn grant(&self) -> Grant<'_> {
        Grant {
            org: &self.org,
            streams: self.streams.as_deref(),
            groupid: self.groupid.as_deref(),
            orgawide: self.orgawide == Some(true),
            ip: self.ip.as_deref(),
            domain: self.domain.as_deref(),
        }
    }
}

/// Whether the token names `stream`. A group token matches when the first
/// path segment after the prefix is the group id (`/playback/{group}/...`):
/// rolegate knows no stream→group mapping, so the upstream layout decides.
fn stream_allowed(grant: &Grant<'_>, stream: &str) -> bool {
    grant.orgawide
        || grant.streams.is_some_and(|s| s.iter().any(|n| n == stream))
        || grant.groupid == Some(stream)
}

/// The stream a guarded path names: its first segment after `prefix`.
pub fn stream_of<'a>(path: &'a str, prefix: &str) -> &'a str {
    path.strip_prefix(prefix)
        .unwrap_or("")
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
}

/// A viewer's request on the guarded prefix, as deciding `play` sees it.
pub struct PlayRequest<'a> {
    pub method: &'a str,
    /// The normalised path.
    pub path: &'a str,
    pub stream: &'a str,
    /// The request headers (`Origin`/`Referer` are checked against the token's domain).
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// Decide `play` for a viewer holding `grant`: derive the playback facts
/// (stream, address, domain) and let Cedar decide. The guarded prefix and
/// `rolegate test` both decide here.
pub fn decide_play(snapshot: &PolicySnapshot, grant: &Grant<'_>, req: &PlayRequest<'_>) -> Outcome {
    let Some(action) = snapshot.action("play") else {
        return Outcome {
            allowed: false,
            policies: vec![],
            errors: vec!["the schema declares no action `play`".to_owned()],
        };
    };
    let facts = PlaybackFacts {
        stream: req.stream,
        stream_allowed: stream_allowed(grant, req.stream),
        ip_allowed: ip_allowed(req.client_ip, grant.ip),
        domain_allowed: domain_allowed(req.headers, grant.domain),
        org_wide: grant.orgawide,
    };
    let request_facts = RequestFacts {
        method: req.method,
        path: req.path,
        credential: CredentialKind::Anonymous,
        client_ip: req.client_ip,
        tag_filter: false,
    };
    snapshot.decide(
        entities::viewer(grant.org),
        action,
        entities::resource("Stream", req.stream, grant.org),
        snapshot.playback_context(&request_facts, &facts),
    )
}

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
    let claims = validate(state, token).await?;
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
    crate::proxy::forward_as(state, req, path_and_query, &identity, request_id, client_ip).await
}
