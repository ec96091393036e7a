//! The request head's own consistency, checked before anything is decided:
//! what would let a server behind rolegate read the request differently from
//! how rolegate decides it. Every front door applies it to the request it
//! describes (forward-auth to the original request's query too).

use http::HeaderMap;

use super::query::Query;
use crate::reason::Reason;

/// Why a request head is refused (all 400s; see `error::ApiError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("More than one Host field")]
    DuplicateHost,
    #[error("Host is not a host name with an optional port")]
    BadHost,
    #[error("HTTP/1.1 request without Host")]
    MissingHost,
    #[error("Method overrides are not accepted: send the method in the request line")]
    MethodOverride(&'static str),
    #[error("Host does not match the request target's authority")]
    HostAuthorityMismatch,
}

impl HeadError {
    pub fn reason(&self) -> Reason {
        match self {
            HeadError::DuplicateHost => Reason::DuplicateHost,
            HeadError::BadHost => Reason::BadHost,
            HeadError::MissingHost => Reason::MissingHost,
            HeadError::MethodOverride(_) => Reason::MethodOverride,
            HeadError::HostAuthorityMismatch => Reason::HostAuthorityMismatch,
        }
    }

    /// The field or parameter at fault.
    pub fn parameter(&self) -> &'static str {
        match self {
            HeadError::DuplicateHost
            | HeadError::BadHost
            | HeadError::MissingHost
            | HeadError::HostAuthorityMismatch => "host",
            HeadError::MethodOverride(name) => name,
        }
    }
}

/// A declared body above `max_body_bytes` (a 413; see `error::ApiError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Request body too large")]
pub struct BodyTooLarge;

/// Refuse a declared body above `max` before reading any of it: the proxy
/// before forwarding, ext_authz before Envoy sends the body on. A length
/// that is not a number is refused as too large (the parser has already
/// refused it where rolegate reads the request itself).
pub fn check_declared_length(headers: &HeaderMap, max: u64) -> Result<(), BodyTooLarge> {
    if let Some(len) = headers.get(http::header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        if len > max {
            return Err(BodyTooLarge);
        }
    }
    Ok(())
}

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
) -> Result<(), HeadError> {
    check_host(version, headers)?;
    check_method_override(headers, query)
}

/// The `Host` rules of RFC 9112 3.2.
pub fn check_host(version: http::Version, headers: &HeaderMap) -> Result<(), HeadError> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(HeadError::DuplicateHost),
        (Some(host), None) => {
            if !is_plain_host(host.as_bytes()) {
                return Err(HeadError::BadHost);
            }
        }
        (None, _) if version == http::Version::HTTP_11 => return Err(HeadError::MissingHost),
        (None, _) => {}
    }
    Ok(())
}

/// Whether a `Host` value is `host[:port]` (RFC 9110 7.2): a non-empty run of
/// the characters a reg-name, an IP literal and a port may hold, and no
/// userinfo (`@`), path, query or fragment. A byte scan: this runs on every
/// request, and parsing into `http::uri::Authority` would copy the value.
fn is_plain_host(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                )
        })
}

/// The target's authority: an HTTP/2 request's `:authority` (hyper puts it
/// in the URI) or an HTTP/1.1 absolute-form target's `http://authority/...`
/// must be a plain `host[:port]` (no userinfo). In HTTP/2, when a `host`
/// field is also present the two must name the same host (ASCII case
/// aside): RFC 9113 8.3.1 lets a server refuse a request where they differ,
/// and refusing is the closed choice, since an upstream or a log reading the
/// other one would see a different request from the one decided here. In
/// HTTP/1.1 the absolute form's authority wins and `Host` is ignored
/// (RFC 9112 3.2.2); either way the upstream gets its own `Host`.
pub fn check_authority(
    version: http::Version,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<(), HeadError> {
    let Some(authority) = uri.authority() else {
        return Ok(());
    };
    if !is_plain_host(authority.as_str().as_bytes()) {
        return Err(HeadError::BadHost);
    }
    match headers.get(http::header::HOST) {
        Some(host)
            if version == http::Version::HTTP_2
                && !host
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(HeadError::HostAuthorityMismatch)
        }
        _ => Ok(()),
    }
}

/// No method override, in a field or in the (decoded) query.
pub fn check_method_override(headers: &HeaderMap, query: Option<&str>) -> Result<(), HeadError> {
    if let Some(field) = METHOD_OVERRIDE_FIELDS
        .iter()
        .find(|f| headers.contains_key(**f))
    {
        return Err(HeadError::MethodOverride(field));
    }
    if Query::new(query).names_any(METHOD_OVERRIDE_PARAMS) {
        return Err(HeadError::MethodOverride("_method"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_plain_host;

    #[test]
    fn a_host_is_a_name_or_address_with_an_optional_port() {
        for ok in [
            "x",
            "api.example.com",
            "127.0.0.1:8080",
            "[::1]:9090",
            "xn--bcher-kva.example",
        ] {
            assert!(is_plain_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a b", "a@b", "a/b", "a?b", "a#b", "a\tb", "a\"b"] {
            assert!(!is_plain_host(bad.as_bytes()), "{bad}");
        }
    }
}
