//! The client address a decision sees. Forwarding headers (`X-Forwarded-For`,
//! `Forwarded`) are believed only when the connection comes from a configured
//! trusted proxy (`trusted_proxies`); otherwise anyone could claim any address.
//! From a trusted proxy, the client is the rightmost address that is not itself
//! a trusted proxy: entries to its left were written by the client and prove nothing.
//!
//! The same rule gives the scheme and host the client asked for ([`origin`]),
//! which the upstream is told in `X-Forwarded-Proto` and `X-Forwarded-Host`.

use std::net::IpAddr;

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Uri};
use ipnet::IpNet;

/// The client as the upstream is told of it: its address and, where rolegate
/// forwards the request itself (proxy, WebSocket) or answers for a proxy that
/// forwards it as rolegate says (ext_authz), how it reached the front.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    pub origin: Option<Origin>,
}

impl Client {
    /// The address alone: forward-auth answers, whose proxy sets its own
    /// forwarding headers on the request it forwards.
    pub fn address(ip: IpAddr) -> Self {
        Client { ip, origin: None }
    }
}

/// The scheme and the host the client asked for: what an upstream needs to
/// build its own absolute URLs (redirects, playlist entries) behind proxies
/// that terminate TLS and rewrite `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub proto: HeaderValue,
    /// `host[:port]`; `None` when the request named none.
    pub host: Option<HeaderValue>,
}

const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// `http` or `https` as a header value; anything else is `None`.
pub fn scheme_value(scheme: &str) -> Option<HeaderValue> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(HTTPS)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(HTTP)
    } else {
        None
    }
}

/// A host as a request may name it: an authority without user information.
fn host_value(host: &str) -> Option<HeaderValue> {
    let host = host.trim();
    if host.is_empty() || host.contains('@') {
        return None;
    }
    host.parse::<Authority>().ok()?;
    HeaderValue::from_str(host).ok()
}

/// The last comma-separated entry of the last `name` field: the one the
/// nearest proxy wrote (an appended list's earlier entries came with the
/// request and prove nothing, as for `X-Forwarded-For`).
fn last_entry<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let last = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    last.rsplit(',').next().map(str::trim)
}

/// A parameter (`proto`, `host`) of the last element of `Forwarded` (RFC 7239).
fn forwarded_param<'h>(headers: &'h HeaderMap, param: &str) -> Option<&'h str> {
    let element = last_entry(headers, "forwarded")?;
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.eq_ignore_ascii_case(param).then(|| v.trim_matches('"'))
    })
}

/// The scheme and host of a request that reached rolegate's own listener
/// (`over_tls`: that listener's scheme). From a trusted proxy, what it says
/// in `X-Forwarded-Proto`/`X-Forwarded-Host` (else in `Forwarded`), its
/// last entry, when well-formed; anything else falls back to rolegate's own
/// view: its listener's scheme and the target's authority or `Host`.
pub fn origin(from_trusted: bool, headers: &HeaderMap, uri: &Uri, over_tls: bool) -> Origin {
    let said = |x_name: &str, param: &str| {
        if !from_trusted {
            return None;
        }
        last_entry(headers, x_name).or_else(|| forwarded_param(headers, param))
    };
    let proto = said("x-forwarded-proto", "proto")
        .and_then(scheme_value)
        .unwrap_or(if over_tls { HTTPS } else { HTTP });
    let host = said("x-forwarded-host", "host")
        .and_then(host_value)
        .or_else(|| uri.authority().and_then(|a| host_value(a.as_str())))
        .or_else(|| headers.get(HOST).cloned());
    Origin { proto, host }
}

pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&peer))
}

/// `for=` values of a `Forwarded` header (RFC 7239), in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            if !k.eq_ignore_ascii_case("for") {
                return None;
            }
            let v = v.trim_matches('"');
            // `[2001:db8::1]:4711`, `192.0.2.1:80` or a bare address.
            let host = match v.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(""),
                None => v
                    .rsplit_once(':')
                    .filter(|(h, _)| !h.contains(':'))
                    .map(|(h, _)| h)
                    .unwrap_or(v),
            };
            host.parse().ok()
        })
        .collect()
}

