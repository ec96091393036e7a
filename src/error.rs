//! The one mapping from failures to HTTP responses.
//!
//! Every module has its own error enum; the request path converts each into
//! [`ApiError`], and [`ApiError::into_response`] is the only place that picks a
//! status code and body. Bodies use the platform's shape
//! `{"error":{"code":…,"message":…,"userinfo":{…}}}` and only ever carry a short
//! reason code in `userinfo.reason`: details go to the logs.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::authn::credential::CredentialError;
use crate::authn::playback_token::PlaybackError;
use crate::authn::token::TokenError;
use crate::reason::Reason;
use crate::request::head::{BodyTooLarge, HeadError};
use crate::request::path::PathError;
use crate::store::StoreError;

/// The body type rolegate answers with when it answers itself.
pub type LocalBody = Full<Bytes>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("credential rejected: {0}")]
    Credential(#[from] CredentialError),
    #[error("token rejected: {0}")]
    Token(#[from] TokenError),
    /// The credential was valid but names nobody (unknown or deleted user, unknown key).
    #[error("unknown principal: {0}")]
    UnknownPrincipal(Reason),
    #[error("access denied: {0}")]
    Denied(Reason),
    #[error("bad request: {reason}")]
    BadRequest {
        reason: Reason,
        message: String,
        userinfo: Value,
    },
    #[error("not found: {0}")]
    NotFound(Reason),
    /// A playback token refused by the token service's own endpoints
    /// (`/playback/token/verify`, `/revoke`), answered in that service's shape.
    #[error("playback token refused: {message}")]
    PlaybackToken {
        status: StatusCode,
        code: u32,
        message: String,
    },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too many requests")]
    TooManyRequests,
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("store unavailable: {0}")]
    Store(StoreError),
    #[error("not ready")]
    NotReady,
    /// A limit of rolegate's own is reached (e.g. open WebSocket connections).
    #[error("unavailable: {0}")]
    Unavailable(Reason),
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream's TLS certificate did not verify: a 502, never a downgrade.
    #[error("upstream certificate not trusted: {0}")]
    UpstreamUntrusted(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A request's result as its trace span tells it (`otel`): the status,
    /// and for a failure the decision label of `rolegate_requests_total`
    /// (`deny` for a 403, else `error`) and the reason code; `ok` names a success.
    pub fn trace_answer<B>(
        door: crate::metrics::Door,
        result: &Result<http::Response<B>, ApiError>,
        ok: &'static str,
    ) -> crate::otel::Answer {
        match result {
            Ok(resp) => crate::otel::Answer {
                door,
                status: resp.status().as_u16(),
                decision: ok,
                reason: None,
            },
            Err(e) => {
                let (status, _, reason) = e.parts();
                crate::otel::Answer {
                    door,
                    status: status.as_u16(),
                    decision: if status == StatusCode::FORBIDDEN {
                        "deny"
                    } else {
                        "error"
                    },
                    reason: Some(reason.as_str()),
                }
            }
        }
    }

    /// A 400 naming the offending parameter, in the platform's 1002/1004 style.
    /// A 400 that names no parameter (a malformed request or handshake).
    pub fn bad_request(reason: Reason, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            reason,
            message: message.into(),
            userinfo: json!({}),
        }
    }

    pub fn bad_param(reason: Reason, parameter: &str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            reason,
            message: message.into(),
            userinfo: json!({ "parameter": parameter }),
        }
    }

    /// The HTTP status, the platform error code and the short reason code.
    pub fn parts(&self) -> (StatusCode, u32, Reason) {
        match self {
            ApiError::Credential(e) => (StatusCode::UNAUTHORIZED, 4002, e.reason()),
            ApiError::Token(e) => (StatusCode::UNAUTHORIZED, 4002, e.reason()),
            ApiError::UnknownPrincipal(r) => (StatusCode::UNAUTHORIZED, 4002, *r),
            ApiError::Denied(r) => (StatusCode::FORBIDDEN, 2001, *r),
            ApiError::BadRequest { reason, .. } => (StatusCode::BAD_REQUEST, 1002, *reason),
            ApiError::NotFound(r) => (StatusCode::NOT_FOUND, 1404, *r),
            ApiError::PlaybackToken { status, code, .. } => {
                (*status, *code, Reason::PlaybackTokenInvalid)
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, 1409, Reason::Conflict),
            ApiError::TooManyRequests => {
                (StatusCode::TOO_MANY_REQUESTS, 4029, Reason::TooManyAttempts)
            }
            ApiError::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, 1413, Reason::PayloadTooLarge)
            }
            ApiError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                5003,
                Reason::StoreUnavailable,
            ),
            ApiError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, 5003, Reason::NotReady),
            ApiError::Unavailable(r) => (StatusCode::SERVICE_UNAVAILABLE, 5003, *r),
            ApiError::UpstreamUnreachable(_) => {
                (StatusCode::BAD_GATEWAY, 5002, Reason::UpstreamUnreachable)
            }
            ApiError::UpstreamTimeout => {
                (StatusCode::GATEWAY_TIMEOUT, 5004, Reason::UpstreamTimeout)
            }
            ApiError::UpstreamUntrusted(_) => {
                (StatusCode::BAD_GATEWAY, 5002, Reason::UpstreamUntrusted)
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, 5000, Reason::Internal),
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Credential(_) | ApiError::Token(_) | ApiError::UnknownPrincipal(_) => {
                "User Credentials are not valid".to_owned()
            }
            ApiError::Denied(_) => "Access denied".to_owned(),
            ApiError::BadRequest { message, .. } => message.clone(),
            ApiError::NotFound(what) => format!("{what} not found"),
            ApiError::PlaybackToken { message, .. } => message.clone(),
            ApiError::Conflict(message) => message.clone(),
            ApiError::TooManyRequests => "Too many failed attempts, try again later".to_owned(),
            ApiError::PayloadTooLarge => "Request body too large".to_owned(),
            ApiError::Store(_) | ApiError::NotReady | ApiError::Unavailable(_) => {
                "Service temporarily unavailable".to_owned()
            }
            ApiError::UpstreamUnreachable(_) => "Upstream unreachable".to_owned(),
            ApiError::UpstreamTimeout => "Upstream timed out".to_owned(),
            ApiError::UpstreamUntrusted(_) => "Upstream unreachable".to_owned(),
            ApiError::Internal(_) => "Internal error".to_owned(),
        }
    }

    /// The response for this error. `request_id` is echoed so a caller can quote it.
    pub fn into_response(self, request_id: Option<&HeaderValue>) -> Response<LocalBody> {
        let (status, code, reason) = self.parts();
        if let ApiError::PlaybackToken { message, .. } = &self {
            let body = json!({"success": false, "errorCode": code, "message": message});
            let mut resp = json_response(status, &body);
            if let Some(id) = request_id {
                resp.headers_mut()
                    .insert(crate::request::REQUEST_ID_NAME, id.clone());
            }
            return resp;
        }
        let mut userinfo = match &self {
            ApiError::BadRequest { userinfo, .. } => userinfo.clone(),
            _ => json!({}),
        };
        if let Value::Object(map) = &mut userinfo {
            map.insert("reason".to_owned(), Value::from(reason.as_str()));
        }
        let body =
            json!({ "error": { "code": code, "message": self.message(), "userinfo": userinfo } });
        let mut resp = json_response(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rolegate\""),
            );
        }
        if let Some(id) = request_id {
            resp.headers_mut()
                .insert(crate::request::REQUEST_ID_NAME, id.clone());
        }
        resp
    }
}

