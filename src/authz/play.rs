//! The `play` decision on the guarded playback prefix: the facts a verified
//! playback token grants (stream, client address, embedding domain) checked
//! against the request, then Cedar decides. The guarded prefix and `rolegate
//! test` both decide here.

use std::net::IpAddr;

use http::HeaderMap;

use crate::authn::credential::CredentialKind;
use crate::authn::playback_token::{parse_ip, Grant};
use crate::authz::entities::{self, PlaybackFacts, RequestFacts};
use crate::authz::{Outcome, PolicySnapshot};

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
