//! What Envoy says about the request it holds, read into the terms the proxy
//! reads a request in: method, path and query, header fields, the peer's
//! address and the HTTP version.
//!
//! Two kinds of failure, kept apart:
//! - the `CheckRequest` lacks what any Envoy sends (no `attributes.request.http`,
//!   no method or path, no source address): a misconfigured or foreign caller,
//!   answered with a gRPC error ([`AttributeError`]) that Envoy, failing
//!   closed, turns into a refusal;
//! - the client's request is malformed (a header field that would not parse):
//!   answered like the proxy answers it, a 400 with the platform's body.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};

use crate::error::ApiError;
use crate::reason::Reason;

/// A `CheckRequest` that does not describe an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("CheckRequest lacks `{0}`")]
    Missing(&'static str),
    #[error("`attributes.source.address` is not an IP socket address")]
    NotIpSource,
}

/// The request Envoy asks about, as the proxy would read it off the wire.
pub struct Described<'r> {
    pub method: &'r str,
    /// The request target as the client sent it: path and query, undecoded.
    pub target: &'r str,
    pub headers: HeaderMap,
    /// The downstream peer of Envoy (`attributes.source.address`).
    pub peer: IpAddr,
    pub version: Version,
    /// The URL scheme Envoy gives the request (`attributes.request.http.scheme`).
    pub scheme: &'r str,
}

fn http_request(req: &CheckRequest) -> Result<&HttpRequest, AttributeError> {
    req.attributes
        .as_ref()
        .ok_or(AttributeError::Missing("attributes"))?
        .request
        .as_ref()
        .ok_or(AttributeError::Missing("attributes.request"))?
        .http
        .as_ref()
        .ok_or(AttributeError::Missing("attributes.request.http"))
}

/// Envoy's id for the request (`attributes.request.http.id`, the stream's
/// `x-request-id`), when it is one rolegate can log and hand on as is: 1 to 64
/// characters of letters, digits, `-`, `_` and `.` (Envoy's are UUIDs).
/// Answering with Envoy's id keeps Envoy's access log, rolegate's log and the
/// upstream's view of one request under one id; anything else gets rolegate's
/// own id, as the proxy door always does.
pub fn envoy_request_id(req: &CheckRequest) -> Option<http::HeaderValue> {
    let id = &http_request(req).ok()?.id;
    let fits = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !fits {
        return None;
    }
    http::HeaderValue::from_str(id).ok()
}

fn source_ip(req: &CheckRequest) -> Result<IpAddr, AttributeError> {
    let address = req
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .ok_or(AttributeError::Missing("attributes.source.address"))?;
    match address {
        Address::SocketAddress(s) => s.address.parse().map_err(|_| AttributeError::NotIpSource),
        _ => Err(AttributeError::NotIpSource),
    }
}

/// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3` as Envoy names them. Anything
/// else is read as HTTP/1.1, whose rules are the strictest (a `Host` is required).
fn version(protocol: &str) -> Version {
    match protocol {
        "HTTP/1.0" => Version::HTTP_10,
        "HTTP/2" => Version::HTTP_2,
        "HTTP/3" => Version::HTTP_3,
        _ => Version::HTTP_11,
    }
}

fn bad_field(name: &str) -> ApiError {
    ApiError::bad_param(
        Reason::BadHeaderField,
        "header",
        format!("`{name}` is not a valid header field"),
    )
}

fn push(headers: &mut HeaderMap, name: &str, value: &[u8]) -> Result<(), ApiError> {
    // Pseudo-header fields (`:authority`, `:path`, …) are the request line,
    // read from their own attributes.
    if name.starts_with(':') {
        return Ok(());
    }
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad_field(name))?;
    let v = HeaderValue::from_bytes(value).map_err(|_| bad_field(name))?;
    headers.append(n, v);
    Ok(())
}

