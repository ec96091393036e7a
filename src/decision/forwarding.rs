//! What an allowed request and its response lose and gain on the way through:
//! hop-by-hop headers removed in both directions, client-sent identity claims
//! and credentials removed, and identity headers that only rolegate sets.
//! The connections themselves are in [`crate::proxy::upstream`].

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::Allowed;
use crate::authn::credential::{API_KEY_HEADER, PLAYER_KEY_HEADER, TOKEN_HEADER};
use crate::request::client_addr::Client;
use crate::request::{REQUEST_ID_HEADER, REQUEST_ID_NAME};

pub const USER_ID_HEADER: &str = "x-rolegate-user-id";
pub const ORG_ID_HEADER: &str = "x-rolegate-org-id";
pub const ROLE_HEADER: &str = "x-rolegate-role";
pub const CREDENTIAL_HEADER: &str = "x-rolegate-credential";

/// Hop-by-hop fields (RFC 9110 §7.6.1) plus the proxy ones that must not travel.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    // Connection-specific in HTTP/2 (RFC 9113 8.2.2); only meaningful with an
    // h2c upgrade, which rolegate does not pass on.
    "http2-settings",
];

/// Headers that carry identity or client-address claims. Rolegate deletes every
/// client-sent copy and sets its own, so the upstream can trust them.
const IDENTITY: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-original-uri",
    "x-original-method",
    "x-original-url",
    // URL, host and scheme rewrites frameworks honour (Symfony, Laminas,
    // IIS URL Rewrite, Spring's ForwardedHeaderFilter, Rack, Werkzeug).
    "x-rewrite-url",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-url-scheme",
    "front-end-https",
    "x-host",
    "x-http-host-override",
    // Client-address claims CDNs and load balancers set, which applications
    // read for rate limits and allow-lists.
    "true-client-ip",
    "cf-connecting-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-proxyuser-ip",
    "x-real-ip",
    "x-user-id",
    "x-user",
    "x-role",
    "x-org-id",
    "x-auth-request-user",
    "x-auth-request-email",
    REQUEST_ID_HEADER,
];

// Stripping runs on every forwarded request and response, so each function
// walks the (few) fields present once and compares names, rather than asking
// the map to look up each of the ~35 names it must not pass on: most requests
// carry none of them, and a `remove(&str)` per name parses and hashes it.

/// Remove every field whose name `doomed` picks, in one pass over the names.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| doomed(k.as_str()))
        .cloned()
        .collect();
    for n in names {
        headers.remove(&n);
    }
}

/// The fields the `Connection` header names (they are hop-by-hop too).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive` (on nearly every upstream response) is removed as
        // hop-by-hop anyway; building its name would allocate per response.
        .filter(|n| !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h)))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect()
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Client-sent identity claims: rolegate's own headers, forwarding headers,
/// and any name with an underscore (some servers read `X_User` as `X-User`).
fn is_identity(name: &str) -> bool {
    name.starts_with("x-rolegate-") || name.contains('_') || IDENTITY.contains(&name)
}

fn is_credential(name: &str) -> bool {
    matches!(
        name,
        TOKEN_HEADER | API_KEY_HEADER | PLAYER_KEY_HEADER | "authorization"
    )
}

/// Remove hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for n in connection_named(headers) {
        headers.remove(n);
    }
    remove_where(headers, is_hop_by_hop);
}

/// Everything a request must lose before it goes upstream: hop-by-hop fields,
/// client-sent identity claims, and (unless `keep_credentials`) credentials.
pub fn strip_request(headers: &mut HeaderMap, keep_credentials: bool) {
    for n in connection_named(headers) {
        headers.remove(n);
    }
    remove_where(headers, |n| {
        is_hop_by_hop(n) || is_identity(n) || (!keep_credentials && is_credential(n))
    });
}

// Names as `HeaderName` constants: inserting by `&'static str` would parse the
// name on every request.
const USER_ID_NAME: HeaderName = HeaderName::from_static(USER_ID_HEADER);
const ORG_ID_NAME: HeaderName = HeaderName::from_static(ORG_ID_HEADER);
const ROLE_NAME: HeaderName = HeaderName::from_static(ROLE_HEADER);
const CREDENTIAL_NAME: HeaderName = HeaderName::from_static(CREDENTIAL_HEADER);
const FORWARDED_FOR_NAME: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO_NAME: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST_NAME: HeaderName = HeaderName::from_static("x-forwarded-host");

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Set rolegate's identity headers (after [`strip_request`]): who the
/// upstream is told the caller is, which only an [`Allowed`] can say, and
/// where from: the client's address, and with its origin the scheme and host
/// it asked for (`X-Forwarded-Proto`, `X-Forwarded-Host`).
pub fn set_identity(
    headers: &mut HeaderMap,
    allowed: &Allowed,
    request_id: &HeaderValue,
    client: &Client,
) {
    let caller = allowed.caller();
    if let Some(u) = caller.user_id.as_deref() {
        set(headers, USER_ID_NAME, u);
    }
    if let Some(m) = caller.membership() {
        // Built once per organisation and role; a clone is a reference count.
        for (name, value) in [(ORG_ID_NAME, &m.org_value), (ROLE_NAME, &m.role_value)] {
            if let Some(v) = value {
                headers.insert(name, v.clone());
            }
        }
    }
    headers.insert(
        CREDENTIAL_NAME,
        HeaderValue::from_static(allowed.credential()),
    );
    headers.insert(REQUEST_ID_NAME, request_id.clone());
    if let Some(v) = ip_value(client.ip) {
        headers.insert(FORWARDED_FOR_NAME, v);
    }
    if let Some(origin) = &client.origin {
        headers.insert(FORWARDED_PROTO_NAME, origin.proto.clone());
        if let Some(host) = &origin.host {
            headers.insert(FORWARDED_HOST_NAME, host.clone());
        }
    }
}

/// The client address as a header value. IPv4 is written by hand: through
/// `Display` it cost a tenth of the proxy's own work on a forwarded request.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    out[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    out[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                out[n] = b'0' + octet % 10;
                n += 1;
            }
            HeaderValue::from_bytes(&out[..n]).ok()
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.100.9",
            "1.0.99.100",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip).unwrap().to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn fields_the_connection_header_names_are_removed_with_the_hop_by_hop_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, x-trace"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