fn x_forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// The client address for policy context and the upstream's `x-forwarded-for`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut chain = x_forwarded_for(headers);
    if chain.is_empty() {
        chain = forwarded_for(headers);
    }
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip, trusted))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(name: &'static str, v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(name, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn forwarding_headers_only_count_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let xff = h("x-forwarded-for", "1.1.1.1, 203.0.113.5, 10.0.0.7");
        assert_eq!(client_ip(stranger, &xff, &trusted), stranger);
        // The rightmost untrusted entry; 1.1.1.1 was written by the client.
        assert_eq!(
            client_ip(proxy, &xff, &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        let fwd = h(
            "forwarded",
            "for=\"[2001:db8::1]:4711\";proto=http, for=10.0.0.8",
        );
        assert_eq!(
            client_ip(proxy, &fwd, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    fn origin_of(
        trusted: bool,
        pairs: &[(&'static str, &str)],
        uri: &str,
        tls: bool,
    ) -> (String, Option<String>) {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        let o = origin(trusted, &m, &uri.parse().unwrap(), tls);
        let text = |v: &HeaderValue| v.to_str().unwrap().to_owned();
        (text(&o.proto), o.host.as_ref().map(text))
    }

    #[test]
    fn the_origin_is_a_trusted_proxys_last_word_or_rolegates_own_view() {
        let own = |p: &str, h: &str| (p.to_owned(), Some(h.to_owned()));
        let claims = [
            ("host", "inner:8080"),
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "forged.example, streams.example"),
        ];
        // Untrusted: the listener's scheme and the request's own host.
        assert_eq!(
            origin_of(false, &claims, "/s", false),
            own("http", "inner:8080")
        );
        assert_eq!(
            origin_of(false, &claims, "/s", true),
            own("https", "inner:8080")
        );
        // Trusted: the last entry, the one the proxy wrote.
        assert_eq!(
            origin_of(true, &claims, "/s", false),
            own("https", "streams.example")
        );
        // Repeated fields: the last field's last entry.
        let repeated = [
            ("host", "inner"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "HTTP"),
        ];
        assert_eq!(origin_of(true, &repeated, "/s", true), own("http", "inner"));
        // `Forwarded` when there is no X-Forwarded-*; quoted values.
        let rfc = [
            ("host", "inner"),
            (
                "forwarded",
                "for=a;proto=http, for=b;Proto=HTTPS;host=\"s.example:443\"",
            ),
        ];
        assert_eq!(
            origin_of(true, &rfc, "/s", false),
            own("https", "s.example:443")
        );
        // Malformed claims fall back to the own view, each on its own.
        for (proto, host) in [
            ("ftp", "u@evil"),
            ("", "a/b"),
            ("htps", " "),
            ("h ttps", "[::1"),
        ] {
            let bad = [
                ("host", "inner"),
                ("x-forwarded-proto", proto),
                ("x-forwarded-host", host),
            ];
            assert_eq!(
                origin_of(true, &bad, "/s", false),
                own("http", "inner"),
                "{proto:?} {host:?}"
            );
        }
        // A trusted "https " is trimmed and counts.
        let padded = [("host", "inner"), ("x-forwarded-proto", " https ")];
        assert_eq!(origin_of(true, &padded, "/s", false), own("https", "inner"));
        // An absolute-form target's (or HTTP/2's) authority is the request's host.
        assert_eq!(
            origin_of(
                false,
                &[("host", "inner")],
                "http://api.example:81/s",
                false
            ),
            own("http", "api.example:81")
        );
        // No host at all.
        assert_eq!(
            origin_of(false, &[], "/s", false),
            ("http".to_owned(), None)
        );
    }
}
