//! The request head's own consistency, checked before anything is decided:
//! what would let a server behind rolegate read the request differently from
//! how rolegate decides it. Every front door applies it to the request it
//! describes (forward-auth to the original request's query too).

use http::HeaderMap;

use super::query::Query;
use crate::error::ApiError;
use crate::reason::Reason;

/// Fields and parameters through which frameworks let a request claim
/// another method than its request line's (Rails, Laravel, Symfony, Express's
/// method-override, ASP.NET, Google's APIs).
const METHOD_OVERRIDE_FIELDS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
const METHOD_OVERRIDE_PARAMS: &[&str] = &[
    "_method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Refuse what would let the upstream read the request differently from how
/// it is decided here:
/// - more than one `Host`, a `Host` that is not a plain `host[:port]`, or an
///   HTTP/1.1 request without one (RFC 9112 3.2 requires a 400);
/// - a method override in a header or the query: rolegate decides the method
///   of the request line, so a request that asks to be read as another is
///   refused rather than stripped (stripping would silently change what the
///   client asked for).
///
/// Framing (`Content-Length`/`Transfer-Encoding`), field syntax and the path
/// are checked by the HTTP parser and `request::path`.
pub fn check(
    version: http::Version,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), ApiError> {
    check_host(version, headers)?;
    check_method_override(headers, query)
}

/// The `Host` rules of RFC 9112 3.2.
pub fn check_host(version: http::Version, headers: &HeaderMap) -> Result<(), ApiError> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_param(
                Reason::DuplicateHost,
                "host",
                "More than one Host field",
            ))
        }
        (Some(host), None) => {
            let plain = host
                .to_str()
                .ok()
                .filter(|h| !h.contains('@'))
                .and_then(|h| h.parse::<http::uri::Authority>().ok())
                .is_some_and(|a| a.as_str().len() == host.len());
            if !plain {
                return Err(ApiError::bad_param(
                    Reason::BadHost,
                    "host",
                    "Host is not a host name with an optional port",
                ));
            }
        }
        (None, _) if version == http::Version::HTTP_11 => {
            return Err(ApiError::bad_param(
                Reason::MissingHost,
                "host",
                "HTTP/1.1 request without Host",
            ))
        }
        (None, _) => {}
    }
    Ok(())
}

/// No method override, in a field or in the (decoded) query.
pub fn check_method_override(headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    if let Some(field) = METHOD_OVERRIDE_FIELDS
        .iter()
        .find(|f| headers.contains_key(**f))
    {
        return Err(ApiError::bad_param(
            Reason::MethodOverride,
            field,
            "Method overrides are not accepted: send the method in the request line",
        ));
    }
    if Query::new(query).names_any(METHOD_OVERRIDE_PARAMS) {
        return Err(ApiError::bad_param(
            Reason::MethodOverride,
            "_method",
            "Method overrides are not accepted: send the method in the request line",
        ));
    }
    Ok(())
}
