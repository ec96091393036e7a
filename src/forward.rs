//! Forwarding an allowed request to the upstream: pooled keep-alive
//! connections, bodies streamed both ways, hop-by-hop headers removed in both
//! directions, and identity headers that only rolegate sets.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::credential::{API_KEY_HEADER, PLAYER_KEY_HEADER, TOKEN_HEADER};
use crate::error::ApiError;

pub const USER_ID_HEADER: &str = "x-rolegate-user-id";
pub const ORG_ID_HEADER: &str = "x-rolegate-org-id";
pub const ROLE_HEADER: &str = "x-rolegate-role";
pub const CREDENTIAL_HEADER: &str = "x-rolegate-credential";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

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
    "x-real-ip",
    "x-user-id",
    "x-user",
    "x-role",
    "x-org-id",
    "x-auth-request-user",
    "x-auth-request-email",
    REQUEST_ID_HEADER,
];

/// Who the upstream is told the caller is.
pub struct Identity<'a> {
    pub user_id: Option<&'a str>,
    pub org_id: Option<&'a str>,
    pub role: Option<&'a str>,
    pub credential: &'static str,
}

/// Remove hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(*n);
    }
}

/// Remove every client-sent identity claim: rolegate's own headers, forwarding
/// headers, and any name with an underscore (some servers read `X_User` as `X-User`).
pub fn strip_identity(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let s = k.as_str();
            s.starts_with("x-rolegate-") || s.contains('_') || IDENTITY.contains(&s)
        })
        .cloned()
        .collect();
    for n in doomed {
        headers.remove(n);
    }
}

pub fn strip_credentials(headers: &mut HeaderMap) {
    for n in [
        TOKEN_HEADER,
        API_KEY_HEADER,
        PLAYER_KEY_HEADER,
        "authorization",
    ] {
        headers.remove(n);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Set rolegate's identity headers (after [`strip_identity`]).
pub fn set_identity(
    headers: &mut HeaderMap,
    id: &Identity<'_>,
    request_id: &HeaderValue,
    client: IpAddr,
) {
    if let Some(u) = id.user_id {
        set(headers, USER_ID_HEADER, u);
    }
    if let Some(o) = id.org_id {
        set(headers, ORG_ID_HEADER, o);
    }
    if let Some(r) = id.role {
        set(headers, ROLE_HEADER, r);
    }
    headers.insert(CREDENTIAL_HEADER, HeaderValue::from_static(id.credential));
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
    set(headers, "x-forwarded-for", &client.to_string());
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, Incoming>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    timeout: Duration,
}

impl Upstream {
    pub fn new(base: &Uri, timeout: Duration) -> Result<Self, ApiError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        let authority = base
            .authority()
            .cloned()
            .ok_or_else(|| ApiError::Internal("upstream has no authority".to_owned()))?;
        Ok(Upstream {
            client,
            scheme: http::uri::Scheme::HTTP,
            authority,
            timeout,
        })
    }

    /// Send `req` to the upstream at `path_and_query` (already normalised).
    /// The caller has already rewritten the headers.
    pub async fn send(
        &self,
        mut req: Request<Incoming>,
        path_and_query: &str,
    ) -> Result<Response<Incoming>, ApiError> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| ApiError::Internal(format!("bad upstream uri: {e}")))?;
        *req.uri_mut() = uri;
        // Framing is hyper's job on the way out: it derives Content-Length or
        // chunked encoding from the body, so no client-sent framing header travels
        // (a request with both CL and TE was already decoded by TE).
        req.headers_mut().remove(header::CONTENT_LENGTH);
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = http::Version::HTTP_11;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| ApiError::UpstreamTimeout)?
            .map_err(|e| ApiError::UpstreamUnreachable(e.to_string()))?;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}
