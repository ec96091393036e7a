//! The client address a decision sees. Forwarding headers (`X-Forwarded-For`,
//! `Forwarded`) are believed only when the connection comes from a configured
//! trusted proxy (`trusted_proxies`); otherwise anyone could claim any address.
//! From a trusted proxy, the client is the rightmost address that is not itself
//! a trusted proxy: entries to its left were written by the client and prove nothing.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

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
}