/// The one mapping of store failures: what the store refused is the
/// caller's problem (404, 409, 400); the store being unreachable is a 503.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::NotFound(Reason::NoSuchUser),
            StoreError::Refused(msg) => ApiError::Conflict(msg),
            StoreError::Duplicate(what) => ApiError::Conflict(format!("{what} already exists")),
            StoreError::InviteRefused(why) => ApiError::BadRequest {
                reason: Reason::InviteRefused,
                message: format!("Invite is {why}"),
                userinfo: json!({ "parameter": "token" }),
            },
            StoreError::ResetRefused(why) => ApiError::BadRequest {
                reason: Reason::ResetRefused,
                message: format!("Password reset link is {why}"),
                userinfo: json!({ "parameter": "token" }),
            },
            other => ApiError::Store(other),
        }
    }
}

/// A request path normalisation refuses, the same 400 at every door.
impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        ApiError::bad_request(e.reason(), format!("Invalid request path: {e}"))
    }
}

impl From<HeadError> for ApiError {
    fn from(e: HeadError) -> Self {
        ApiError::bad_param(e.reason(), e.parameter(), e.to_string())
    }
}

impl From<BodyTooLarge> for ApiError {
    fn from(_: BodyTooLarge) -> Self {
        ApiError::PayloadTooLarge
    }
}

impl From<PlaybackError> for ApiError {
    fn from(e: PlaybackError) -> Self {
        match e {
            PlaybackError::Store(s) => ApiError::from(s),
            PlaybackError::Key(m) => ApiError::Internal(m),
            // The token is the viewer's credential: a bad one is a 401.
            _ => ApiError::UnknownPrincipal(Reason::PlaybackTokenInvalid),
        }
    }
}

/// A JSON response with the platform's content type.
pub fn json_response(status: StatusCode, body: &Value) -> Response<LocalBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// An empty response with the given status.
pub fn empty_response(status: StatusCode) -> Response<LocalBody> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}
