//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT): the stream's opening
//! request is checked here, then decided as a GET of its `:path` and relayed
//! by the same code as an HTTP/1.1 upgrade ([`super::websocket`]). Only the
//! client's leg differs: the answer is 200 on the stream (not 101), and the
//! relay runs over the upgraded HTTP/2 stream. The upstream leg is an
//! HTTP/1.1 upgrade as for any WebSocket.
//!
//! A `CONNECT` without `:protocol` is not a WebSocket and is refused as
//! before; one with another `:protocol` is a 400 (fail closed: rolegate
//! relays no tunnel it cannot read).

use http::header::{self, HeaderMap};
use http::{Method, Request, Version};
use hyper::ext::Protocol;

use super::websocket::Handshake;
use crate::error::ApiError;
use crate::reason::Reason;

/// Whether a request is an extended CONNECT: an HTTP/2 `CONNECT` carrying a
/// `:protocol` (hyper only lets one through when the listener enabled
/// SETTINGS_ENABLE_CONNECT_PROTOCOL).
pub fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT && req.extensions().get::<Protocol>().is_some()
}

/// Check an extended CONNECT that asks for a WebSocket (RFC 8441 §4–5):
/// HTTP/2, `:protocol = websocket`, `:scheme` and an origin-form `:path`,
/// one `sec-websocket-version: 13`, and none of HTTP/1.1's handshake fields
/// (`sec-websocket-key`, `upgrade`, `connection`) nor a body. Anything else
/// is a 400 before any decision.
pub fn check_handshake<B>(req: &Request<B>) -> Result<Handshake, ApiError> {
    let protocol = req.extensions().get::<Protocol>().map(Protocol::as_str);
    if req.method() != Method::CONNECT || req.version() != Version::HTTP_2 {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "An extended CONNECT must be HTTP/2",
        ));
    }
    if !protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "The only :protocol offered over extended CONNECT is websocket",
        ));
    }
    let uri = req.uri();
    if uri.scheme().is_none() || !uri.path().starts_with('/') {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "An extended CONNECT needs :scheme and :path",
        ));
    }
    let h = req.headers();
    if has_any(
        h,
        &[
            header::SEC_WEBSOCKET_KEY,
            header::UPGRADE,
            header::CONNECTION,
        ],
    ) {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "An extended CONNECT carries no Sec-WebSocket-Key, Upgrade or Connection",
        ));
    }
    let has_body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(ApiError::bad_request(
            Reason::WebSocketHandshake,
            "An extended CONNECT has no body",
        ));
    }
    let mut versions = h.get_all(header::SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        _ => {
            return Err(ApiError::bad_request(
                Reason::WebSocketVersion,
                "Sec-WebSocket-Version must be 13",
            ))
        }
    }
    Ok(Handshake::over_h2())
}

fn has_any(h: &HeaderMap, names: &[header::HeaderName]) -> bool {
    names.iter().any(|n| h.contains_key(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(uri: &str, protocol: Option<&'static str>, fields: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri(uri);
        for (k, v) in fields {
            b = b.header(*k, *v);
        }
        let mut req = b.body(()).unwrap_or_default();
        if let Some(p) = protocol {
            req.extensions_mut().insert(Protocol::from_static(p));
        }
        req
    }

    fn reason(req: &Request<()>) -> Option<Reason> {
        match check_handshake(req) {
            Ok(_) => None,
            Err(ApiError::BadRequest { reason, .. }) => Some(reason),
            Err(e) => panic!("not a 400: {e}"),
        }
    }

    const V13: (&str, &str) = ("sec-websocket-version", "13");

    #[test]
    fn only_a_complete_websocket_connect_passes() {
        let ok = connect("http://h/s?x=1", Some("websocket"), &[V13]);
        assert!(is_extended_connect(&ok));
        assert_eq!(reason(&ok), None);
        // No :protocol: not an extended CONNECT at all.
        assert!(!is_extended_connect(&connect("h:443", None, &[V13])));

        let handshake = Some(Reason::WebSocketHandshake);
        assert_eq!(
            reason(&connect("http://h/s", Some("foo"), &[V13])),
            handshake
        );
        assert_eq!(reason(&connect("/s", Some("websocket"), &[V13])), handshake);
        for extra in [
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ] {
            let req = connect("http://h/s", Some("websocket"), &[V13, extra]);
            assert_eq!(reason(&req), handshake, "{extra:?}");
        }
        let version = Some(Reason::WebSocketVersion);
        assert_eq!(
            reason(&connect("http://h/s", Some("websocket"), &[])),
            version
        );
        assert_eq!(
            reason(&connect(
                "http://h/s",
                Some("websocket"),
                &[("sec-websocket-version", "8")]
            )),
            version
        );
        assert_eq!(
            reason(&connect("http://h/s", Some("websocket"), &[V13, V13])),
            version
        );

        let mut h1 = connect("http://h/s", Some("websocket"), &[V13]);
        *h1.version_mut() = Version::HTTP_11;
        assert_eq!(reason(&h1), handshake);
    }
}