/// The header fields, each occurrence on its own: from `header_map` when
/// Envoy sends it (`encode_raw_headers: true`, which keeps repeated fields
/// apart, so a duplicate credential is seen as the proxy sees it), else from
/// `headers`, where Envoy has already joined repeated fields with commas.
fn headers(http: &HttpRequest) -> Result<HeaderMap, ApiError> {
    let mut out = HeaderMap::new();
    match http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
        Some(raw) => {
            for h in &raw.headers {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value
                };
                push(&mut out, &h.key, value)?;
            }
        }
        None => {
            for (k, v) in &http.headers {
                push(&mut out, k, v.as_bytes())?;
            }
        }
    }
    // HTTP/2 and HTTP/3 carry the host as `:authority`, which Envoy gives as
    // `host`; the proxy's `Host` rules then apply to it as to a `Host` field.
    if !out.contains_key(http::header::HOST) && !http.host.is_empty() {
        let v = HeaderValue::from_str(&http.host).map_err(|_| bad_field("host"))?;
        out.insert(http::header::HOST, v);
    }
    Ok(out)
}

/// Read a `CheckRequest`. The outer error is the caller's fault (a gRPC
/// error); the inner one the client's (a denied HTTP response).
pub fn read(req: &CheckRequest) -> Result<Result<Described<'_>, ApiError>, AttributeError> {
    let http = http_request(req)?;
    if http.method.is_empty() {
        return Err(AttributeError::Missing("attributes.request.http.method"));
    }
    if http.path.is_empty() {
        return Err(AttributeError::Missing("attributes.request.http.path"));
    }
    let peer = source_ip(req)?;
    if Method::from_bytes(http.method.as_bytes()).is_err() {
        return Ok(Err(ApiError::bad_param(
            Reason::BadHeaderField,
            "method",
            "Invalid request method",
        )));
    }
    Ok(headers(http).map(|headers| Described {
        method: &http.method,
        target: &http.path,
        headers,
        peer,
        version: version(&http.protocol),
        scheme: &http.scheme,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{
        Address as EnvoyAddress, HeaderMap as EnvoyHeaderMap, HeaderValue as EnvoyHeaderValue,
        SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, Request};
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

    fn check(http: HttpRequest, source: Option<&str>) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: source.map(|ip| Peer {
                    address: Some(EnvoyAddress {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: ip.to_owned(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(http),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn get(path: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".to_owned(),
            path: path.to_owned(),
            host: "api.test".to_owned(),
            protocol: "HTTP/1.1".to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn repeated_fields_stay_apart_in_the_raw_header_map() {
        let mut http = get("/stream");
        http.header_map = Some(EnvoyHeaderMap {
            headers: ["one", "two"]
                .iter()
                .map(|v| EnvoyHeaderValue {
                    key: "x-bintu-token".to_owned(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        });
        let req = check(http, Some("192.0.2.7"));
        let d = read(&req).unwrap().unwrap();
        assert_eq!(d.headers.get_all("x-bintu-token").iter().count(), 2);
        assert_eq!(d.headers["host"], "api.test");
        assert_eq!(d.peer, "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn what_every_envoy_sends_is_required() {
        let req = check(get("/stream"), None);
        assert_eq!(
            read(&req).err(),
            Some(AttributeError::Missing("attributes.source.address"))
        );
        let req = check(get(""), Some("192.0.2.7"));
        assert!(read(&req).is_err());
        let req = check(get("/"), Some("not-an-ip"));
        assert_eq!(read(&req).err(), Some(AttributeError::NotIpSource));
        assert_eq!(
            read(&CheckRequest::default()).err(),
            Some(AttributeError::Missing("attributes"))
        );
    }

    #[test]
    fn pseudo_headers_are_not_fields_and_bad_fields_are_refused() {
        let mut http = get("/stream");
        http.headers.insert(":path".to_owned(), "/admin".to_owned());
        http.headers.insert("x-ok".to_owned(), "1".to_owned());
        let req = check(http, Some("192.0.2.7"));
        let d = read(&req).unwrap().unwrap();
        assert!(d.headers.keys().all(|k| !k.as_str().starts_with(':')));
        let mut http = get("/stream");
        http.headers.insert("x-bad".to_owned(), "a\nb".to_owned());
        let req = check(http, Some("192.0.2.7"));
        assert!(read(&req).unwrap().is_err());
    }
}
