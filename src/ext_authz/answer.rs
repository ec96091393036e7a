//! The two answers Envoy can be given, built from what the proxy would do:
//!
//! - OK: the header fields the proxy would set on the forwarded request
//!   (`OkHttpResponse.headers`, each overwriting any client-sent copy) and the
//!   ones it would strip (`headers_to_remove`: client-sent identity claims,
//!   hop-by-hop fields, and the credentials unless `forward_credentials`);
//! - denied: the proxy's own error response (status, platform JSON body,
//!   `x-request-id`, the `WWW-Authenticate` challenge on a 401) as a
//!   `DeniedHttpResponse`, which Envoy sends to the client as it is.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;

use crate::decision::{forwarding, Allowed};
use crate::error::ApiError;
use crate::request::client_addr::Client;

/// gRPC status codes (google.rpc.Code) the answers carry. Envoy allows on
/// `OK` only; the others name the refusal for its logs and stats.
mod code {
    pub const OK: i32 = 0;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// One field to set, replacing every copy the request already has. Both the
/// deprecated `append: false` and `append_action` say so, so an Envoy that
/// reads either one overwrites.
#[allow(deprecated)]
fn overwrite(name: &str, value: &[u8]) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
            raw_value: Vec::new(),
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

fn options(headers: &HeaderMap) -> Vec<HeaderValueOption> {
    headers
        .iter()
        .map(|(k, v)| overwrite(k.as_str(), v.as_bytes()))
        .collect()
}

/// Allow: set what the proxy sets, remove what it strips. A name that is set
/// is not also listed for removal (Envoy removes after it sets, which would
/// undo the setting); setting it replaces every client-sent copy anyway.
pub fn ok(
    request: &HeaderMap,
    allowed: &Allowed,
    request_id: &http::HeaderValue,
    client: &Client,
    keep_credentials: bool,
) -> CheckResponse {
    let mut set = HeaderMap::new();
    forwarding::set_identity(&mut set, allowed, request_id, client);
    let mut stripped = request.clone();
    forwarding::strip_request(&mut stripped, keep_credentials);
    let headers_to_remove = request
        .keys()
        .filter(|k| !stripped.contains_key(*k) && !set.contains_key(*k))
        .map(|k| k.as_str().to_owned())
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code: code::OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: options(&set),
            headers_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: None,
    }
}

fn grpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 413 => code::INVALID_ARGUMENT,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::NOT_FOUND,
        429 => code::RESOURCE_EXHAUSTED,
        503 => code::UNAVAILABLE,
        s if s >= 500 => code::INTERNAL,
        _ => code::PERMISSION_DENIED,
    }
}

/// Deny: the response the proxy would have answered with.
pub async fn denied(error: ApiError, request_id: &http::HeaderValue) -> CheckResponse {
    let reason = error.parts().2;
    let resp = error.into_response(Some(request_id));
    let status = resp.status();
    let headers = options(resp.headers());
    // A `Full` body: one frame, already in memory, and infallible.
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_else(|never| match never {});
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc_code(status),
            message: reason.as_str().to_owned(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status.as_u16()),
            }),
            headers,
            body: body_text(body),
        })),
        dynamic_metadata: None,
    }
}

/// The body as the proto's `string`: rolegate's bodies are JSON, so UTF-8.
fn body_text(body: Bytes) -> String {
    String::from_utf8_lossy(&body).into_owned()
}
